// nodes/<name>: what each node's agent registered, bound to the node's etcd lease.
import type { ICompare, IRequestOp } from "etcd3";
import { ConflictError } from "./errors.js";
import { EtcdKv, MAX_CAS_ATTEMPTS, absent, decode, decodeOrUndefined, decodeValid, del, modIs, put, versioned, type Versioned } from "./etcd.js";
import { leaderFence, stillLeader } from "./leader.js";
import type { LeaseRecord, NodeRecord } from "./types.js";

export interface NodeRegistration {
  name: string;
  underlayIP: string;
  labels: Record<string, string>;
  agentVersion: string;
  uplinkMtu: number;
  vtepMacs: Record<string, string>;
}

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
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const [nodeKv, leases] = await Promise.all([etcd.getKv(nodeKey, "get_node"), etcd.rangePrefix(etcd.keys.leases(), "list_leases")]);
    const own = leases.kvs.filter((kv) => decodeOrUndefined<LeaseRecord>(kv)?.node === name);
    if (!nodeKv && own.length === 0) return false;
    const compare = [
      nodeKv ? modIs(nodeKey, Number(nodeKv.mod_revision)) : absent(nodeKey),
      ...own.map((kv) => modIs(kv.key.toString(), Number(kv.mod_revision))),
      ...leaderFence(etcd, opts.asLeader),
    ];
    const res = await etcd.txn("remove_node", compare, [del(nodeKey), ...own.map((kv) => del(kv.key.toString()))]);
    if (res.succeeded) {
      const lease = nodeKv ? String(nodeKv.lease ?? "0") : "0";
      if (lease !== "0") await etcd.revokeLease(lease).catch(() => undefined);
      return true;
    }
    await stillLeader(etcd, opts.asLeader);
  }
  throw new ConflictError(`node ${name}: too many concurrent changes, try again`);
}

/** Records that the node's agent has applied a config (once; later calls change nothing). */
export async function markNodeApplied(etcd: EtcdKv, name: string): Promise<void> {
  const nodeKey = etcd.keys.node(name);
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const kv = await etcd.getKv(nodeKey, "get_node");
    if (!kv) return;
    const record = decode<NodeRecord>(kv);
    if (record.appliedAt) return;
    const res = await etcd.txn("mark_applied", [modIs(nodeKey, Number(kv.mod_revision))], [put(nodeKey, { ...record, appliedAt: new Date().toISOString() }, String(kv.lease ?? "0"))]);
    if (res.succeeded) return;
  }
  throw new ConflictError(`node ${name}: too many concurrent changes, try again`);
}

/**
 * Records a node's registration. Reuses the node's etcd lease when it is
 * still alive (so its subnets stay), otherwise grants a new one. Lease
 * records of the node are rewritten only when its underlay IP or a VTEP MAC
 * changed, so peers see exactly the changes that matter.
 */
export async function registerNode(etcd: EtcdKv, reg: NodeRegistration, ttlSeconds: number): Promise<{ record: NodeRecord; leaseId: string; revision: number }> {
  const nodeKey = etcd.keys.node(reg.name);
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const kv = await etcd.getKv(nodeKey, "get_node");
    // A value that does not decode is replaced by this registration (the compare on its revision keeps that safe).
    const old = kv ? decodeOrUndefined<NodeRecord>(kv) : undefined;
    let leaseId = kv ? String(kv.lease ?? "0") : "0";
    if (leaseId !== "0" && (await etcd.keepAlive(leaseId)) <= 0) leaseId = "0";
    if (leaseId === "0") leaseId = await etcd.grantLease(ttlSeconds);

    const now = new Date().toISOString();
    const record: NodeRecord = {
      name: reg.name,
      underlayIP: reg.underlayIP,
      labels: reg.labels,
      agentVersion: reg.agentVersion,
      uplinkMtu: reg.uplinkMtu,
      // Keep MACs for networks the agent did not mention (it may not have created those devices yet).
      vtepMacs: { ...(old?.vtepMacs ?? {}), ...reg.vtepMacs },
      subnets: { ...(old?.subnets ?? {}) },
      lastSeen: now,
      ...(old?.appliedAt ? { appliedAt: old.appliedAt } : {}),
    };
    const compare: ICompare[] = [kv ? modIs(nodeKey, Number(kv.mod_revision)) : absent(nodeKey)];
    const ops: IRequestOp[] = [put(nodeKey, record, leaseId)];
    const leaseKvs = await Promise.all(
      Object.entries(record.subnets).map(async ([net, subnet]) => ({ net, subnet, kv: await etcd.getKv(etcd.keys.lease(net, subnet), "get_lease") })),
    );
    for (const { net, subnet, kv: lkv } of leaseKvs) {
      const lease = lkv ? decodeOrUndefined<LeaseRecord>(lkv) : undefined;
      if (!lkv || !lease || lease.node !== reg.name) {
        delete record.subnets[net];
        continue;
      }
      const mac = record.vtepMacs[net] ?? "";
      if (lease.vtepIP !== record.underlayIP || lease.vtepMac !== mac || String(lkv.lease) !== leaseId) {
        const key = etcd.keys.lease(net, subnet);
        compare.push(modIs(key, Number(lkv.mod_revision)));
        ops.push(put(key, { ...lease, vtepIP: record.underlayIP, vtepMac: mac, renewed: now }, leaseId));
      }
    }
    const res = await etcd.txn("register_node", compare, ops);
    if (res.succeeded) return { record, leaseId, revision: Number(res.header.revision) };
  }
  throw new ConflictError(`node ${reg.name}: too many concurrent registrations, try again`);
}
