// networks/<name>: network specs. Writes serialise on the networks guard key
// so VNI/CIDR uniqueness checks see every other write.
import { prefixEnd } from "./keys.js";
import { ConflictError } from "./errors.js";
import { EtcdKv, MAX_CAS_ATTEMPTS, absent, casBackoff, decode, decodeValid, del, modIs, put } from "./etcd.js";
import { leaderFence, stillLeader } from "./leader.js";
import type { NetworkSpec } from "./types.js";

export async function listNetworks(etcd: EtcdKv): Promise<NetworkSpec[]> {
  const { kvs } = await etcd.rangePrefix(etcd.keys.networks(), "list_networks");
  return decodeValid<NetworkSpec>(kvs, etcd.log);
}

export async function getNetwork(etcd: EtcdKv, name: string): Promise<NetworkSpec | undefined> {
  const kv = await etcd.getKv(etcd.keys.network(name), "get_network");
  return kv ? decode<NetworkSpec>(kv) : undefined;
}

/**
 * Creates or replaces `spec`. `check` sees the networks stored at one
 * revision; the write commits only if no other network write happened since
 * (compare on the guard key), otherwise it re-reads and checks again.
 */
export async function saveNetwork(
  etcd: EtcdKv,
  spec: NetworkSpec,
  check: (spec: NetworkSpec, others: NetworkSpec[], existing: NetworkSpec | undefined) => void,
  opts: { asLeader?: string } = {},
): Promise<void> {
  const guard = etcd.keys.networksGuard();
  const backoff = casBackoff();
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++, await backoff.wait()) {
    const [{ kvs }, guardKv] = await Promise.all([
      etcd.rangePrefix(etcd.keys.networks(), "list_networks"),
      etcd.getKv(guard, "get_guard"),
    ]);
    const all = decodeValid<NetworkSpec>(kvs, etcd.log);
    const existing = all.find((n) => n.name === spec.name);
    check(spec, all.filter((n) => n.name !== spec.name), existing);
    const res = await etcd.txn(
      "save_network",
      [guardKv ? modIs(guard, Number(guardKv.mod_revision)) : absent(guard), ...leaderFence(etcd, opts.asLeader)],
      [put(etcd.keys.network(spec.name), spec), put(guard, { by: "saveNetwork", network: spec.name })],
    );
    if (res.succeeded) return;
    await stillLeader(etcd, opts.asLeader);
  }
  throw new ConflictError(`network ${spec.name}: too many concurrent network changes, try again`);
}

export async function deleteNetwork(etcd: EtcdKv, name: string, opts: { force?: boolean; asLeader?: string } = {}): Promise<boolean> {
  const guard = etcd.keys.networksGuard();
  const backoff = casBackoff();
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++, await backoff.wait()) {
    const [netKv, guardKv, leases] = await Promise.all([
      etcd.getKv(etcd.keys.network(name), "get_network"),
      etcd.getKv(guard, "get_guard"),
      etcd.rangePrefix(etcd.keys.leases(name), "list_leases"),
    ]);
    if (!netKv) return false;
    if (leases.kvs.length > 0 && !opts.force) {
      throw new Error(`network ${name} still has ${leases.kvs.length} lease(s); remove its nodes first or pass --force`);
    }
    const res = await etcd.txn(
      "delete_network",
      [modIs(etcd.keys.network(name), Number(netKv.mod_revision)), guardKv ? modIs(guard, Number(guardKv.mod_revision)) : absent(guard), ...leaderFence(etcd, opts.asLeader)],
      [
        del(etcd.keys.network(name)),
        { request_delete_range: { key: Buffer.from(etcd.keys.leases(name)), range_end: prefixEnd(etcd.keys.leases(name)) } },
        put(guard, { by: "deleteNetwork", network: name }),
      ],
    );
    if (res.succeeded) return true;
    await stillLeader(etcd, opts.asLeader);
  }
  throw new ConflictError(`network ${name}: too many concurrent changes, try again`);
}
