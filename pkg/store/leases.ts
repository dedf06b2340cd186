// leases/<network>/<subnet>: which node holds which subnet. Create-if-absent
// on the lease key is what keeps two nodes off one subnet.
import { chooseSubnet } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";
import { ConflictError, NodeGoneError, PoolExhaustedError } from "./errors.js";
import { EtcdKv, MAX_CAS_ATTEMPTS, absent, decode, decodeValid, del, firstKv, get, modIs, put } from "./etcd.js";
import type { LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

export async function listLeases(etcd: EtcdKv, network?: string): Promise<LeaseRecord[]> {
  const { kvs } = await etcd.rangePrefix(etcd.keys.leases(network), "list_leases");
  return decodeValid<LeaseRecord>(kvs, etcd.log);
}

/**
 * Gives `node` a subnet of `network`: the one it already holds, else `hint`
 * when free, else a free one. Create-if-absent on the lease key plus a
 * compare on the node key make it impossible for two nodes to share a subnet
 * or for one node to get two, whatever the interleaving of replicas.
 * `taken` is the caller's (possibly stale) view of leased subnets; etcd has the last word.
 */
export async function allocateSubnet(
  etcd: EtcdKv,
  args: {
    node: string;
    network: NetworkSpec;
    taken: ReadonlySet<string>;
    hint?: string;
  },
): Promise<{ subnet: string; revision: number; created: boolean }> {
  const { node, network } = args;
  const nodeKey = etcd.keys.node(node);
  const pool = { cidr: parseCidr(network.cidr), nodePrefixLength: network.nodePrefixLength };
  const lost = new Set<string>();
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS + 64; attempt++) {
    const kv = await etcd.getKv(nodeKey, "get_node");
    if (!kv) throw new NodeGoneError(node);
    const record = decode<NodeRecord>(kv);
    const leaseId = String(kv.lease ?? "0");
    const held = record.subnets[network.name];
    if (held) {
      const lkv = await etcd.getKv(etcd.keys.lease(network.name, held), "get_lease");
      if (lkv && decode<LeaseRecord>(lkv).node === node) return { subnet: held, revision: Number(lkv.mod_revision), created: false };
      delete record.subnets[network.name];
    }
    const taken = lost.size === 0 ? args.taken : new Set([...args.taken, ...lost]);
    const subnet = chooseSubnet(pool, node, taken, args.hint ?? held);
    if (!subnet) {
      // The caller's view may be stale: confirm with etcd before declaring the pool full.
      const actual = new Set((await listLeases(etcd, network.name)).map((l) => l.subnet));
      const retry = chooseSubnet(pool, node, actual);
      if (!retry) throw new PoolExhaustedError(network.name, network.cidr, 2 ** (network.nodePrefixLength - pool.cidr.prefix));
      lost.clear();
      args = { ...args, taken: actual };
      continue;
    }
    const now = new Date().toISOString();
    const leaseKey = etcd.keys.lease(network.name, subnet);
    const lease: LeaseRecord = {
      network: network.name,
      subnet,
      node,
      vtepIP: record.underlayIP,
      vtepMac: record.vtepMacs[network.name] ?? "",
      acquired: now,
      renewed: now,
    };
    const res = await etcd.txn(
      "allocate_subnet",
      [modIs(nodeKey, Number(kv.mod_revision)), absent(leaseKey)],
      [put(leaseKey, lease, leaseId), put(nodeKey, { ...record, subnets: { ...record.subnets, [network.name]: subnet } }, leaseId)],
      [get(leaseKey)],
    );
    if (res.succeeded) return { subnet, revision: Number(res.header.revision), created: true };
    if (firstKv(res.responses[0])) lost.add(subnet); // someone else holds it; otherwise the node record moved: re-read
  }
  throw new ConflictError(`node ${node}: could not allocate a subnet of ${network.name} after many attempts`);
}

/** Gives up `node`'s subnet in `network` (it no longer belongs to it). */
export async function releaseSubnet(etcd: EtcdKv, node: string, network: string): Promise<void> {
  const nodeKey = etcd.keys.node(node);
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const kv = await etcd.getKv(nodeKey, "get_node");
    if (!kv) return;
    const record = decode<NodeRecord>(kv);
    const held = record.subnets[network];
    if (!held) return;
    const leaseKey = etcd.keys.lease(network, held);
    const lkv = await etcd.getKv(leaseKey, "get_lease");
    const ops = [put(nodeKey, { ...record, subnets: Object.fromEntries(Object.entries(record.subnets).filter(([n]) => n !== network)) }, String(kv.lease ?? "0"))];
    const compare = [modIs(nodeKey, Number(kv.mod_revision))];
    if (lkv && decode<LeaseRecord>(lkv).node === node) {
      ops.push(del(leaseKey));
      compare.push(modIs(leaseKey, Number(lkv.mod_revision)));
    }
    const res = await etcd.txn("release_subnet", compare, ops);
    if (res.succeeded) return;
  }
  throw new ConflictError(`node ${node}: could not release its subnet of ${network}`);
}
