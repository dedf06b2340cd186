// nodes/<name>: what each node's agent registered, bound to the node's etcd
// lease, and the one transaction that registers a node and claims, rewrites
// or releases its subnet leases together.
import type { ICompare, IRequestOp } from "etcd3";
import { ConflictError } from "./errors.js";
import { EtcdKv, MAX_CAS_ATTEMPTS, TXN_CHUNK, absent, casBackoff, decode, decodeOrUndefined, decodeValid, del, delPrefix, firstKv, get, modIs, put, versioned, type Versioned } from "./etcd.js";
import { leaderFence, stillLeader } from "./leader.js";
import type { LeaseRecord, NodeRecord } from "./types.js";

/** What an agent's Join declares: the node record without what the controller keeps (subnets, times). */
export type NodeRegistration = Pick<NodeRecord, "name" | "underlayIP" | "labels" | "agentVersion" | "uplinkMtu" | "vtepMacs">;

export async function listNodes(etcd: EtcdKv): Promise<NodeRecord[]> {
  const { kvs } = await etcd.rangePrefix(etcd.keys.nodes(), "list_nodes");
  return decodeValid<NodeRecord>(kvs, etcd.log);
}

export async function getNode(etcd: EtcdKv, name: string): Promise<Versioned<NodeRecord> | undefined> {
  const kv = await etcd.getKv(etcd.keys.node(name), "get_node");
  return kv ? versioned<NodeRecord>(kv) : undefined;
}

/** Deletes the node record and all its leases in one transaction, then revokes its etcd lease. */
export async function removeNode(etcd: EtcdKv, name: string, opts: { asLeader?: string } = {}): Promise<boolean> {
  const nodeKey = etcd.keys.node(name);
  const backoff = casBackoff();
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++, await backoff.wait()) {
    const [nodeKv, leases] = await Promise.all([etcd.getKv(nodeKey, "get_node"), etcd.rangePrefix(etcd.keys.leases(), "list_leases")]);
    const own = leases.kvs.filter((kv) => decodeOrUndefined<LeaseRecord>(kv)?.node === name);
    if (!nodeKv && own.length === 0) return false;
    const compare = [
      nodeKv ? modIs(nodeKey, Number(nodeKv.mod_revision)) : absent(nodeKey),
      ...own.map((kv) => modIs(kv.key.toString(), Number(kv.mod_revision))),
      ...leaderFence(etcd, opts.asLeader),
    ];
    // Its endpoints too, one range per network it was in: they are bound to its etcd lease, but the revoke below may fail.
    const networks = new Set([...Object.keys(nodeKv ? (decodeOrUndefined<NodeRecord>(nodeKv)?.subnets ?? {}) : {}), ...own.map((kv) => decodeOrUndefined<LeaseRecord>(kv)!.network)]);
    const endpoints = [...networks].map((net) => delPrefix(`${etcd.keys.endpoints(net)}${name}/`));
    const res = await etcd.txn("remove_node", compare, [del(nodeKey), ...own.map((kv) => del(kv.key.toString())), ...endpoints]);
    if (res.succeeded) {
      const lease = nodeKv ? String(nodeKv.lease ?? "0") : "0";
      if (lease !== "0") await etcd.revokeLease(lease).catch(() => undefined);
      return true;
    }
    await stillLeader(etcd, opts.asLeader);
  }
  throw new ConflictError(`node ${name}: too many concurrent changes, try again`);
}

/**
 * Records that these nodes' agents have applied a config (once per node;
 * nodes already marked or gone are skipped). Batched: one transaction per
 * TXN_CHUNK nodes, each comparing the record's revision; a chunk that loses a
 * race is retried node by node.
 */
export async function markNodesApplied(etcd: EtcdKv, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += TXN_CHUNK) {
    const chunk = names.slice(i, i + TXN_CHUNK);
    if (await markOnce(etcd, chunk)) continue;
    for (const n of chunk) {
      const backoff = casBackoff();
      let done = false;
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS && !done; attempt++, await backoff.wait()) done = await markOnce(etcd, [n]);
      if (!done) throw new ConflictError(`node ${n}: too many concurrent changes, try again`);
    }
  }
}

/** One transaction marking `names`; false when a record moved in between. */
async function markOnce(etcd: EtcdKv, names: string[]): Promise<boolean> {
  // All records in one round trip: a txn of reads.
  const read = await etcd.txn("get_nodes", [], names.map((n) => get(etcd.keys.node(n))));
  const kvs = read.responses.map((r) => firstKv(r));
  const now = new Date().toISOString();
  const compare: ICompare[] = [];
  const ops: IRequestOp[] = [];
  for (const kv of kvs) {
    if (!kv) continue;
    const record = decode<NodeRecord>(kv);
    if (record.appliedAt) continue;
    compare.push(modIs(kv.key.toString(), Number(kv.mod_revision)));
    ops.push(put(kv.key.toString(), { ...record, appliedAt: now }, String(kv.lease ?? "0")));
  }
  if (ops.length === 0) return true;
  return (await etcd.txn("mark_applied", compare, ops)).succeeded;
}

/** A node's record and its leases, as etcd has them now. */
export interface NodeState {
  name: string;
  /** Revision and etcd lease of the node key; undefined when it does not exist. */
  node?: { modRevision: number; lease: string; record: NodeRecord };
  /** Leases the record names that really are this node's, by network. */
  leases: Map<string, { modRevision: number; lease: string; record: LeaseRecord }>;
}

export async function readNodeState(etcd: EtcdKv, name: string): Promise<NodeState> {
  const kv = await etcd.getKv(etcd.keys.node(name), "get_node");
  const state: NodeState = { name, leases: new Map() };
  if (!kv) return state;
  // A value that does not decode is overwritten by the registration (the compare on its revision keeps that safe).
  const record = decodeOrUndefined<NodeRecord>(kv) ?? { name, underlayIP: "", labels: {}, agentVersion: "", uplinkMtu: 0, vtepMacs: {}, subnets: {}, lastSeen: "" };
  state.node = { modRevision: Number(kv.mod_revision), lease: String(kv.lease ?? "0"), record };
  const held = await Promise.all(
    Object.entries(record.subnets ?? {}).map(async ([net, subnet]) => ({ net, kv: await etcd.getKv(etcd.keys.lease(net, subnet), "get_lease") })),
  );
  for (const { net, kv: lkv } of held) {
    if (!lkv) continue;
    const lease = decodeOrUndefined<LeaseRecord>(lkv);
    if (lease?.node === name) state.leases.set(net, { modRevision: Number(lkv.mod_revision), lease: String(lkv.lease ?? "0"), record: lease });
  }
  return state;
}

/** What one registration transaction writes, decided by the caller from a NodeState. */
export interface NodeWrite {
  record: NodeRecord;
  leaseId: string;
  /** Subnets newly claimed: each lease key must be absent. */
  claims: LeaseRecord[];
  /** Held leases rewritten (underlay IP, MAC or etcd lease changed): each must be unchanged since the read. */
  rewrites: LeaseRecord[];
  /** Held leases given up. */
  releases: LeaseRecord[];
}

export type CommitResult = { ok: true; revision: number } | { ok: false; taken: LeaseRecord[] };

/**
 * Writes a registration and its lease changes in one transaction. It commits
 * only if the node key and every held lease are as `state` read them and every
 * claimed subnet is free, so two replicas never hand out one subnet and one
 * node never holds two. On failure, says which claimed subnets someone else holds.
 */
export async function commitNode(etcd: EtcdKv, state: NodeState, w: NodeWrite): Promise<CommitResult> {
  const { compare, ops } = nodeTxn(etcd, state, w);
  const res = await etcd.txn(
    "register_node",
    compare,
    ops,
    w.claims.map((l) => get(etcd.keys.lease(l.network, l.subnet))),
  );
  if (res.succeeded) return { ok: true, revision: Number(res.header.revision) };
  const taken = w.claims.filter((_, i) => {
    const kv = firstKv(res.responses[i]);
    return !!kv && decode<LeaseRecord>(kv).node !== state.name;
  });
  return { ok: false, taken };
}

/** The compares and writes of one registration, and every key it writes (a batch must not write one key twice). */
export function nodeTxn(etcd: EtcdKv, state: NodeState, w: NodeWrite): { compare: ICompare[]; ops: IRequestOp[]; keys: string[] } {
  const nodeKey = etcd.keys.node(state.name);
  const compare: ICompare[] = [state.node ? modIs(nodeKey, state.node.modRevision) : absent(nodeKey)];
  const ops: IRequestOp[] = [put(nodeKey, w.record, w.leaseId)];
  const keys = [nodeKey];
  for (const l of [...w.rewrites, ...w.releases]) {
    const held = state.leases.get(l.network);
    if (held) compare.push(modIs(etcd.keys.lease(l.network, held.record.subnet), held.modRevision));
  }
  for (const l of w.rewrites) ops.push(put(etcd.keys.lease(l.network, l.subnet), l, w.leaseId));
  for (const l of w.releases) ops.push(del(etcd.keys.lease(l.network, l.subnet)));
  for (const l of w.claims) {
    const key = etcd.keys.lease(l.network, l.subnet);
    compare.push(absent(key));
    ops.push(put(key, l, w.leaseId));
  }
  for (const l of [...w.rewrites, ...w.releases, ...w.claims]) keys.push(etcd.keys.lease(l.network, l.subnet));
  return { compare, ops, keys };
}
