// meta/leader: the elected replica's key, and writes fenced by holding it.
import type { ICompare } from "etcd3";
import { EtcdKv, TXN_CHUNK, absent, del, firstKv, get, leaseIs, modIs, put } from "./etcd.js";
import { NotLeaderError } from "./errors.js";

/** The compare that makes a write leader-only: the leader key carries `lease` (none when `lease` is undefined). */
export function leaderFence(etcd: EtcdKv, lease: string | undefined): ICompare[] {
  return lease === undefined ? [] : [leaseIs(etcd.keys.leader(), lease)];
}

/** After a fenced txn failed: throws NotLeaderError when the fence was the reason (the caller must not retry). */
export async function stillLeader(etcd: EtcdKv, lease: string | undefined): Promise<void> {
  if (lease === undefined) return;
  const kv = await etcd.getKv(etcd.keys.leader(), "get_leader");
  if (!kv || String(kv.lease) !== lease) throw new NotLeaderError();
}

/** Creates the leader key bound to `leaseId` if nobody holds it. True when we hold it now. */
export async function tryLead(etcd: EtcdKv, identity: string, leaseId: string): Promise<boolean> {
  const key = etcd.keys.leader();
  const res = await etcd.txn("campaign", [absent(key)], [put(key, { identity, since: new Date().toISOString() }, leaseId)], [get(key)]);
  if (res.succeeded) return true;
  const holder = firstKv(res.responses[0]);
  return !!holder && String(holder.lease) === leaseId;
}

export async function resign(etcd: EtcdKv, leaseId: string): Promise<void> {
  const key = etcd.keys.leader();
  await etcd.txn("resign", [leaseIs(key, leaseId)], [del(key)]);
}

/**
 * Deletes the given keys, each only if unchanged since `modRevision`, in
 * transactions of TXN_CHUNK keys (etcd refuses more than --max-txn-ops, 128
 * by default) that each commit only while this replica still holds the
 * leader key. Returns the keys deleted; stops at the first chunk refused
 * because leadership was lost. A chunk refused because a key moved is
 * retried key by key, so one moved key does not keep the others alive.
 */
export async function deleteAsLeader(etcd: EtcdKv, leaseId: string, victims: { key: string; modRevision: number }[]): Promise<string[]> {
  const deleted: string[] = [];
  const leader = etcd.keys.leader();
  for (let i = 0; i < victims.length; i += TXN_CHUNK) {
    const chunk = victims.slice(i, i + TXN_CHUNK);
    const res = await etcd.txn("gc_delete", [leaseIs(leader, leaseId), ...chunk.map((v) => modIs(v.key, v.modRevision))], chunk.map((v) => del(v.key)), [get(leader)]);
    if (res.succeeded) {
      deleted.push(...chunk.map((v) => v.key));
      continue;
    }
    const holder = firstKv(res.responses[0]);
    if (!holder || String(holder.lease) !== leaseId) return deleted; // deposed: stop the pass
    for (const v of chunk) {
      const one = await etcd.txn("gc_delete", [leaseIs(leader, leaseId), modIs(v.key, v.modRevision)], [del(v.key)]);
      if (one.succeeded) deleted.push(v.key);
    }
  }
  return deleted;
}
