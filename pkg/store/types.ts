// The records Weft keeps in etcd (see ARCHITECTURE.md, "Data model").

export type NetworkMode = "routed" | "switched";

/** A network as declared by the operator, with defaults applied (see validateNetworkSpec). */
export interface NetworkSpec {
  name: string;
  /** IPv4 pool, e.g. "10.244.0.0/16". Immutable. */
  cidr: string;
  /** VXLAN network identifier, 1..16777215, unique across networks. Immutable. */
  vni: number;
  /** Prefix length of each node's subnet, longer than the pool's. Immutable. */
  nodePrefixLength: number;
  mode: NetworkMode;
  /** Overlay MTU; 0 means the uplink MTU - 50. */
  mtu: number;
  /** VXLAN UDP port. */
  port: number;
  natOutgoing: boolean;
  isolated: boolean;
  /** Labels a node must carry to be a member; empty: every node. */
  nodeSelector: Record<string, string>;
  /** The network whose CNI conflist agents write as 10-weft.conflist. */
  default: boolean;
  /** switched only: flood broadcast/multicast to every peer. Off: only known endpoints are reachable. */
  flood: boolean;
  /** Agents serve DNS for the network's endpoints on their gateway address. */
  dns: boolean;
}

/** nodes/<name>: what a node's agent registered. */
export interface NodeRecord {
  name: string;
  underlayIP: string;
  labels: Record<string, string>;
  agentVersion: string;
  uplinkMtu: number;
  /** VTEP MAC per network name, once the agent created the device. */
  vtepMacs: Record<string, string>;
  /** Subnet per network name this node holds (mirrors its lease keys). */
  subnets: Record<string, string>;
  /** ISO time of the last Join. */
  lastSeen: string;
  /** ISO time the agent first acknowledged a config: its networking is up (Kubernetes: NetworkUnavailable=False). */
  appliedAt?: string;
}

/** leases/<network>/<subnet>: one node's subnet in one network. */
export interface LeaseRecord {
  network: string;
  subnet: string;
  node: string;
  /** The node's underlay IP: the VXLAN tunnel endpoint. */
  vtepIP: string;
  vtepMac: string;
  /** ISO times. */
  acquired: string;
  renewed: string;
}

/**
 * endpoints/<network>/<node>/<id>: one pod interface attached on a node, as
 * its agent reported it. Bound to the node's etcd lease, so it vanishes with the node.
 */
export interface EndpointRecord {
  /** `<containerId>/<ifName>`, unique on its node. */
  id: string;
  network: string;
  node: string;
  /** `namespace/pod` under Kubernetes, or the runtime's name; "" when none. */
  name: string;
  aliases: string[];
  /** IPv4 addresses, without prefix length. */
  ips: string[];
  mac: string;
}
