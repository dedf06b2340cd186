// Writes nodes with a subnet straight into etcd through the store's own
// registration primitive (one transaction per node, as a join writes it), for
// tests and benchmarks that need many peers present without joining each one
// over gRPC.
import { chooseSubnet } from "../../pkg/ipam/index.js";
import { parseCidr } from "../../pkg/ip/index.js";
import type { NetworkSpec, Store } from "../../pkg/store/index.js";

export interface PreloadNode {
  name: string;
  underlayIP: string;
  vtepMac: string;
}

/** Registers `node` with a subnet of `spec` not in `taken` (which it extends); returns the subnet. */
export async function preloadNode(store: Store, spec: NetworkSpec, node: PreloadNode, taken: Set<string>, ttlSeconds = 24 * 3600): Promise<string> {
  const pool = { cidr: parseCidr(spec.cidr), nodePrefixLength: spec.nodePrefixLength };
  for (;;) {
    const subnet = chooseSubnet(pool, node.name, taken);
    if (!subnet) throw new Error(`pool ${spec.cidr} of ${spec.name} is exhausted`);
    taken.add(subnet);
    const state = await store.readNodeState(node.name);
    const leaseId = await store.grantLease(ttlSeconds);
    const now = new Date().toISOString();
    const res = await store.commitNode(state, {
      record: { name: node.name, underlayIP: node.underlayIP, labels: {}, agentVersion: "preload", uplinkMtu: 1500, vtepMacs: { [spec.name]: node.vtepMac }, subnets: { [spec.name]: subnet }, lastSeen: now },
      leaseId,
      claims: [{ network: spec.name, subnet, node: node.name, vtepIP: node.underlayIP, vtepMac: node.vtepMac, acquired: now, renewed: now }],
      rewrites: [],
      releases: [],
    });
    if (res.ok) return subnet;
    await store.revokeLease(leaseId);
  }
}
