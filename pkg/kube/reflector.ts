// List-then-watch of one kind of object, as client-go's reflector does it:
// list (paged) to get the full set and a resourceVersion, watch from there
// with bookmarks, re-watch from the last seen resourceVersion when the server
// ends a watch, re-list on 410 Gone (the version was compacted) and on any
// error, with capped exponential backoff, so an API server restart or an
// expired watch costs one re-list and loses no change.
import { Watch, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";

export interface ListPage<T> {
  items: T[];
  resourceVersion: string;
  continue?: string;
}

/** client-node's Watch.watch; replaceable so a test can steer one watch (e.g. from an expired version). */
export type WatchFn = (
  path: string,
  query: Record<string, string | number | boolean | undefined>,
  // Watch events carry raw JSON of whatever kind is watched.
  onEvent: (type: string, obj: any) => void,
  done: (err: unknown) => void,
) => Promise<AbortController>;

export interface ReflectorOptions<T, P> {
  /** For logs, e.g. "overlaynetworks". */
  what: string;
  kc: KubeConfig;
  /** One page of the list; `cont` is the continue token of the previous page. */
  listPage(cont: string | undefined): Promise<ListPage<T>>;
  /** Collection URL path for the watch, e.g. /api/v1/nodes. */
  watchPath: string;
  /** What callers see of an object; an event that does not change it is not reported. */
  project(obj: T): P;
  key(obj: T): string;
  /** Called with the whole current set after each change, and with the names that left it. */
  onChange(items: P[], deleted: string[]): void;
  log: Logger;
  /** Every failed list or watch (after it is logged); the loop retries by itself. */
  onError?(err: unknown): void;
  /** An object that `key` or `project` refused (it is logged and skipped). */
  onInvalid?(what: string, err: unknown): void;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  watch?: WatchFn;
  /** Asked of the server per watch; the client gives up on a watch silent for this + 30 s. */
  watchTimeoutSeconds?: number;
}

interface RawObject {
  metadata?: { name?: string; resourceVersion?: string };
  code?: number;
  reason?: string;
  message?: string;
}

class Gone extends Error {}

export class Reflector<T, P> {
  private readonly current = new Map<string, P>();
  private readonly stopSignal = new AbortController();
  private watchAbort?: AbortController;
  private loop?: Promise<void>;
  private synced = false;
  private readonly backoff: Backoff;
  /** Number of full lists so far: tests and metrics can see re-lists happen. */
  lists = 0;
  /** Number of watches that ended in 410 Gone. */
  expired = 0;

  constructor(private readonly opts: ReflectorOptions<T, P>) {
    this.backoff = new Backoff(opts.backoffBaseMs ?? 200, opts.backoffCapMs ?? 30_000);
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  items(): P[] {
    return [...this.current.values()];
  }

  async stop(): Promise<void> {
    this.stopSignal.abort();
    this.watchAbort?.abort();
    await this.loop;
  }

  private get stopped(): boolean {
    return this.stopSignal.signal.aborted;
  }

  private async run(): Promise<void> {
    const { log, what } = this.opts;
    let rv: string | undefined;
    while (!this.stopped) {
      let watchStarted = 0;
      try {
        if (rv === undefined) rv = await this.list();
        watchStarted = Date.now();
        rv = await this.watch(rv);
        // A server may end a watch at once (e.g. shutting down): back off rather than spin.
        if (Date.now() - watchStarted < 1000) await sleep(this.backoff.next(), this.stopSignal.signal);
        else this.backoff.reset();
      } catch (err) {
        if (this.stopped) break;
        rv = undefined;
        // Only a watch that held for a while proves the server healthy; a list alone does not
        // (a server that answers every watch with 410 must not cause a tight re-list loop).
        if (watchStarted && Date.now() - watchStarted > 10_000) this.backoff.reset();
        const delay = this.backoff.next();
        if (err instanceof Gone) {
          this.expired++;
          log.info({ what, retryInMs: Math.round(delay) }, "watch expired (410 Gone); re-listing");
        } else {
          this.opts.onError?.(err);
          log.warn({ what, err: errorText(err), retryInMs: Math.round(delay) }, "list/watch failed; re-listing after backoff");
        }
        await sleep(delay, this.stopSignal.signal);
      }
    }
  }

  /** Full paged list; replaces the current set and reports what changed. */
  private async list(): Promise<string> {
    const objs: T[] = [];
    let cont: string | undefined;
    let rv = "";
    do {
      const page = await this.opts.listPage(cont);
      objs.push(...page.items);
      rv = page.resourceVersion;
      cont = page.continue || undefined;
      if (this.stopped) return rv; // a partial list must not look like deletions
    } while (cont);
    this.lists++;
    const next = new Map<string, P>();
    for (const o of objs) {
      const entry = this.decode(o);
      if (entry) next.set(entry[0], entry[1]);
    }
    const deleted = [...this.current.keys()].filter((k) => !next.has(k));
    let changed = deleted.length > 0 || !this.synced;
    for (const [k, p] of next) if (!changed && !same(this.current.get(k), p)) changed = true;
    this.current.clear();
    for (const [k, p] of next) this.current.set(k, p);
    this.synced = true;
    if (changed) this.emit(deleted);
    return rv;
  }

  /** One watch from `rv`; resolves with the last resourceVersion seen when the server ends it normally. */
  private watch(rv: string): Promise<string> {
    const { kc, watchPath, log, what } = this.opts;
    const timeoutSeconds = this.opts.watchTimeoutSeconds ?? 300;
    let last = rv;
    return new Promise<string>((resolve, reject) => {
      let finished = false;
      let watchdog: NodeJS.Timeout | undefined;
      const onStop = () => finish();
      const finish = (err?: unknown) => {
        if (finished) return;
        finished = true;
        clearTimeout(watchdog);
        this.stopSignal.signal.removeEventListener("abort", onStop);
        this.watchAbort?.abort();
        if (err) reject(err);
        else resolve(last);
      };
      // A half-open connection (peer gone without a FIN) never ends by itself.
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => finish(new Error(`watch silent for ${timeoutSeconds + 30} s`)), (timeoutSeconds + 30) * 1000);
      };
      arm();
      const onEvent = (type: string, obj: RawObject) => {
        if (finished) return;
        arm();
        if (type === "ERROR") {
          if (obj?.code === 410 || obj?.reason === "Expired" || obj?.reason === "Gone") finish(new Gone(obj?.message ?? "410 Gone"));
          else finish(new Error(`watch error: ${obj?.message ?? JSON.stringify(obj)}`));
          return;
        }
        const objRv = obj?.metadata?.resourceVersion;
        if (objRv) last = objRv;
        if (type === "BOOKMARK") return;
        const entry = this.decode(obj as unknown as T);
        if (!entry) return;
        const [key, p] = entry;
        if (type === "DELETED") {
          if (this.current.delete(key)) this.emit([key]);
        } else if (type === "ADDED" || type === "MODIFIED") {
          if (!same(this.current.get(key), p)) {
            this.current.set(key, p);
            this.emit([]);
          }
        }
      };
      const watch: WatchFn = this.opts.watch ?? ((...args) => new Watch(kc).watch(...args));
      watch(watchPath, { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds }, onEvent, (err: unknown) => {
          if (this.stopped) return finish();
          const status = (err as { statusCode?: number } | null)?.statusCode;
          if (status === 410) return finish(new Gone("410 Gone"));
          finish(err ?? undefined);
        })
        .then((abort) => {
          this.watchAbort = abort;
          if (finished || this.stopped) abort.abort();
        }, finish);
      this.stopSignal.signal.addEventListener("abort", onStop, { once: true });
      log.debug({ what, resourceVersion: rv }, "watching");
    });
  }

  /** Key and projection of one object, or undefined (logged, counted) when it does not decode. */
  private decode(o: T): [string, P] | undefined {
    try {
      const p = this.opts.project(o);
      const key = this.opts.key(o);
      if (!key) throw new Error("metadata.name: missing");
      return [key, p];
    } catch (err) {
      const name = (o as RawObject | undefined)?.metadata?.name;
      this.opts.log.warn({ what: this.opts.what, name: typeof name === "string" ? name : undefined, err: errorText(err) }, "object does not decode; skipped");
      this.opts.onInvalid?.(this.opts.what, err);
      return undefined;
    }
  }

  private emit(deleted: string[]): void {
    try {
      this.opts.onChange(this.items(), deleted);
    } catch (err) {
      // A failing consumer must not kill the informer loop.
      this.opts.log.error({ what: this.opts.what, err: errorText(err) }, "change handler threw");
    }
  }
}

function same(a: unknown, b: unknown): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}

function errorText(err: unknown): string {
  if (err && typeof err === "object") {
    const e = err as { code?: unknown; statusCode?: unknown; message?: unknown; body?: unknown };
    const code = e.code ?? e.statusCode;
    return `${code !== undefined ? `${code} ` : ""}${String(e.message ?? err)}`.slice(0, 500);
  }
  return String(err);
}
