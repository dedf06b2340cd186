// etcd leases granted ahead of the joins that need them. A new node's
// registration needs a lease of its own (its keys expire with it), and
// granting it was a round trip in front of the registration txn on every
// join. Each lease taken is replaced by one granted in the background, so
// during a join storm the grants run beside the registrations instead of
// before them, and an idle controller holds only the few it had.
import type { Logger } from "../log/index.js";

export interface LeaseSource {
  grantLease(ttlSeconds: number): Promise<string>;
  revokeLease(leaseId: string): Promise<void>;
}

export interface TakenLease {
  id: string;
  /** Granted just now, not taken from the pool. */
  fresh: boolean;
}

/** Pooled leases at most; also the most grants in flight for the pool. */
const DEFAULT_POOL_SIZE = 32;

export class LeasePool {
  private readonly ready: { id: string; at: number }[] = [];
  private granting = 0;
  private stopped = false;

  constructor(
    private readonly source: LeaseSource,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
    private readonly size = DEFAULT_POOL_SIZE,
  ) {}

  /**
   * A pooled lease granted less than a sixth of the TTL ago, else one granted
   * now. A sixth: the session's first renewal comes a third of the TTL after
   * the join, so a pooled lease still has half its TTL to spare then and
   * needs no renewal at once (which a join storm would pay N times).
   */
  async take(): Promise<TakenLease> {
    // Older ones are revoked (nothing is bound to them), not renewed: a renewal would cost what a grant costs.
    const oldest = performance.now() - (this.ttlSeconds * 1000) / 6;
    while (this.ready.length > 0 && this.ready[0].at < oldest) this.revoke(this.ready.shift()!.id);
    const pooled = this.ready.pop();
    this.refill();
    if (pooled) return { id: pooled.id, fresh: false };
    return { id: await this.source.grantLease(this.ttlSeconds), fresh: true };
  }

  private refill(): void {
    if (this.stopped || this.ready.length + this.granting >= this.size) return;
    this.granting++;
    this.source
      .grantLease(this.ttlSeconds)
      .then((id) => {
        if (this.stopped) this.revoke(id);
        else this.ready.push({ id, at: performance.now() });
      })
      .catch((err) => this.log.debug({ err: String(err) }, "could not grant a lease ahead; joins grant their own"))
      .finally(() => this.granting--);
  }

  /** No more grants (the store is about to close); pooled leases are revoked, best effort (else they expire with their TTL). */
  stop(): void {
    this.stopped = true;
    for (const l of this.ready.splice(0)) this.revoke(l.id);
  }

  private revoke(id: string): void {
    this.source.revokeLease(id).catch(() => undefined);
  }
}
