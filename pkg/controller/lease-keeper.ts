// Keeps a connected node's etcd lease alive, and re-registers the node when
// the lease expired anyway (etcd unreachable for longer than the TTL).
import type { Logger } from "../log/index.js";
import type { Store } from "../store/index.js";

export class LeaseKeeper {
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
    /** The lease to renew now. */
    private readonly lease: () => string,
    /** Registers the node again from what its agent last sent. */
    private readonly reregister: () => Promise<void>,
    private readonly node: () => string,
  ) {}

  /** A third of the TTL, between 0.5 s and 5 min. */
  get periodMs(): number {
    return Math.min(5 * 60_000, Math.max(500, (this.ttlSeconds * 1000) / 3));
  }

  /** `now`: renew at once (a rejoining node's lease may be close to expiry), then every period. */
  start(now = false): void {
    this.timer = setTimeout(() => void this.tick(), now ? 0 : this.periodMs);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      const ttl = await this.store.keepAlive(this.lease());
      if (ttl <= 0 && !this.stopped) {
        this.log.warn({ node: this.node() }, "node lease expired while connected; registering again");
        await this.reregister();
      }
    } catch (err) {
      this.log.warn({ node: this.node(), err: String(err) }, "lease renewal failed; will retry");
    }
    if (!this.stopped) this.start();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
