import { Etcd3, type IKeyValue, type IRequestOp, type ICompare, type IResponseOp } from "etcd3";
import type { Logger } from "../log/index.js";
import { prom, type Registry } from "../metrics/index.js";
import { chooseSubnet } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";
import { Keys, prefixEnd, type ParsedKey } from "./keys.js";
import type { EtcdTls } from "./tls.js";
import type { LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

export interface StoreOptions {
  endpoints: string[];
  prefix?: string;
  log?: Logger;
  registry?: Registry;
  /** How long to wait for etcd before a call fails (ms). */
  timeoutMs?: number;
  /** TLS for https:// endpoints (client certificate for etcd's --client-cert-auth). */
  tls?: EtcdTls;
}

/** A value with the etcd metadata the controller needs for compare-and-swap. */
export interface Versioned<T> {
  value: T;
  modRevision: number;
  createRevision: number;
  /** etcd lease ID the key is bound to ("0" for none). */
  lease: string;
}

export type StoreEvent =
  | { type: "put"; key: ParsedKey; value: unknown; lease: string; modRevision: number }
  | { type: "delete"; key: ParsedKey; modRevision: number };

export interface Snapshot {
  revision: number;
  networks: Versioned<NetworkSpec>[];
  nodes: Versioned<NodeRecord>[];
  leases: Versioned<LeaseRecord>[];
}

export interface NodeRegistration {
  name: string;
  underlayIP: string;
  labels: Record<string, string>;
  agentVersion: string;
  uplinkMtu: number;
  vtepMacs: Record<string, string>;
}

export class PoolExhaustedError extends Error {
  constructor(readonly network: string, readonly cidr: string, readonly capacity: number) {
    super(`network ${network}: pool ${cidr} is exhausted (all ${capacity} node subnets are leased)`);
  }
}

export class NodeGoneError extends Error {
  constructor(readonly node: string) {
    super(`node ${node} is not registered (removed, or its lease expired)`);
  }
}

export class ConflictError extends Error {}

export interface StoreWatch {
  close(): Promise<void>;
}

const MAX_CAS_ATTEMPTS = 64;

function encode(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

function decode<T>(kv: IKeyValue): T {
  return JSON.parse(kv.value.toString()) as T;
}

function versioned<T>(kv: IKeyValue): Versioned<T> {
  return { value: decode<T>(kv), modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), lease: String(kv.lease ?? "0") };
}

const put = (key: string, value: unknown, lease?: string): IRequestOp => ({
  request_put: { key: Buffer.from(key), value: encode(value), ...(lease && lease !== "0" ? { lease } : {}) },
});
const del = (key: string): IRequestOp => ({ request_delete_range: { key: Buffer.from(key) } });
const get = (key: string): IRequestOp => ({ request_range: { key: Buffer.from(key) } });
const modIs = (key: string, rev: number): ICompare => ({ key: Buffer.from(key), target: "Mod", result: "Equal", mod_revision: rev });
const absent = (key: string): ICompare => ({ key: Buffer.from(key), target: "Create", result: "Equal", create_revision: 0 });
const leaseIs = (key: string, lease: string): ICompare => ({ key: Buffer.from(key), target: "Lease", result: "Equal", lease });

function firstKv(res: IResponseOp | undefined): IKeyValue | undefined {
  return res?.response_range?.kvs?.[0];
}

/**
 * Everything that knows etcd: keys, serialisation, transactions, watches.
 * Every write that could race is a transaction comparing a revision, so two
 * controller replicas (or weftctl and a controller) never overwrite each other.
 */
export class Store {
  readonly keys: Keys;
  readonly client: Etcd3;
  private readonly log?: Logger;
  private readonly opLatency?: prom.Histogram<"op">;
  private readonly timeoutMs: number;

  private constructor(opts: StoreOptions) {
    this.keys = new Keys(opts.prefix);
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: Math.min(this.timeoutMs, 5000),
      ...(opts.tls ? { credentials: { rootCertificate: opts.tls.ca ?? (null as unknown as Buffer), certChain: opts.tls.cert, privateKey: opts.tls.key } } : {}),
    });
    if (opts.registry) {
      this.opLatency = new prom.Histogram({
        name: "weft_controller_etcd_operation_seconds",
        help: "Latency of etcd operations issued by the controller, by operation.",
        labelNames: ["op"],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
        registers: [opts.registry],
      });
    }
  }

  static connect(opts: StoreOptions): Store {
    if (opts.endpoints.length === 0) throw new Error("no etcd endpoints given");
    return new Store(opts);
  }

  async close(): Promise<void> {
    this.client.close();
  }

  /** Runs one etcd call with a deadline and records its latency. */
  private async op<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const end = this.opLatency?.startTimer({ op: name });
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`etcd ${name}: no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      end?.();
    }
  }

  private async rangePrefix(prefix: string, name: string): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const res = await this.op(name, () => this.client.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix) }));
    return { kvs: res.kvs, revision: Number(res.header.revision) };
  }

  private async getKv(key: string, name: string): Promise<IKeyValue | undefined> {
    const res = await this.op(name, () => this.client.kv.range({ key: Buffer.from(key) }));
    return res.kvs[0];
  }

  private txn(name: string, compare: ICompare[], success: IRequestOp[], failure: IRequestOp[] = []) {
    return this.op(name, () => this.client.kv.txn({ compare, success, failure }));
  }

  // ---- networks ---------------------------------------------------------

  async listNetworks(): Promise<NetworkSpec[]> {
    const { kvs } = await this.rangePrefix(this.keys.networks(), "list_networks");
    return kvs.map((kv) => decode<NetworkSpec>(kv));
  }

  async getNetwork(name: string): Promise<NetworkSpec | undefined> {
    const kv = await this.getKv(this.keys.network(name), "get_network");
    return kv ? decode<NetworkSpec>(kv) : undefined;
  }

  /**
   * Creates or replaces `spec`. `check` sees the networks stored at one
   * revision; the write commits only if no other network write happened since
   * (compare on the guard key), otherwise it re-reads and checks again.
   */
  async saveNetwork(
    spec: NetworkSpec,
    check: (spec: NetworkSpec, others: NetworkSpec[], existing: NetworkSpec | undefined) => void,
  ): Promise<void> {
    const guard = this.keys.networksGuard();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const [{ kvs }, guardKv] = await Promise.all([
        this.rangePrefix(this.keys.networks(), "list_networks"),
        this.getKv(guard, "get_guard"),
      ]);
      const all = kvs.map((kv) => decode<NetworkSpec>(kv));
      const existing = all.find((n) => n.name === spec.name);
      check(spec, all.filter((n) => n.name !== spec.name), existing);
      const res = await this.txn(
        "save_network",
        [guardKv ? modIs(guard, Number(guardKv.mod_revision)) : absent(guard)],
        [put(this.keys.network(spec.name), spec), put(guard, { by: "saveNetwork", network: spec.name })],
      );
      if (res.succeeded) return;
    }
    throw new ConflictError(`network ${spec.name}: too many concurrent network changes, try again`);
  }

  async deleteNetwork(name: string, opts: { force?: boolean } = {}): Promise<boolean> {
    const guard = this.keys.networksGuard();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const [netKv, guardKv, leases] = await Promise.all([
        this.getKv(this.keys.network(name), "get_network"),
        this.getKv(guard, "get_guard"),
        this.rangePrefix(this.keys.leases(name), "list_leases"),
      ]);
      if (!netKv) return false;
      if (leases.kvs.length > 0 && !opts.force) {
        throw new Error(`network ${name} still has ${leases.kvs.length} lease(s); remove its nodes first or pass --force`);
      }
      const res = await this.txn(
        "delete_network",
        [modIs(this.keys.network(name), Number(netKv.mod_revision)), guardKv ? modIs(guard, Number(guardKv.mod_revision)) : absent(guard)],
        [
          del(this.keys.network(name)),
          { request_delete_range: { key: Buffer.from(this.keys.leases(name)), range_end: prefixEnd(this.keys.leases(name)) } },
          put(guard, { by: "deleteNetwork", network: name }),
        ],
      );
      if (res.succeeded) return true;
    }
    throw new ConflictError(`network ${name}: too many concurrent changes, try again`);
  }

  // ---- leases and nodes ----------------------------------------------------

  async listLeases(network?: string): Promise<LeaseRecord[]> {
    const { kvs } = await this.rangePrefix(this.keys.leases(network), "list_leases");
    return kvs.map((kv) => decode<LeaseRecord>(kv));
  }

  async listNodes(): Promise<NodeRecord[]> {
    const { kvs } = await this.rangePrefix(this.keys.nodes(), "list_nodes");
    return kvs.map((kv) => decode<NodeRecord>(kv));
  }

  async getNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    const kv = await this.getKv(this.keys.node(name), "get_node");
    return kv ? versioned<NodeRecord>(kv) : undefined;
  }

  /** Deletes the node record and all its leases in one transaction, then revokes its etcd lease. */
  async removeNode(name: string): Promise<boolean> {
    const nodeKey = this.keys.node(name);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const [nodeKv, leases] = await Promise.all([this.getKv(nodeKey, "get_node"), this.rangePrefix(this.keys.leases(), "list_leases")]);
      const own = leases.kvs.filter((kv) => decode<LeaseRecord>(kv).node === name);
      if (!nodeKv && own.length === 0) return false;
      const compare = [
        nodeKv ? modIs(nodeKey, Number(nodeKv.mod_revision)) : absent(nodeKey),
        ...own.map((kv) => modIs(kv.key.toString(), Number(kv.mod_revision))),
      ];
      const res = await this.txn("remove_node", compare, [del(nodeKey), ...own.map((kv) => del(kv.key.toString()))]);
      if (res.succeeded) {
        const lease = nodeKv ? String(nodeKv.lease ?? "0") : "0";
        if (lease !== "0") await this.revokeLease(lease).catch(() => undefined);
        return true;
      }
    }
    throw new ConflictError(`node ${name}: too many concurrent changes, try again`);
  }

  /** Records that the node's agent has applied a config (once; later calls change nothing). */
  async markNodeApplied(name: string): Promise<void> {
    const nodeKey = this.keys.node(name);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const kv = await this.getKv(nodeKey, "get_node");
      if (!kv) return;
      const record = decode<NodeRecord>(kv);
      if (record.appliedAt) return;
      const res = await this.txn("mark_applied", [modIs(nodeKey, Number(kv.mod_revision))], [put(nodeKey, { ...record, appliedAt: new Date().toISOString() }, String(kv.lease ?? "0"))]);
      if (res.succeeded) return;
    }
    throw new ConflictError(`node ${name}: too many concurrent changes, try again`);
  }

  /** Everything under the prefix at one revision. */
  async snapshot(): Promise<Snapshot> {
    const { kvs, revision } = await this.rangePrefix(this.keys.prefix, "snapshot");
    const snap: Snapshot = { revision, networks: [], nodes: [], leases: [] };
    for (const kv of kvs) {
      const k = this.keys.parse(kv.key.toString());
      if (k.kind === "network") snap.networks.push(versioned<NetworkSpec>(kv));
      else if (k.kind === "node") snap.nodes.push(versioned<NodeRecord>(kv));
      else if (k.kind === "lease") snap.leases.push(versioned<LeaseRecord>(kv));
    }
    return snap;
  }

  /**
   * Watches everything under the prefix from `fromRevision` (exclusive of
   * what a snapshot at fromRevision-1 already saw). `onEvents` gets each
   * response's events with the revision they bring the view to. `onLost` is
   * called once when the watch cannot continue (e.g. the revision was
   * compacted): the caller re-lists and watches again.
   */
  async watch(
    fromRevision: number,
    onEvents: (events: StoreEvent[], revision: number) => void,
    onLost: (err: Error) => void,
  ): Promise<StoreWatch> {
    const watcher = await this.client.watch().prefix(this.keys.prefix).startRevision(String(fromRevision)).create();
    let lost = false;
    watcher.on("data", (res) => {
      if (res.events.length === 0) return;
      const events: StoreEvent[] = res.events.map((ev) => {
        const key = this.keys.parse(ev.kv.key.toString());
        const modRevision = Number(ev.kv.mod_revision);
        if (ev.type === "Delete") return { type: "delete", key, modRevision };
        let value: unknown;
        try {
          value = JSON.parse(ev.kv.value.toString());
        } catch {
          value = undefined;
        }
        return { type: "put", key, value, lease: String(ev.kv.lease ?? "0"), modRevision };
      });
      onEvents(events, Number(res.header.revision));
    });
    watcher.on("error", (err) => {
      // etcd3 drops a watcher after an error (e.g. compaction); without this listener it would crash the process.
      if (lost) return;
      lost = true;
      this.log?.warn({ err: String(err) }, "etcd watch lost; the view will be rebuilt");
      onLost(err instanceof Error ? err : new Error(String(err)));
    });
    return {
      close: async () => {
        lost = true;
        await watcher.cancel().catch(() => undefined);
      },
    };
  }

  // ---- etcd leases (time to live of a node's records) -------------------

  async grantLease(ttlSeconds: number): Promise<string> {
    const res = await this.op("lease_grant", () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }));
    return String(res.ID);
  }

  /** Renews a lease once; returns the seconds it now has left (0: it is gone). */
  async keepAlive(leaseId: string): Promise<number> {
    return this.op("lease_keepalive", async () => {
      const stream = await this.client.leaseClient.leaseKeepAlive();
      try {
        const answer = new Promise<number>((resolve, reject) => {
          stream.on("data", (res) => resolve(Number(res.TTL)));
          stream.on("error", reject);
        });
        stream.write({ ID: leaseId });
        return await answer;
      } finally {
        stream.end();
      }
    });
  }

  async revokeLease(leaseId: string): Promise<void> {
    await this.op("lease_revoke", () => this.client.leaseClient.leaseRevoke({ ID: leaseId }));
  }

  /**
   * Records a node's registration. Reuses the node's etcd lease when it is
   * still alive (so its subnets stay), otherwise grants a new one. Lease
   * records of the node are rewritten only when its underlay IP or a VTEP MAC
   * changed, so peers see exactly the changes that matter.
   */
  async registerNode(reg: NodeRegistration, ttlSeconds: number): Promise<{ record: NodeRecord; leaseId: string; revision: number }> {
    const nodeKey = this.keys.node(reg.name);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const kv = await this.getKv(nodeKey, "get_node");
      const old = kv ? decode<NodeRecord>(kv) : undefined;
      let leaseId = kv ? String(kv.lease ?? "0") : "0";
      if (leaseId !== "0" && (await this.keepAlive(leaseId)) <= 0) leaseId = "0";
      if (leaseId === "0") leaseId = await this.grantLease(ttlSeconds);

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
        Object.entries(record.subnets).map(async ([net, subnet]) => ({ net, subnet, kv: await this.getKv(this.keys.lease(net, subnet), "get_lease") })),
      );
      for (const { net, subnet, kv: lkv } of leaseKvs) {
        const lease = lkv ? decode<LeaseRecord>(lkv) : undefined;
        if (!lkv || !lease || lease.node !== reg.name) {
          delete record.subnets[net];
          continue;
        }
        const mac = record.vtepMacs[net] ?? "";
        if (lease.vtepIP !== record.underlayIP || lease.vtepMac !== mac || String(lkv.lease) !== leaseId) {
          const key = this.keys.lease(net, subnet);
          compare.push(modIs(key, Number(lkv.mod_revision)));
          ops.push(put(key, { ...lease, vtepIP: record.underlayIP, vtepMac: mac, renewed: now }, leaseId));
        }
      }
      const res = await this.txn("register_node", compare, ops);
      if (res.succeeded) return { record, leaseId, revision: Number(res.header.revision) };
    }
    throw new ConflictError(`node ${reg.name}: too many concurrent registrations, try again`);
  }

  /**
   * Gives `node` a subnet of `network`: the one it already holds, else `hint`
   * when free, else a free one. Create-if-absent on the lease key plus a
   * compare on the node key make it impossible for two nodes to share a subnet
   * or for one node to get two, whatever the interleaving of replicas.
   * `taken` is the caller's (possibly stale) view of leased subnets; etcd has the last word.
   */
  async allocateSubnet(args: {
    node: string;
    network: NetworkSpec;
    taken: ReadonlySet<string>;
    hint?: string;
  }): Promise<{ subnet: string; revision: number; created: boolean }> {
    const { node, network } = args;
    const nodeKey = this.keys.node(node);
    const pool = { cidr: parseCidr(network.cidr), nodePrefixLength: network.nodePrefixLength };
    const lost = new Set<string>();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS + 64; attempt++) {
      const kv = await this.getKv(nodeKey, "get_node");
      if (!kv) throw new NodeGoneError(node);
      const record = decode<NodeRecord>(kv);
      const leaseId = String(kv.lease ?? "0");
      const held = record.subnets[network.name];
      if (held) {
        const lkv = await this.getKv(this.keys.lease(network.name, held), "get_lease");
        if (lkv && decode<LeaseRecord>(lkv).node === node) return { subnet: held, revision: Number(lkv.mod_revision), created: false };
        delete record.subnets[network.name];
      }
      const taken = lost.size === 0 ? args.taken : new Set([...args.taken, ...lost]);
      const subnet = chooseSubnet(pool, node, taken, args.hint ?? held);
      if (!subnet) {
        // The caller's view may be stale: confirm with etcd before declaring the pool full.
        const actual = new Set((await this.listLeases(network.name)).map((l) => l.subnet));
        const retry = chooseSubnet(pool, node, actual);
        if (!retry) throw new PoolExhaustedError(network.name, network.cidr, 2 ** (network.nodePrefixLength - pool.cidr.prefix));
        lost.clear();
        args = { ...args, taken: actual };
        continue;
      }
      const now = new Date().toISOString();
      const leaseKey = this.keys.lease(network.name, subnet);
      const lease: LeaseRecord = {
        network: network.name,
        subnet,
        node,
        vtepIP: record.underlayIP,
        vtepMac: record.vtepMacs[network.name] ?? "",
        acquired: now,
        renewed: now,
      };
      const res = await this.txn(
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
  async releaseSubnet(node: string, network: string): Promise<void> {
    const nodeKey = this.keys.node(node);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const kv = await this.getKv(nodeKey, "get_node");
      if (!kv) return;
      const record = decode<NodeRecord>(kv);
      const held = record.subnets[network];
      if (!held) return;
      const leaseKey = this.keys.lease(network, held);
      const lkv = await this.getKv(leaseKey, "get_lease");
      const ops = [put(nodeKey, { ...record, subnets: Object.fromEntries(Object.entries(record.subnets).filter(([n]) => n !== network)) }, String(kv.lease ?? "0"))];
      const compare = [modIs(nodeKey, Number(kv.mod_revision))];
      if (lkv && decode<LeaseRecord>(lkv).node === node) {
        ops.push(del(leaseKey));
        compare.push(modIs(leaseKey, Number(lkv.mod_revision)));
      }
      const res = await this.txn("release_subnet", compare, ops);
      if (res.succeeded) return;
    }
    throw new ConflictError(`node ${node}: could not release its subnet of ${network}`);
  }

  // ---- leadership -------------------------------------------------------------

  /** Creates the leader key bound to `leaseId` if nobody holds it. True when we hold it now. */
  async tryLead(identity: string, leaseId: string): Promise<boolean> {
    const key = this.keys.leader();
    const res = await this.txn("campaign", [absent(key)], [put(key, { identity, since: new Date().toISOString() }, leaseId)], [get(key)]);
    if (res.succeeded) return true;
    const holder = firstKv(res.responses[0]);
    return !!holder && String(holder.lease) === leaseId;
  }

  async resign(leaseId: string): Promise<void> {
    const key = this.keys.leader();
    await this.txn("resign", [leaseIs(key, leaseId)], [del(key)]);
  }

  /**
   * Deletes, in one transaction that only commits while this replica still
   * holds the leader key, the given keys if unchanged since `modRevision`.
   * Returns false when leadership was lost or a key moved.
   */
  async deleteAsLeader(leaseId: string, victims: { key: string; modRevision: number }[]): Promise<boolean> {
    if (victims.length === 0) return true;
    const res = await this.txn(
      "gc_delete",
      [leaseIs(this.keys.leader(), leaseId), ...victims.map((v) => modIs(v.key, v.modRevision))],
      victims.map((v) => del(v.key)),
    );
    return res.succeeded;
  }
}
