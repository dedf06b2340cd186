import type { Logger } from "../log/index.js";
import type { Store, StoreWatch } from "../store/index.js";
import { Backoff } from "../retry/index.js";
import type { Change, Model } from "./model.js";

/**
 * Keeps the model equal to etcd: one snapshot, then the watch from the next
 * revision. When the watch is lost (compaction, etcd restart beyond what the
 * client resumes), re-lists and watches again from the new revision
 * (flannel#2470 looped forever instead).
 */
export class ModelSync {
  private watch?: StoreWatch;
  private stopped = false;
  private waiters: { revision: number; resolve: () => void }[] = [];
  loaded = false;

  constructor(
    private readonly store: Store,
    private readonly model: Model,
    private readonly onChange: (change: Change) => void,
    private readonly log: Logger,
    private readonly onRestart: () => void = () => {},
  ) {}

  /** Resolves once the first snapshot is loaded (retrying while etcd is unreachable). */
  async start(): Promise<void> {
    await this.resync();
  }

  private async resync(): Promise<void> {
    const backoff = new Backoff(200, 10_000);
    while (!this.stopped) {
      try {
        const snap = await this.store.snapshot();
        const change = this.model.load(snap);
        this.loaded = true;
        this.watch = await this.store.watch(snap.revision + 1, (events, revision) => this.handle(events, revision), (err) => this.lost(err));
        this.log.info({ revision: snap.revision, networks: snap.networks.length, nodes: snap.nodes.length, leases: snap.leases.length }, "view loaded from etcd");
        this.onChange(change);
        this.release();
        return;
      } catch (err) {
        const delay = backoff.next();
        this.log.warn({ err: String(err), retryInMs: Math.round(delay) }, "cannot load view from etcd; retrying");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private handle(events: Parameters<Model["apply"]>[0], revision: number): void {
    const change = this.model.apply(events, revision);
    this.onChange(change);
    this.release();
  }

  private lost(err: Error): void {
    if (this.stopped) return;
    this.log.warn({ err: String(err) }, "watch lost; re-listing");
    this.onRestart();
    void this.watch?.close();
    this.watch = undefined;
    void this.resync();
  }

  /** Resolves when the view has caught up with `revision` (e.g. the controller's own write). */
  waitFor(revision: number, timeoutMs = 15_000): Promise<void> {
    if (this.model.revision >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`view did not reach revision ${revision} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ revision, resolve: done });
    });
  }

  private release(): void {
    const ready = this.waiters.filter((w) => w.revision <= this.model.revision);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.revision > this.model.revision);
    ready.forEach((w) => w.resolve());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watch?.close();
  }
}
