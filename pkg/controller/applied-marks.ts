// Records, batched, that nodes' agents applied their first config (Kubernetes
// mode turns this into the Node's NetworkUnavailable=False). One transaction
// per batch instead of one write per join.
import type { Logger } from "../log/index.js";
import type { Store } from "../store/index.js";

/** Retry delay after a failed batch. */
const BATCH_DELAY_MS = 250;

export class AppliedMarks {
  private pending = new Set<string>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  mark(node: string): void {
    if (this.stopped) return;
    this.pending.add(node);
    // Written at once when idle; while a batch is being written, the next one gathers.
    if (!this.running) this.timer ??= setTimeout(() => void this.flush(), 0);
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    if (this.running) {
      return;
    }
    const names = [...this.pending];
    this.pending.clear();
    this.running = this.store.markNodesApplied(names).catch((err) => {
      this.log.warn({ nodes: names.length, err: String(err) }, "could not record that nodes applied their config; will retry");
      if (this.stopped) return;
      for (const n of names) this.pending.add(n);
      this.timer ??= setTimeout(() => void this.flush(), BATCH_DELAY_MS * 8);
    });
    await this.running;
    this.running = undefined;
    if (this.pending.size > 0 && !this.stopped) this.timer ??= setTimeout(() => void this.flush(), 0);
  }

  /** No more writes: the store is about to close (a retry timer would otherwise keep the process alive). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
