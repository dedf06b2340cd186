// The dataplane's input: what one node's kernel should hold. The agent builds
// it from the controller's config; the dataplane knows nothing of gRPC or etcd.
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
  /** Overlay MTU; 0 = uplink MTU - 50. */
  mtu: number;
  /** VXLAN UDP port. */
  port: number;
  natOutgoing: boolean;
  isolated: boolean;
  /** Write the CNI conflist for this network. */
  isDefault: boolean;
  /** This node's subnet, e.g. "10.244.3.0/24". */
  subnet: string;
  /** MAC for weft.<vni> (persisted by the agent so peers' entries survive a reboot); absent: keep the kernel's. */
  vtepMac?: string;
  /** Remote nodes (never this node). */
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
