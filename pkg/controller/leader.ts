import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import type { Store } from "../store/index.js";
import { isPoolSubnet } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";

/** Thrown by a leader-only job that found, right before a write, that this replica no longer leads: the pass stops. */
export class DeposedError extends Error {
  constructor() {
    super("no longer the leader; pass abandoned");
  }
}

/** Election retries while etcd is unreachable are capped here, so a new leader is elected within about a second of etcd's return. */
const ELECTION_BACKOFF_CAP_MS = 1_000;
/** Leadership counts as held for this fraction of the TTL after the last confirmation (the key expires at 1.0). */
const VALIDITY_FRACTION = 0.8;

/**
 * Leader election through one etcd key bound to this replica's own etcd lease.
 * Written by hand rather than with etcd3's Election because its observer can
 * report a non-leader as leader; here leadership is exactly "the leader key
 * carries my lease", and leader-only etcd writes compare exactly that.
 *
 * Leadership is also bounded in time: it is held only until 0.8 TTL after the
 * start of the last round that confirmed it. A replica that was paused (SIGSTOP,
 * a long GC pause, a VM migration) past its TTL therefore knows on waking that
 * it may have been replaced, before its election loop has run again, and its
 * leader-only jobs stop at their next check.
 */
export class Leadership {
  private leaseId = "0";
  private leading = false;
  private validUntil = 0;
  private stopped = false;
  private loop?: Promise<void>;
  private readonly wake = new AbortController();

  constructor(
    private readonly store: Store,
    private readonly identity: string,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
    private readonly onChange: (leading: boolean) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get isLeader(): boolean {
    return this.leading && this.now() < this.validUntil;
  }

  /** The lease to compare leader-only writes against ("0" when not leading). */
  get lease(): string {
    return this.isLeader ? this.leaseId : "0";
  }

  /** Throws DeposedError unless this replica leads right now; call immediately before each leader-only write. */
  check(): string {
    const lease = this.lease;
    if (lease === "0") throw new DeposedError();
    return lease;
  }

  start(): void {
    this.loop = this.run();
  }

  private set(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.log.info({ identity: this.identity }, leading ? "elected leader" : "no longer leader");
    this.onChange(leading);
  }

  private async run(): Promise<void> {
    const backoff = new Backoff(200, ELECTION_BACKOFF_CAP_MS);
    const period = Math.max(300, (this.ttlSeconds * 1000) / 3);
    while (!this.stopped) {
      try {
        const started = this.now();
        if (this.leaseId === "0" || (await this.store.keepAlive(this.leaseId)) <= 0) {
          this.set(false);
          this.leaseId = await this.store.grantLease(this.ttlSeconds);
        }
        const leads = await this.store.tryLead(this.identity, this.leaseId);
        // The lease was renewed (or granted) no earlier than `started`, so it lives at least until started + TTL.
        if (leads) this.validUntil = started + this.ttlSeconds * 1000 * VALIDITY_FRACTION;
        this.set(leads);
        backoff.reset();
        await sleep(period, this.wake.signal);
      } catch (err) {
        // Cannot tell whether we still lead: stop acting as leader until etcd answers again.
        this.set(false);
        const delay = backoff.next();
        this.log.warn({ err: String(err), retryInMs: Math.round(delay) }, "leader election: etcd unreachable");
        await sleep(delay, this.wake.signal);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake.abort();
    await this.loop;
    if (this.leaseId !== "0") {
      // etcd3's close() would leave the lease and the leader key alive for a whole TTL.
      await this.store.revokeLease(this.leaseId).catch(() => undefined);
    }
    this.set(false);
  }
}

/**
 * Garbage collection, run by the leader: leases whose network or node record
 * is gone, or that lie outside their network's pool. Each deletion commits only
 * while this replica still holds the leader key and the key is unchanged;
 * leadership is also checked again right before the write (the pass may have
 * been paused). A lease whose network or node key holds a value that does not
 * decode is left alone: the record is there, only unreadable, and deleting
 * what depends on it would turn one bad value into lost subnets.
 */
export async function collectGarbage(store: Store, lease: string | (() => string), log: Logger): Promise<number> {
  const leaderLease = typeof lease === "string" ? () => lease : lease;
  if (leaderLease() === "0") return 0;
  const snap = await store.snapshot();
  const unreadable = new Set(snap.invalid.map((r) => r.key));
  const networks = new Map(snap.networks.map((n) => [n.value.name, n.value]));
  const nodes = new Map(snap.nodes.map((n) => [n.value.name, n.value]));
  const victims: { key: string; modRevision: number; why: string }[] = [];
  for (const l of snap.leases) {
    const lease = l.value;
    const key = store.keys.lease(lease.network, lease.subnet);
    const net = networks.get(lease.network);
    const node = nodes.get(lease.node);
    if ((!net && unreadable.has(store.keys.network(lease.network))) || (!node && unreadable.has(store.keys.node(lease.node)))) continue;
    let why = "";
    if (!net) why = "network deleted";
    else if (!node) why = "node record gone";
    else if (!isPoolSubnet({ cidr: parseCidr(net.cidr), nodePrefixLength: net.nodePrefixLength }, lease.subnet)) why = "outside the pool";
    else if (node.subnets[lease.network] !== lease.subnet) why = "node holds another subnet";
    if (why) victims.push({ key, modRevision: l.modRevision, why });
  }
  if (victims.length === 0) return 0;
  const current = leaderLease();
  if (current === "0") return 0;
  const deleted = new Set(await store.deleteAsLeader(current, victims));
  for (const v of victims) if (deleted.has(v.key)) log.info({ key: v.key, reason: v.why }, "garbage-collected lease");
  return deleted.size;
}
