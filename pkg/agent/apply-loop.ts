// The reconcile loop: one apply at a time, the latest desired state wins,
// failures retried with capped backoff, and a periodic resync that lets the
// dataplane repair drift. Knows nothing of gRPC: the agent feeds it items and
// hears back through callbacks.
import type { Logger } from "../log/index.js";
import { Backoff } from "../retry/index.js";
import { sameDesired } from "./desired.js";
import type { ApplyReason, ApplyReport, DataplanePort, NodeDesired } from "./dataplane-port.js";

export interface ApplyItem<T = unknown> {
  desired: NodeDesired;
  /** Controller revision this state reflects (0: not from a controller). */
  revision: number;
  /** Whatever the caller needs back in the callbacks (stream epoch, config). */
  tag: T;
}

export interface ApplyLoopOptions<T> {
  dataplane: Pick<DataplanePort, "apply">;
  log: Logger;
  /** 0 disables the periodic resync. */
  resyncIntervalMs: number;
  retryBaseMs?: number;
  retryCapMs?: number;
  random?: () => number;
  /** After a successful apply (or an update that changed nothing in the kernel's desired state). */
  onApplied(item: ApplyItem<T>, report: ApplyReport, reason: ApplyReason): Promise<void> | void;
  onFailed(item: ApplyItem<T>, err: Error, reason: ApplyReason): void;
}

const NO_CHANGES: ApplyReport = { changes: 0, byKind: {}, durationMs: 0 };

export class ApplyLoop<T = unknown> {
  /** What to apply next; a resync without an item means "whatever was applied last, when it starts". */
  private pending?: { item?: ApplyItem<T>; reason: ApplyReason };
  private applied?: ApplyItem<T>;
  private running?: Promise<void>;
  private retryTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private stopped = false;
  /** False after a failed apply: the kernel may be anywhere between two states, so nothing counts as unchanged. */
  private kernelMatchesApplied = false;
  private readonly backoff: Backoff;
  /** Applies that reached the dataplane (not those skipped as unchanged). */
  dataplaneCalls = 0;

  constructor(private readonly opts: ApplyLoopOptions<T>) {
    this.backoff = new Backoff(opts.retryBaseMs ?? 250, opts.retryCapMs ?? 30_000, opts.random);
  }

  /** The last state that reached the kernel. */
  get lastApplied(): ApplyItem<T> | undefined {
    return this.applied;
  }

  /** True while nothing is running, queued or waiting for a retry. */
  get idle(): boolean {
    return !this.running && !this.pending && !this.retryTimer;
  }

  start(): void {
    this.scheduleResync();
  }

  /** Queues `item`, replacing anything queued before it. */
  submit(item: ApplyItem<T>): void {
    if (this.stopped) return;
    this.pending = { item, reason: "update" };
    this.kick();
  }

  /** Re-applies the last applied state now (also what the timer does). */
  resync(): void {
    if (this.stopped || !this.applied || this.pending || this.retryTimer || this.running) return;
    // Not `this.applied` now: an apply may be running, and the resync must not bring back what it replaces.
    this.pending = { reason: "resync" };
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resyncTimer);
    this.retryTimer = undefined;
    await this.running;
  }

  private scheduleResync(): void {
    clearTimeout(this.resyncTimer);
    if (this.stopped || this.opts.resyncIntervalMs <= 0) return;
    this.resyncTimer = setTimeout(() => {
      this.resync();
      this.scheduleResync();
    }, this.opts.resyncIntervalMs);
    this.resyncTimer.unref?.();
  }

  private kick(): void {
    // A waiting retry keeps its backoff even when newer state arrives: a
    // failing kernel must not be hammered by a stream of updates.
    if (this.stopped || this.running || this.retryTimer || !this.pending) return;
    const { reason } = this.pending;
    const item = this.pending.item ?? this.applied;
    this.pending = undefined;
    if (!item) return;
    this.running = this.run(item, reason).finally(() => {
      this.running = undefined;
      this.kick();
    });
  }

  private async run(item: ApplyItem<T>, reason: ApplyReason): Promise<void> {
    let report: ApplyReport;
    if (reason === "update" && this.kernelMatchesApplied && this.applied && sameDesired(this.applied.desired, item.desired)) {
      report = NO_CHANGES;
    } else {
      try {
        this.dataplaneCalls++;
        report = await this.opts.dataplane.apply(item.desired, reason);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        this.kernelMatchesApplied = false;
        // Retry whatever is newest when the timer fires: the failed item unless replaced meanwhile.
        if (!this.pending) this.pending = { item, reason };
        const delay = this.backoff.next();
        this.opts.log.debug({ delayMs: Math.round(delay) }, "apply will be retried");
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.kick();
        }, delay);
        this.opts.onFailed(item, error, reason);
        return;
      }
    }
    this.backoff.reset();
    this.applied = item;
    this.kernelMatchesApplied = true;
    try {
      await this.opts.onApplied(item, report, reason);
    } catch (err) {
      this.opts.log.error({ err: String(err) }, "after-apply step failed");
    }
  }
}
