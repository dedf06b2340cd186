// What the agent needs from pkg/dataplane. The agent depends on this narrow
// surface rather than the class, so the apply loop can be unit-tested with a
// recording fake and the agent never reaches past the dataplane's public face.
import type { Logger } from "../log/index.js";

export interface PeerSpec {
  nodeName: string;
  underlayIp: string;
  vtepMac: string;
  subnet: string;
}

export interface NetworkDesired {
  name: string;
  vni: number;
  cidr: string;
  mode: "routed" | "switched";
  mtu: number;
  port: number;
  natOutgoing: boolean;
  isolated: boolean;
  isDefault: boolean;
  subnet: string;
  /** Persisted MAC for the VXLAN device, so peers' entries stay valid across reboots (flannel#1795). */
  vtepMac?: string;
  peers: PeerSpec[];
}

export interface NodeDesired {
  uplink: string;
  underlayIp: string;
  networks: NetworkDesired[];
}

export interface ApplyReport {
  changes: number;
  byKind: Record<string, number>;
  durationMs: number;
}

export type ApplyReason = "update" | "resync";

export interface DataplanePort {
  apply(desired: NodeDesired, reason?: ApplyReason): Promise<ApplyReport>;
  /** Network name -> MAC of its VXLAN device, for devices that exist. */
  vtepMacs(): Promise<Record<string, string>>;
  cleanup(): Promise<void>;
}

export type { Logger };
