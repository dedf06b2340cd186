// What /healthz and /readyz of the controller mean. Healthy: etcd answered
// within a bound and the event loop is not stalled (a process that answers
// HTTP but cannot reach etcd, or whose loop is blocked, is no use to its
// agents and should be restarted). Ready: healthy, plus the work that must
// precede serving (the gRPC port bound, the etcd view loaded, in Kubernetes
// mode the informer lists).

export interface HealthOptions {
  /** Asks etcd something cheap; rejects when etcd does not answer. */
  probe: () => Promise<unknown>;
  /** /healthz fails once etcd has not answered for longer than this. */
  etcdUnreachableMs?: number;
  /** /healthz fails while the event loop runs this much late (or has not ticked for this long). */
  stallMs?: number;
  /** How often etcd is probed and the loop measured. */
  intervalMs?: number;
  now?: () => number;
}

export const DEFAULT_ETCD_UNREACHABLE_MS = 30_000;
export const DEFAULT_STALL_MS = 5_000;

export class Health {
  private lastEtcdAnswer: number;
  private lastTick: number;
  private lagMs = 0;
  private timer?: NodeJS.Timeout;
  private probing = false;
  private readonly now: () => number;
  readonly etcdUnreachableMs: number;
  readonly stallMs: number;
  readonly intervalMs: number;

  constructor(private readonly opts: HealthOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.etcdUnreachableMs = opts.etcdUnreachableMs ?? DEFAULT_ETCD_UNREACHABLE_MS;
    this.stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    this.intervalMs = opts.intervalMs ?? 1_000;
    // Start-up counts as an answer: the bound runs from here.
    this.lastEtcdAnswer = this.lastTick = this.now();
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One measurement: how late this tick is, and an etcd probe (one at a time). */
  tick(): void {
    const now = this.now();
    this.lagMs = Math.max(0, now - this.lastTick - this.intervalMs);
    this.lastTick = now;
    if (this.probing) return;
    this.probing = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("timeout")), Math.max(this.intervalMs, 2_000))));
    Promise.race([this.opts.probe(), deadline])
      .then(() => (this.lastEtcdAnswer = this.now()))
      .catch(() => undefined)
      .finally(() => {
        clearTimeout(timer);
        this.probing = false;
      });
  }

  /** Seconds since etcd last answered a probe. */
  get etcdSilenceSeconds(): number {
    return (this.now() - this.lastEtcdAnswer) / 1000;
  }

  /** Problems that make the process unhealthy; empty when healthy. */
  problems(): string[] {
    const now = this.now();
    const out: string[] = [];
    const silent = now - this.lastEtcdAnswer;
    if (silent > this.etcdUnreachableMs) out.push(`etcd unreachable for ${Math.round(silent / 1000)} s (bound ${this.etcdUnreachableMs / 1000} s)`);
    const late = Math.max(this.lagMs, now - this.lastTick - this.intervalMs);
    if (late > this.stallMs) out.push(`event loop stalled ${Math.round(late)} ms (bound ${this.stallMs} ms)`);
    return out;
  }
}
