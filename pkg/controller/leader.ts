import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import type { Store } from "../store/index.js";
import { isPoolSubnet } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";

/**
 * Leader election through one etcd key bound to this replica's own etcd lease.
 * Written by hand rather than with etcd3's Election because its observer can
 * report a non-leader as leader; here leadership is exactly "the leader key
 * carries my lease", and leader-only writes compare exactly that.
 */
export class Leadership {
  private leaseId = "0";
  private leading = false;
  private stopped = false;
  private loop?: Promise<void>;
  private readonly wake = new AbortController();

  constructor(
    private readonly store: Store,
    private readonly identity: string,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
    private readonly onChange: (leading: boolean) => void,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** The lease to compare leader-only writes against ("0" when not leading). */
  get lease(): string {
    return this.leading ? this.leaseId : "0";
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
    const backoff = new Backoff(500, 10_000);
    const period = Math.max(500, (this.ttlSeconds * 1000) / 3);
    while (!this.stopped) {
      try {
        if (this.leaseId === "0" || (await this.store.keepAlive(this.leaseId)) <= 0) {
          this.set(false);
          this.leaseId = await this.store.grantLease(this.ttlSeconds);
        }
        this.set(await this.store.tryLead(this.identity, this.leaseId));
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
 * while this replica still holds the leader key and the key is unchanged.
 */
export async function collectGarbage(store: Store, leaderLease: string, log: Logger): Promise<number> {
  if (leaderLease === "0") return 0;
  const snap = await store.snapshot();
  const networks = new Map(snap.networks.map((n) => [n.value.name, n.value]));
  const nodes = new Map(snap.nodes.map((n) => [n.value.name, n.value]));
  const victims: { key: string; modRevision: number; why: string }[] = [];
  for (const l of snap.leases) {
    const lease = l.value;
    const key = store.keys.lease(lease.network, lease.subnet);
    const net = networks.get(lease.network);
    const node = nodes.get(lease.node);
    let why = "";
    if (!net) why = "network deleted";
    else if (!node) why = "node record gone";
    else if (!isPoolSubnet({ cidr: parseCidr(net.cidr), nodePrefixLength: net.nodePrefixLength }, lease.subnet)) why = "outside the pool";
    else if (node.subnets[lease.network] !== lease.subnet) why = "node holds another subnet";
    if (why) victims.push({ key, modRevision: l.modRevision, why });
  }
  if (victims.length === 0) return 0;
  const deleted = new Set(await store.deleteAsLeader(leaderLease, victims));
  for (const v of victims) if (deleted.has(v.key)) log.info({ key: v.key, reason: v.why }, "garbage-collected lease");
  return deleted.size;
}
