// meta/leader: the elected replica's key, and writes fenced by holding it.
import type { ICompare } from "etcd3";
import { EtcdKv, absent, del, firstKv, get, leaseIs, modIs, put } from "./etcd.js";
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
 * Deletes, in one transaction that only commits while this replica still
 * holds the leader key, the given keys if unchanged since `modRevision`.
 * Returns false when leadership was lost or a key moved.
 */
export async function deleteAsLeader(etcd: EtcdKv, leaseId: string, victims: { key: string; modRevision: number }[]): Promise<boolean> {
  if (victims.length === 0) return true;
  const res = await etcd.txn(
    "gc_delete",
    [leaseIs(etcd.keys.leader(), leaseId), ...victims.map((v) => modIs(v.key, v.modRevision))],
    victims.map((v) => del(v.key)),
  );
  return res.succeeded;
}
