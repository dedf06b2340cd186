// Registering a node and keeping its subnet leases matching its membership,
// in one etcd transaction per attempt. The allocation policy lives here
// (ipam.chooseSubnet over the controller's view); the store only commits a
// given choice, and etcd's compares have the last word.
import { chooseSubnet } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";
import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import { ConflictError, PoolExhaustedError, type LeaseRecord, type NetworkSpec, type NodeRecord, type NodeRegistration, type NodeState, type Store } from "../store/index.js";
import type { LeasePool } from "./lease-pool.js";
import type { ControllerMetrics } from "./metrics.js";
import type { Model } from "./model.js";
import type { SubnetReservations } from "./reservations.js";

export interface AllocatorDeps {
  store: Store;
  model: Model;
  metrics: ControllerMetrics;
  log: Logger;
  leaseTtlSeconds: number;
  /** Bounds registrations in flight (a reconnect storm of N agents must not become N concurrent etcd transactions). */
  limit: <T>(fn: () => Promise<T>) => Promise<T>;
  /** etcd leases granted ahead (a new node's join then makes one etcd call, not two). */
  leases?: LeasePool;
  /** Subnets this replica's registrations chose and the view does not show yet (see reservations.ts). */
  reservations?: SubnetReservations;
  /** The view's catching up (ModelSync): a committed claim's hold goes once the view has reached its revision. */
  sync?: { waitFor(revision: number): Promise<void> };
}

/** Runs at most `n` of the given tasks at once; the rest wait in order. */
export function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: (() => void)[] = [];
  return async (fn) => {
    if (running >= n) await new Promise<void>((r) => queue.push(r));
    running++;
    try {
      return await fn();
    } finally {
      running--;
      queue.shift()?.();
    }
  };
}

export interface NodeIntent {
  reg: NodeRegistration;
  /** Networks the node belongs to. */
  member: NetworkSpec[];
  /** Subnets the agent had before, by network: preferred when free. */
  hints: Record<string, string>;
  /** Why the node has no subnet, by network; updated here. */
  errors: Map<string, string>;
}

export interface SyncResult {
  /** Revision of the write; 0 when nothing needed writing. */
  revision: number;
  leaseId: string;
  /** The etcd lease was granted just now (a reused one may be close to expiry and wants renewing). */
  fresh: boolean;
}

const MAX_ATTEMPTS = 128;

/**
 * The subnets of `network` the view knows as taken, plus those lost in races
 * and those other registrations of this replica hold, without copying the view.
 */
function takenIn(model: Model, network: string, node: string, lost: ReadonlySet<string> | undefined, reservations: SubnetReservations | undefined): ReadonlySet<string> {
  const m = model.leases.get(network) ?? new Map<string, LeaseRecord>();
  const held = reservations?.held(network);
  return {
    has: (s: string) => m.has(s) || !!lost?.has(s) || !!reservations?.heldByOther(network, s, node),
    // Holds left out: chooseSubnet only uses the size to tell a full pool early.
    get size() {
      return m.size + (lost?.size ?? 0);
    },
    *[Symbol.iterator]() {
      yield* m.keys();
      if (lost) yield* lost;
      if (held) for (const [s, holder] of held) if (holder !== node && !m.has(s) && !lost?.has(s)) yield s;
    },
  } as ReadonlySet<string>;
}

function sameRecord(a: NodeRecord, b: NodeRecord): boolean {
  return JSON.stringify({ ...a, lastSeen: "" }) === JSON.stringify({ ...b, lastSeen: "" });
}

/**
 * Writes the node's registration and brings its leases in line with
 * `member`: keeps held subnets (rewriting them when the underlay IP, a MAC
 * or the etcd lease changed), claims a subnet where it has none, releases
 * where it no longer belongs — all in one transaction. With `onlyIfChanged`,
 * writes nothing when the record and leases are already right.
 * A granted etcd lease that ends up unused (another replica registered the
 * node first) is revoked.
 */
export async function syncNode(deps: AllocatorDeps, intent: NodeIntent, onlyIfChanged = false): Promise<SyncResult> {
  return deps.limit(() => syncNodeNow(deps, intent, onlyIfChanged));
}

function sameStrings(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

/**
 * The common reconnect (controller restart, agent restart, network blip):
 * when the view already holds exactly what the agent registers — same
 * record, a live etcd lease, every member network's subnet leased to it with
 * its current underlay IP and MAC, nothing to release — nothing needs
 * writing and no etcd round trip is made. N agents reconnecting to a new
 * controller then cost no etcd writes at all (they used to cost two reads
 * and a txn each, only to refresh lastSeen). The caller renews the etcd
 * lease right after (a reused lease may be close to expiry); should the view
 * be stale and the node gone in etcd, the watch's delete ends the stream and
 * the agent registers again through the full path.
 */
export function unchangedInView(model: Model, intent: NodeIntent): SyncResult | undefined {
  const { reg, member } = intent;
  const entry = model.nodes.get(reg.name);
  if (!entry || entry.lease === "0") return undefined;
  if (entry.underlayIP !== reg.underlayIP || entry.agentVersion !== reg.agentVersion || entry.uplinkMtu !== reg.uplinkMtu) return undefined;
  if (!sameStrings(entry.labels, reg.labels) || !sameStrings(entry.vtepMacs, { ...entry.vtepMacs, ...reg.vtepMacs })) return undefined;
  const memberNames = new Set(member.map((n) => n.name));
  for (const net of Object.keys(entry.subnets)) if (!memberNames.has(net) && model.networks.has(net)) return undefined;
  for (const spec of member) {
    const subnet = entry.subnets[spec.name];
    const lease = subnet ? model.leases.get(spec.name)?.get(subnet) : undefined;
    if (!lease || lease.node !== reg.name || lease.vtepIP !== reg.underlayIP || lease.vtepMac !== (entry.vtepMacs[spec.name] ?? "")) return undefined;
  }
  for (const spec of member) intent.errors.delete(spec.name);
  for (const net of [...intent.errors.keys()]) if (!memberNames.has(net)) intent.errors.delete(net);
  return { revision: 0, leaseId: entry.lease, fresh: false };
}

async function syncNodeNow(deps: AllocatorDeps, intent: NodeIntent, onlyIfChanged: boolean): Promise<SyncResult> {
  const { store, model, metrics, log } = deps;
  const { reg, member, errors } = intent;
  const memberNames = new Set(member.map((n) => n.name));
  const lost = new Map<string, Set<string>>();
  const backoff = new Backoff(2, 250);
  let granted: string | undefined;
  /** Subnets held for this registration's current claims; let go unless a commit keeps them until the view has it. */
  let holds: LeaseRecord[] = [];
  const release = (claims: LeaseRecord[]) => claims.forEach((c) => deps.reservations?.release(c.network, c.subnet, c.node));
  const releaseHolds = () => {
    release(holds);
    holds = [];
  };
  // A pooled lease is young enough to need no renewal at once (lease-pool.ts): fresh like one granted now.
  const grant = async () => (deps.leases ? (await deps.leases.take()).id : store.grantLease(deps.leaseTtlSeconds));
  try {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      releaseHolds();
      if (attempt > 0) await sleep(backoff.next());
      // A node the view has never seen is most likely new: skip the read and
      // commit "create if absent" right away (one round trip less per join of
      // a new node); if etcd disagrees, the next attempt reads.
      const state: NodeState = attempt === 0 && !model.nodes.has(reg.name) ? { name: reg.name, leases: new Map() } : await store.readNodeState(reg.name);
      // A node key that exists is bound to a live lease (etcd deletes keys with their lease), so no
      // keep-alive round trip here: the session's LeaseKeeper renews it right after the join.
      // Should it expire in between, the commit fails with "lease not found" and the next attempt re-reads.
      let leaseId = state.node?.lease ?? "0";
      if (leaseId === "0") leaseId = granted ??= await grant();
      else if (granted) {
        // Lost the race to register: the node has a live lease already.
        await store.revokeLease(granted).catch(() => undefined);
        granted = undefined;
      }
      const now = new Date().toISOString();
      const old = state.node?.record;
      const subnets: Record<string, string> = {};
      const record: NodeRecord = {
        name: reg.name,
        underlayIP: reg.underlayIP,
        labels: reg.labels,
        agentVersion: reg.agentVersion,
        uplinkMtu: reg.uplinkMtu,
        // Keep MACs for networks the agent did not mention (it may not have created those devices yet).
        vtepMacs: { ...(old?.vtepMacs ?? {}), ...reg.vtepMacs },
        subnets,
        lastSeen: now,
        ...(old?.appliedAt ? { appliedAt: old.appliedAt } : {}),
      };
      const claims: LeaseRecord[] = [];
      const rewrites: LeaseRecord[] = [];
      const releases: LeaseRecord[] = [];
      for (const [net, held] of state.leases) {
        if (!memberNames.has(net) && model.networks.has(net)) {
          releases.push(held.record);
          continue;
        }
        subnets[net] = held.record.subnet;
        const mac = record.vtepMacs[net] ?? "";
        if (held.record.vtepIP !== record.underlayIP || held.record.vtepMac !== mac || held.lease !== leaseId) {
          rewrites.push({ ...held.record, vtepIP: record.underlayIP, vtepMac: mac, renewed: now });
        }
      }
      for (const spec of member) {
        if (subnets[spec.name]) {
          errors.delete(spec.name);
          continue;
        }
        const subnet = await choose(deps, spec, reg.name, intent.hints[spec.name], lost.get(spec.name));
        if (!subnet) {
          const err = new PoolExhaustedError(spec.name, spec.cidr, 2 ** (spec.nodePrefixLength - parseCidr(spec.cidr).prefix));
          metrics.allocationFailures.inc({ network: spec.name, reason: "pool_exhausted" });
          if (errors.get(spec.name) !== err.message) log.error({ node: reg.name, network: spec.name, err: err.message }, "no subnet for node");
          errors.set(spec.name, err.message);
          continue;
        }
        errors.delete(spec.name);
        subnets[spec.name] = subnet;
        const claim = { network: spec.name, subnet, node: reg.name, vtepIP: record.underlayIP, vtepMac: record.vtepMacs[spec.name] ?? "", acquired: now, renewed: now };
        claims.push(claim);
        deps.reservations?.hold(claim.network, claim.subnet, claim.node);
        holds.push(claim);
      }
      for (const net of [...errors.keys()]) if (!memberNames.has(net)) errors.delete(net);
      if (onlyIfChanged && state.node && old && leaseId === state.node.lease && claims.length + rewrites.length + releases.length === 0 && sameRecord(old, record)) {
        return { revision: 0, leaseId, fresh: false };
      }
      let res;
      try {
        res = await store.commitNode(state, { record, leaseId, claims, rewrites, releases });
      } catch (err) {
        if (!/lease not found/i.test(String(err))) throw err;
        if (leaseId === granted) granted = undefined; // it expired: the next attempt takes another
        continue; // the node's lease expired between the read and the write
      }
      if (res.ok) {
        // Committed: the holds stay until the view shows the leases (or gives up waiting for it).
        const kept = holds;
        holds = [];
        if (kept.length > 0) {
          const letGo = () => release(kept);
          if (deps.sync) deps.sync.waitFor(res.revision).then(letGo, letGo);
          else letGo();
        }
        const fresh = leaseId === granted;
        if (leaseId === granted) granted = undefined;
        for (const c of claims) {
          metrics.allocations.inc({ network: c.network });
          log.info({ node: reg.name, network: c.network, subnet: c.subnet }, "subnet leased");
        }
        for (const r of releases) log.info({ node: reg.name, network: r.network }, "subnet released: node no longer matches the network's nodeSelector");
        return { revision: res.revision, leaseId, fresh };
      }
      for (const t of res.taken) {
        let set = lost.get(t.network);
        if (!set) lost.set(t.network, (set = new Set()));
        set.add(t.subnet);
      }
    }
    throw new ConflictError(`node ${reg.name}: could not register after ${MAX_ATTEMPTS} attempts (too many concurrent changes)`);
  } finally {
    releaseHolds();
    if (granted) await store.revokeLease(granted).catch(() => undefined);
  }
}

/** A free subnet of `spec` for `node`: the hint when free, else by the node's stable starting point. */
async function choose(deps: AllocatorDeps, spec: NetworkSpec, node: string, hint: string | undefined, lost: Set<string> | undefined): Promise<string | undefined> {
  const pool = { cidr: parseCidr(spec.cidr), nodePrefixLength: spec.nodePrefixLength };
  const subnet = chooseSubnet(pool, node, takenIn(deps.model, spec.name, node, lost, deps.reservations), hint);
  if (subnet) return subnet;
  // The view may be stale: confirm with etcd before declaring the pool full.
  const actual = new Set((await deps.store.listLeases(spec.name)).filter((l) => l.node !== node).map((l) => l.subnet));
  return chooseSubnet(pool, node, actual, hint);
}
