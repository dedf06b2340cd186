// The reconcile loop: one flush at a time; whatever arrived meanwhile is
// flushed next, coalesced (the dataplane holds it as pending keys); failures
// retried with capped backoff; a periodic resync that reads the kernel back
// and repairs drift. Knows nothing of gRPC or of the kernel: the agent gives
// it a flush function and hears back through callbacks. It also keeps the
// times the watchdog behind /healthz looks at.
import type { Logger } from "../log/index.js";
import { Backoff } from "../retry/index.js";
import type { ApplyReason } from "../dataplane/types.js";

export interface ApplyLoopOptions<R> {
  /** Writes what is pending (or, for "resync", everything). */
  flush(reason: ApplyReason): Promise<R>;
  log: Logger;
  /** 0 disables the periodic resync. */
  resyncIntervalMs: number;
  retryBaseMs?: number;
  retryCapMs?: number;
  random?: () => number;
  onApplied(result: R, reason: ApplyReason): Promise<void> | void;
  onFailed(err: Error, reason: ApplyReason): void;
  now?: () => number;
}

export class ApplyLoop<R = unknown> {
  /** Something waits to be flushed; "resync" wins over "update" (it covers it). */
  private pending?: ApplyReason;
  private running?: Promise<void>;
  private retryTimer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private stopped = false;
  private readonly backoff: Backoff;
  private readonly now: () => number;
  /** When the running flush started (watchdog). */
  private runningSince?: number;
  /** When the oldest change not yet handed to a flush arrived. */
  private pendingSince?: number;
  /** When the oldest change not yet successfully flushed arrived (watchdog; survives failed retries). */
  private unappliedSince?: number;
  /** When a flush last succeeded. */
  lastSuccessAt?: number;
  /** Flushes started. */
  flushes = 0;
  everApplied = false;

  constructor(private readonly opts: ApplyLoopOptions<R>) {
    this.backoff = new Backoff(opts.retryBaseMs ?? 250, opts.retryCapMs ?? 30_000, opts.random);
    this.now = opts.now ?? Date.now;
  }

  /** True while nothing is running, queued or waiting for a retry. */
  get idle(): boolean {
    return !this.running && !this.pending && !this.retryTimer;
  }

  start(): void {
    this.scheduleResync();
  }

  /** Something changed: flush it as soon as the running flush (if any) is done. */
  submit(): void {
    if (this.stopped) return;
    this.pendingSince ??= this.now();
    this.unappliedSince ??= this.pendingSince;
    this.pending ??= "update";
    this.kick();
  }

  /** Reads the kernel back and repairs everything now (also what the timer does); skipped while busy. */
  resync(): void {
    if (this.stopped || !this.everApplied || this.pending || this.retryTimer || this.running) return;
    this.pending = "resync";
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resyncTimer);
    this.retryTimer = undefined;
    await this.running;
  }

  /**
   * Why the loop is unhealthy, or undefined: a flush running longer than
   * `boundMs`, or changes pending longer than `boundMs` without a successful flush since.
   */
  stuck(boundMs: number): string | undefined {
    const now = this.now();
    if (this.runningSince !== undefined && now - this.runningSince > boundMs) return `an apply has been running for ${Math.round((now - this.runningSince) / 1000)} s`;
    if (this.unappliedSince !== undefined && now - this.unappliedSince > boundMs) {
      return `changes pending for ${Math.round((now - this.unappliedSince) / 1000)} s without a successful apply`;
    }
    return undefined;
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
    // A waiting retry keeps its backoff even when newer changes arrive: a
    // failing kernel must not be hammered by a stream of updates.
    if (this.stopped || this.running || this.retryTimer || !this.pending) return;
    const reason = this.pending;
    this.pending = undefined;
    // Changes arriving from here on are pending for the next flush.
    this.pendingSince = undefined;
    this.running = this.run(reason).finally(() => {
      this.running = undefined;
      this.runningSince = undefined;
      this.kick();
    });
  }

  private async run(reason: ApplyReason): Promise<void> {
    this.flushes++;
    this.runningSince = this.now();
    let result: R;
    try {
      result = await this.opts.flush(reason);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      // Retry when the timer fires; what failed stays pending (the dataplane re-reads the kernel then).
      if (!this.pending || reason === "resync") this.pending = reason;
      const delay = this.backoff.next();
      this.opts.log.debug({ delayMs: Math.round(delay) }, "apply will be retried");
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.kick();
      }, delay);
      this.opts.onFailed(error, reason);
      return;
    }
    this.backoff.reset();
    this.lastSuccessAt = this.now();
    // What arrived while this flush ran is still unapplied; everything before it is in the kernel.
    this.unappliedSince = this.pendingSince;
    this.everApplied = true;
    try {
      await this.opts.onApplied(result, reason);
    } catch (err) {
      this.opts.log.error({ err: String(err) }, "after-apply step failed");
    }
  }
}
