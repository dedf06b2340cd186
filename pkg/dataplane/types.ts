// The one contract between the agent and the dataplane. The dataplane keeps
// the desired state itself, in Felix's DeltaTracker shape: the agent tells it
// what changed (a network's spec, one peer), and each flush writes only the
// kernel commands for what changed since the last one. The dataplane knows
// nothing of gRPC or etcd.

export interface PeerSpec {
  nodeName: string;
  underlayIp: string;
  vtepMac: string;
  subnet: string;
}

/**
 * One pod interface on another node of a switched network (endpoints of this
 * node are never handed over: the bridge learns them on their veth ports).
 */
export interface EndpointSpec {
  /** endpointKey: `<node>/<containerId>/<ifName>`. */
  key: string;
  nodeName: string;
  /** IPv4 addresses inside the network's CIDR, without prefix length. */
  ips: string[];
  mac: string;
}

/** A network as the node programs it, without its peers (they arrive one by one). */
export interface NetworkSpec {
  name: string;
  vni: number;
  cidr: string;
  mode: "routed" | "switched";
  /** Overlay MTU; 0 = uplink MTU - VXLAN overhead (see effectiveMtu). */
  mtu: number;
  /** VXLAN UDP port. */
  port: number;
  natOutgoing: boolean;
  isolated: boolean;
  /** switched only: flood broadcast/multicast to every peer (00:00:00:00:00:00 FDB entries). */
  flood: boolean;
  /** Agents serve DNS on the gateway: the conflist tells the weft plugin to put it in the pod's CNI result (dns.nameservers/search). */
  dns?: boolean;
  /** The node's default network: its conflist is 10-weft.conflist (the others get weft-<network>.conflist). */
  isDefault: boolean;
  /** This node's subnet, e.g. "10.244.3.0/24". */
  subnet: string;
  /** MAC for weft.<vni>, chosen and persisted by the agent before the device exists (flannel#1795). */
  vtepMac?: string;
}

/** A whole network with its peers: the one-shot form (tests, benchmarks, `Dataplane.apply`). */
export interface NetworkDesired extends NetworkSpec {
  /** Remote nodes (never this node). */
  peers: PeerSpec[];
  /** switched only: remote endpoints; absent leaves the endpoints as they are. */
  endpoints?: EndpointSpec[];
}

export interface NodeDesired {
  uplink: string;
  underlayIp: string;
  networks: NetworkDesired[];
}

/** The node-wide part: where VXLAN traffic leaves. */
export interface NodeSpec {
  uplink: string;
  underlayIp: string;
}

export interface ApplyReport {
  changes: number;
  byKind: Record<string, number>;
  durationMs: number;
  /** Whether this flush read the kernel back and diffed everything (start, resync timer, after a failure). */
  full: boolean;
}

/** "update": write what changed; "resync": read the kernel back and repair everything. */
export type ApplyReason = "update" | "resync";

/** Why a peer is not programmed (invalid, or colliding with another peer), or undefined when it is. */
export type PeerProblem = string | undefined;

/** Why an endpoint is not programmed (malformed, outside the network), or undefined when it is (or waits for its node to become a peer). */
export type EndpointProblem = string | undefined;

/** What the agent drives. Setters are synchronous and cheap; `flush` does the kernel work. */
export interface DataplanePort {
  /** Replaces the node and network specs; peers of networks that are gone are forgotten. */
  setNetworks(node: NodeSpec, networks: NetworkSpec[]): void;
  /** Adds or replaces one peer of a network known to setNetworks; returns why it cannot be programmed, if so. */
  setPeer(network: string, peer: PeerSpec): PeerProblem;
  removePeer(network: string, nodeName: string): void;
  /** Forgets every peer of `network` (a snapshot replaces them). */
  clearPeers(network: string): void;
  /**
   * Adds or replaces one remote endpoint of a switched network (ignored for a
   * routed one); it is programmed once its node is a peer. Returns why it
   * cannot be programmed, if so.
   */
  setEndpoint(network: string, endpoint: EndpointSpec): EndpointProblem;
  removeEndpoint(network: string, key: string): void;
  /** Forgets every endpoint of `network`. */
  clearEndpoints(network: string): void;
  /** True when something is waiting to be written. */
  readonly dirty: boolean;
  /** Writes the pending changes (or, for a resync or after a failure, reads the kernel and repairs everything). */
  flush(reason?: ApplyReason): Promise<ApplyReport>;
  /** Removes every kernel object and file Weft created on this node. */
  cleanup(): Promise<void>;
  /** Peers programmed per network (metrics). */
  peerCounts(): Record<string, number>;
  /** Releases long-lived helper processes (the kernel state stays as it is); optional. */
  close?(): void;
  /** Starts one-off start-up work (e.g. iptables backend detection) in the background; optional. */
  prepare?(): void;
  /** Seconds a kernel command has been running, 0 when none is (the watchdog). */
  stuckSeconds(): number;
}
