import type { Logger } from "../log/index.js";
import type { InvalidRecord, RecordKind, Store, StoreEvent, StoreWatch } from "../store/index.js";
import { Backoff } from "../retry/index.js";
import type { Change, Model } from "./model.js";

export interface SyncHooks {
  /** The watch was lost and the view is being rebuilt. */
  onRestart?: () => void;
  /** A stored value did not decode (counted by kind; logged here once per key and revision). */
  onInvalid?: (kind: RecordKind, key: string) => void;
}

/** While etcd is unreachable the view is re-listed this often at most: a lost watch must come back within about a second of etcd. */
const RESYNC_BACKOFF_CAP_MS = 1_000;

/**
 * Keeps the model equal to etcd: one snapshot, then the watch from the next
 * revision. When the watch is lost (compaction, etcd restart beyond what the
 * client resumes), the old watcher is closed and awaited, etcd is re-listed at
 * its current revision and watched again from there (flannel#2470 looped
 * forever instead). Each watch carries a generation: events delivered by a
 * watcher that has been replaced are dropped, and the model ignores any event
 * older than what it holds for the key, so a late event cannot bring back a
 * deleted lease or node.
 */
export class ModelSync {
  private watch?: StoreWatch;
  private stopped = false;
  private generation = 0;
  private resyncing?: Promise<void>;
  private again = false;
  private waiters: { revision: number; resolve: () => void }[] = [];
  loaded = false;

  constructor(
    private readonly store: Store,
    private readonly model: Model,
    private readonly onChange: (change: Change) => void,
    private readonly log: Logger,
    private readonly hooks: SyncHooks = {},
  ) {}

  /** Resolves once the first snapshot is loaded (retrying while etcd is unreachable). */
  async start(): Promise<void> {
    await this.restart();
  }

  /** One re-list at a time; a loss reported while one runs makes it run once more. */
  private restart(): Promise<void> {
    if (this.resyncing) {
      this.again = true;
      return this.resyncing;
    }
    this.resyncing = (async () => {
      do {
        this.again = false;
        await this.resync();
      } while (this.again && !this.stopped);
    })().finally(() => (this.resyncing = undefined));
    return this.resyncing;
  }

  private async resync(): Promise<void> {
    // Fence the old watch: nothing it still delivers may reach the model, and it must be gone before the re-list.
    const gen = ++this.generation;
    const old = this.watch;
    this.watch = undefined;
    await old?.close().catch(() => undefined);
    const backoff = new Backoff(100, RESYNC_BACKOFF_CAP_MS);
    while (!this.stopped) {
      try {
        const snap = await this.store.snapshot();
        if (this.stopped) return;
        this.reportInvalid(snap.invalid);
        const change = this.model.load(snap);
        this.loaded = true;
        const watch = await this.store.watch(
          snap.revision + 1,
          (events, revision) => {
            if (gen === this.generation && !this.stopped) this.handle(events, revision);
          },
          (err) => {
            if (gen === this.generation) this.lost(err);
          },
        );
        if (this.stopped) {
          await watch.close();
          return;
        }
        this.watch = watch;
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

  private reportInvalid(invalid: InvalidRecord[]): void {
    for (const r of invalid) {
      this.log.warn({ key: r.key, kind: r.kind, modRevision: r.modRevision, err: r.error }, "stored value does not decode; left out of the view");
      this.hooks.onInvalid?.(r.kind, r.key);
    }
  }

  private handle(events: StoreEvent[], revision: number): void {
    let change: Change;
    try {
      for (const ev of events) {
        if (ev.type === "invalid") this.reportInvalid([{ key: ev.rawKey, kind: ev.kind, error: ev.error, modRevision: ev.modRevision }]);
      }
      change = this.model.apply(events, revision);
    } catch (err) {
      // The model contains failures per event; anything reaching here is a bug: rebuild rather than run on a half-applied view.
      this.log.error({ err: String(err), revision }, "applying watch events failed; re-listing");
      this.lost(err as Error);
      return;
    }
    for (const f of change.failures) this.log.error({ key: f.key, err: f.error }, "watch event could not be applied; skipped");
    if (change.stale > 0) this.log.debug({ stale: change.stale, revision }, "ignored events older than the view");
    this.onChange(change);
    this.release();
  }

  private lost(err: Error): void {
    if (this.stopped) return;
    this.log.warn({ err: String(err) }, "watch lost; re-listing");
    this.hooks.onRestart?.();
    void this.restart();
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
    this.generation++;
    await this.watch?.close();
  }
}
