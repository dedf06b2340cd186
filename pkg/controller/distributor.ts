// Fan-out of model changes to agent streams: one change log per network,
// encoded once, read by one cursor per agent stream.
//
// Whenever a stream is writable (its last write was taken by the transport,
// or 'drain' fired) it gets everything since its cursors as one message:
// immediately when idle, at most every FLUSH_INTERVAL_MS under load. A stream
// whose unsent backlog plus unflushed bytes passes `maxLagBytes` is switched
// to a fresh snapshot instead of queueing, so a stalled agent costs a bounded
// amount of memory. Snapshots are assembled from per-network peer buffers
// shared by every member (change-log.ts); at most `snapshotBudgetBytes` of
// them are in flight at once, so N agents reconnecting together do not hold
// N snapshots in memory.
import type { ConfigUpdate } from "../api/index.js";
import { headerKey, type Change, type Model } from "./model.js";
import { DEFAULT_LOG_BYTES, NetworkFeed } from "./change-log.js";
import { EndpointFeed, wantsEndpoints } from "./endpoint-feed.js";
import { desiredHeaders, type NodeContext } from "./view.js";
import { encodeRemovedNetwork, encodeUpdateHead, networkElementPieces } from "./wire.js";

/** Flush pacing: at most every 20 ms, stretched to 50 ms while flushes keep writing to many streams (a join storm). */
export const FLUSH_INTERVAL_MS = 20;
const BUSY_FLUSH_INTERVAL_MS = 50;
const BUSY_FLUSH_WRITES = 64;
/**
 * Deltas in a storm: while peer entries change faster than STORM_CHANGES_PER_S
 * (N agents joining or leaving), a stream gets at most one delta per gap and
 * what arrives meanwhile coalesces into its next one: every delta costs a
 * write, an HTTP/2 frame, the agent's decode and ack, and in a storm those
 * per-message costs were most of the controller's work. The gap is
 * MIN_DELTA_GAP_MS, growing with the change rate (MAX_DELTA_GAP_MS at
 * STORM_FULL_CHANGES_PER_S) and with the event loop's utilisation above
 * CALM_ELU. The gap also grows with the number of streams, so that deltas in
 * a storm stay under STORM_DELTAS_PER_S in total (up to MAX_FLEET_GAP_MS):
 * at 5000 agents a 500 ms gap was 10 000 messages a second, and their
 * per-message cost, here and in every agent, was most of a join storm's CPU.
 * Changes at a human pace (one more join, a removal) go at once
 * however busy the machine is, and snapshots are never held back: a joining
 * agent waits for its snapshot, its peers only for news.
 */
const STORM_CHANGES_PER_S = 30;
const STORM_FULL_CHANGES_PER_S = 400;
const CALM_ELU = 0.6;
const MIN_DELTA_GAP_MS = 100;
const MAX_DELTA_GAP_MS = 500;
const STORM_DELTAS_PER_S = 4000;
const MAX_FLEET_GAP_MS = 2000;
/**
 * A storm is over once no peer entry changed for this long, whatever the
 * rate's moving average still says: the first join after a storm goes to
 * every stream at once instead of waiting out the gap of the storm's last
 * delta (up to 250 ms at 1000 agents). Within a storm, registrations commit
 * in batches well under this apart.
 */
const STORM_QUIET_MS = 300;
/** Time constant of the utilisation's moving average. */
const ELU_TAU_MS = 250;
export const DEFAULT_MAX_LAG_BYTES = 1024 * 1024;
const WRITE_AHEAD_BYTES = 256 * 1024;
const SNAPSHOT_BUDGET_BYTES = 64 * 1024 * 1024;

/** The part of a stream the distributor writes to (grpc-js ServerDuplexStream). */
export interface OutStream {
  write(chunk: Buffer | ConfigUpdate, cb: (err?: Error | null) => void): boolean;
  once(event: "drain", listener: () => void): unknown;
}

export interface Subscriber extends NodeContext {
  readonly stream: OutStream;
  /**
   * True while the agent has not acknowledged what it was sent (for a short
   * while at most): deltas then wait and coalesce, so a busy agent gets fewer,
   * larger messages instead of one per flush.
   */
  awaitingAck?(): boolean;
  /** Called for every message written, with the revision it brings the agent to. */
  sent(revision: number, snapshot: boolean, bytes: number): void;
}

interface SentNetwork {
  header: string;
  hasSubnet: boolean;
  seq: number;
  /** Cursor in the network's endpoint feed; undefined: the agent holds no endpoints of it from this stream. */
  ep?: number;
}

interface Reader {
  sub: Subscriber;
  sent: Map<string, SentNetwork>;
  needSnapshot: boolean;
  headersDirty: boolean;
  /** Bytes written but not yet taken by the transport. */
  inflight: number;
  snapshotInflight: number;
  /** write() returned false: wait for 'drain'. */
  blocked: boolean;
  /** When the last delta was written (performance.now()). */
  lastDeltaAt: number;
}

export interface DistributorStats {
  /** Streams switched to a snapshot because they fell too far behind. */
  lagResyncs: () => void;
  snapshots: () => void;
  deltas: () => void;
}

export interface DistributorOptions {
  maxLagBytes?: number;
  maxLogBytes?: number;
  snapshotBudgetBytes?: number;
  /** Deltas paced in a storm (default true; off only for tests that replay events without time passing). */
  stormPacing?: boolean;
  stats?: Partial<DistributorStats>;
}

export class Distributor {
  private readonly feeds = new Map<string, NetworkFeed>();
  private readonly endpointFeeds = new Map<string, EndpointFeed>();
  private readonly readers = new Map<Subscriber, Reader>();
  /** Streams added since the last turn of the event loop: their snapshots go at once. */
  private readonly newcomers = new Set<Reader>();
  private newcomersTimer?: NodeJS.Immediate;
  private timer?: NodeJS.Timeout | NodeJS.Immediate;
  private lastFlush = 0;
  private interval = FLUSH_INTERVAL_MS;
  private writes = 0;
  /** Some stream with news waits for an ack or its gap: flush again even if nothing else happens. */
  private waitingAck = false;
  private eluMark = performance.eventLoopUtilization();
  private eluAt = performance.now();
  /** Moving average of the event loop's utilisation (0..1). */
  private elu = 0;
  /** Current least time between two deltas to one stream. */
  private deltaGap = 0;
  /** Peer entries logged since the last measurement, and their moving-average rate per second. */
  private changes = 0;
  private changeRate = 0;
  private lastChangeAt = -Infinity;
  private snapshotInflight = 0;
  /** The last delta built from a shared since() array, at the model revision it was encoded for. */
  private deltaMemo?: { updates: Buffer[]; revision: number; buf: Buffer };
  private readonly maxLagBytes: number;
  private readonly maxLogBytes: number;
  private readonly snapshotBudget: number;
  /** Bytes a stream may have unflushed before it gets nothing more: a fraction of the lag bound. */
  private readonly writeAhead: number;

  constructor(
    private readonly model: Model,
    private readonly opts: DistributorOptions = {},
  ) {
    this.maxLagBytes = opts.maxLagBytes ?? DEFAULT_MAX_LAG_BYTES;
    this.maxLogBytes = opts.maxLogBytes ?? DEFAULT_LOG_BYTES;
    this.snapshotBudget = opts.snapshotBudgetBytes ?? SNAPSHOT_BUDGET_BYTES;
    this.writeAhead = Math.min(WRITE_AHEAD_BYTES, this.maxLagBytes / 4);
  }

  /** Bytes written to streams and not yet taken by the transport, over all streams. */
  get bufferedBytes(): number {
    let n = 0;
    for (const r of this.readers.values()) n += r.inflight;
    return n;
  }

  /** The most bytes any one stream has written and not yet had taken by the transport. */
  get maxBufferedBytes(): number {
    let n = 0;
    for (const r of this.readers.values()) n = Math.max(n, r.inflight);
    return n;
  }

  /** Bytes held by the change logs of all networks. */
  get logBytes(): number {
    let n = 0;
    for (const f of this.feeds.values()) n += f.logBytes;
    for (const f of this.endpointFeeds.values()) n += f.logBytes;
    return n;
  }

  /**
   * Starts serving `sub`: its first message is a snapshot, written on the
   * next turn of the event loop rather than at the next paced flush (a
   * joining agent waits for it; in a join storm flushes are 50 ms apart).
   */
  add(sub: Subscriber): void {
    const r: Reader = { sub, sent: new Map(), needSnapshot: true, headersDirty: true, inflight: 0, snapshotInflight: 0, blocked: false, lastDeltaAt: 0 };
    this.readers.set(sub, r);
    this.newcomers.add(r);
    this.newcomersTimer ??= setImmediate(() => this.serveNewcomers());
  }

  private serveNewcomers(): void {
    this.newcomersTimer = undefined;
    const batch = [...this.newcomers];
    this.newcomers.clear();
    for (const r of batch) if (this.readers.get(r.sub) === r && r.needSnapshot) this.serve(r);
    // Those the snapshot budget held back go with the flushes that freed budget triggers.
    if (batch.some((r) => r.needSnapshot && this.readers.get(r.sub) === r)) this.schedule();
  }

  remove(sub: Subscriber): void {
    const r = this.readers.get(sub);
    if (!r) return;
    this.readers.delete(sub);
    this.newcomers.delete(r);
    // A cancelled stream never completes its pending writes: give their budget back.
    this.snapshotInflight -= r.snapshotInflight;
    r.snapshotInflight = 0;
    this.schedule();
  }

  /** Something only this node sees changed (its errors, labels): recompute its headers. */
  touch(sub: Subscriber): void {
    const r = this.readers.get(sub);
    if (!r) return;
    r.headersDirty = true;
    this.schedule();
  }

  /** Logs what `change` did to peer entries and marks the streams whose headers may differ now. */
  onChange(change: Change, byNode: (node: string) => Subscriber | undefined): void {
    for (const name of change.networks) {
      if (!this.model.networks.has(name)) this.feeds.delete(name);
      this.endpointsStillWanted(name);
    }
    for (const [net, keys] of change.endpoints) {
      const feed = this.endpointFeeds.get(net);
      if (feed) for (const key of keys) feed.set(key, this.model.endpoints.get(net, key));
    }
    const changesBefore = this.changes;
    for (const [net, nodes] of change.peers) {
      const feed = this.feed(net, false);
      for (const node of nodes) {
        if (feed?.set(node, this.model.peer(net, node))) this.changes++;
        // Its own lease changed: its header (subnet) may have.
        const own = byNode(node);
        const r = own && this.readers.get(own);
        if (r) r.headersDirty = true;
      }
    }
    if (this.changes > changesBefore) {
      const now = performance.now();
      if (now - this.lastChangeAt > STORM_QUIET_MS) {
        this.changeRate = 0;
        this.deltaGap = 0;
      }
      this.lastChangeAt = now;
    }
    if (change.networks.size > 0) for (const r of this.readers.values()) r.headersDirty = true;
    this.schedule();
  }

  private feed(name: string, create = true): NetworkFeed | undefined {
    let f = this.feeds.get(name);
    if (!f && (create || this.model.networks.has(name))) {
      if (!this.model.networks.has(name)) return undefined;
      f = new NetworkFeed(name, this.maxLogBytes);
      for (const l of this.model.leases.get(name)?.values() ?? []) f.set(l.node, this.model.peer(name, l.node));
      this.feeds.set(name, f);
    }
    return f;
  }

  /** The network's endpoint feed; created (from the view) when the network wants endpoints. */
  private endpointFeed(name: string): EndpointFeed | undefined {
    let f = this.endpointFeeds.get(name);
    const spec = this.model.networks.get(name);
    if (!f && spec && wantsEndpoints(spec)) {
      f = new EndpointFeed(name, this.maxLogBytes);
      for (const [key, e] of this.model.endpoints.of(name)) f.set(key, e.value);
      this.endpointFeeds.set(name, f);
    }
    return f;
  }

  /**
   * A network that stopped wanting endpoints (dns turned off) drops its feed;
   * agents holding its endpoints get a snapshot, which forgets them (rare: a spec change).
   */
  private endpointsStillWanted(name: string): void {
    const spec = this.model.networks.get(name);
    if (!this.endpointFeeds.has(name) || (spec && wantsEndpoints(spec))) return;
    this.endpointFeeds.delete(name);
    for (const r of this.readers.values()) {
      if (r.sent.get(name)?.ep === undefined || !spec) continue;
      r.needSnapshot = true;
      r.sent.clear();
    }
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = this.lastFlush + this.interval - performance.now();
    this.timer = wait <= 0 ? setImmediate(() => this.flush()) : setTimeout(() => this.flush(), wait);
  }

  /** Serves every stream that is writable and has something to hear. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
    }
    this.timer = undefined;
    this.lastFlush = performance.now();
    this.writes = 0;
    this.waitingAck = false;
    this.measureLoad(this.lastFlush);
    for (const r of this.readers.values()) this.serve(r);
    this.interval = this.writes >= BUSY_FLUSH_WRITES ? BUSY_FLUSH_INTERVAL_MS : FLUSH_INTERVAL_MS;
    if (this.waitingAck) this.schedule();
  }

  /** Updates the utilisation average and the delta gap it implies. */
  private measureLoad(now: number): void {
    const dt = now - this.eluAt;
    if (dt <= 0) return;
    const window = performance.eventLoopUtilization(this.eluMark);
    this.eluMark = performance.eventLoopUtilization();
    this.eluAt = now;
    const w = 1 - Math.exp(-dt / ELU_TAU_MS);
    this.elu += (window.utilization - this.elu) * w;
    this.changeRate += ((this.changes * 1000) / dt - this.changeRate) * w;
    this.changes = 0;
    const byRate = (MAX_DELTA_GAP_MS * this.changeRate) / STORM_FULL_CHANGES_PER_S;
    const byLoad = (MAX_DELTA_GAP_MS * (this.elu - CALM_ELU)) / (1 - CALM_ELU);
    const byStreams = Math.min(MAX_FLEET_GAP_MS, (1000 * this.readers.size) / STORM_DELTAS_PER_S);
    const storm = this.opts.stormPacing !== false && this.changeRate >= STORM_CHANGES_PER_S;
    this.deltaGap = storm ? Math.max(byStreams, Math.min(MAX_DELTA_GAP_MS, Math.max(MIN_DELTA_GAP_MS, byRate, byLoad))) : 0;
  }

  /** An agent acknowledged: what waited for it can go. */
  acked(): void {
    if (this.waitingAck) this.schedule();
  }

  private serve(r: Reader): void {
    // Checked even while the stream is not writable: that is when a backlog builds up.
    if (!r.needSnapshot && this.tooFarBehind(r)) {
      r.needSnapshot = true;
      r.sent.clear(); // its cursors are abandoned: the snapshot replaces everything
      this.opts.stats?.lagResyncs?.();
    }
    if (r.blocked || r.inflight > this.writeAhead) return;
    if (r.needSnapshot) {
      // Only into a drained stream: a stalled agent holds at most what it had in flight, never a backlog plus a snapshot.
      if (r.inflight > 0) return;
      if (this.snapshotInflight > this.snapshotBudget) return; // freed as snapshots are flushed; each completion reschedules
      this.write(r, this.build(r, true), true);
      return;
    }
    if (!r.headersDirty && !this.hasNews(r)) return;
    if (r.sub.awaitingAck?.() || (this.deltaGap > 0 && this.lastFlush - r.lastDeltaAt < this.deltaGap)) {
      this.waitingAck = true;
      return;
    }
    const pieces = this.build(r, false);
    if (pieces) this.write(r, pieces, false);
  }

  private hasNews(r: Reader): boolean {
    for (const [name, s] of r.sent) {
      const f = this.feeds.get(name);
      if (!f) return true; // network gone: the removal is news
      if (f.seq > s.seq) return true;
      if (s.ep !== undefined && (this.endpointFeeds.get(name)?.seq ?? 0) > s.ep) return true;
    }
    return false;
  }

  /** True when the backlog after the stream's cursors (plus what it has not flushed) passes the bound. */
  private tooFarBehind(r: Reader): boolean {
    // A snapshot still being flushed is the base the backlog applies to, not lag.
    let lag = r.inflight - r.snapshotInflight;
    for (const [name, s] of r.sent) {
      const epBehind = s.ep === undefined ? 0 : this.endpointFeeds.get(name)?.bytesSince(s.ep);
      if (epBehind === undefined) return true;
      lag += epBehind;
      if (!s.hasSubnet) continue;
      const f = this.feeds.get(name);
      if (!f) continue;
      const behind = f.bytesSince(s.seq);
      if (behind === undefined) return true;
      lag += behind;
    }
    return lag > this.maxLagBytes;
  }

  /** The message bringing `r` to the model's current state, as pieces; undefined when there is nothing to say. */
  private build(r: Reader, snapshot: boolean): Buffer[];
  private build(r: Reader, snapshot: false): Buffer[] | undefined;
  private build(r: Reader, snapshot: boolean): Buffer[] | undefined {
    const self = r.sub.node;
    const networks: Buffer[] = [];
    const removed: Buffer[] = [];
    /** since() per network with news: readers at the same cursor share each array (see sharedDelta). */
    const updates: Buffer[][] = [];
    const endpoints: Buffer[] = [];
    if (snapshot || r.headersDirty) {
      r.headersDirty = false;
      const desired = desiredHeaders(this.model, r.sub);
      const names = new Set(desired.map((h) => h.name));
      if (snapshot) r.sent.clear();
      for (const name of [...r.sent.keys()]) {
        if (names.has(name)) continue;
        r.sent.delete(name);
        removed.push(encodeRemovedNetwork(name));
      }
      for (const header of desired) {
        const feed = this.feed(header.name)!;
        const key = headerKey(header);
        const sent = r.sent.get(header.name);
        const hasSubnet = !!header.subnet;
        if (sent && sent.header === key) continue;
        // New or changed header: the network is sent whole, peers from the shared buffer.
        const peers = hasSubnet ? feed.snapshot(self) : { seq: feed.seq, pieces: [] };
        networks.push(...networkElementPieces(header, peers.pieces));
        // Endpoints: the agent keeps them across a header change (with or without
        // a subnet, so they never go stale); one new to them gets the complete set.
        let ep = wantsEndpoints(header) ? sent?.ep : undefined;
        if (wantsEndpoints(header) && ep === undefined) {
          const all = this.endpointFeed(header.name)?.snapshot();
          if (all) {
            endpoints.push(...all.pieces);
            ep = all.seq;
          }
        }
        r.sent.set(header.name, { header: key, hasSubnet, seq: peers.seq, ep });
      }
    }
    for (const [name, s] of r.sent) {
      const feed = this.feeds.get(name);
      if (!feed) continue;
      if (s.hasSubnet && feed.seq > s.seq) updates.push(feed.since(s.seq, self));
      s.seq = feed.seq;
      const ef = s.ep === undefined ? undefined : this.endpointFeeds.get(name);
      if (ef && ef.seq > s.ep!) endpoints.push(...ef.since(s.ep!));
      if (ef) s.ep = ef.seq;
    }
    if (!snapshot && networks.length === 0 && removed.length === 0 && endpoints.length === 0) {
      // Only peer updates: nothing to say, or (one network's) the delta every reader at this cursor gets.
      if (updates.every((u) => u.length === 0)) return undefined;
      if (updates.length === 1) return [this.sharedDelta(updates[0])];
    }
    return [encodeUpdateHead(this.model.revision, snapshot), ...networks, ...removed, ...updates.flat(), ...endpoints];
  }

  /**
   * Readers at the same cursor share since()'s array; the message it makes is
   * encoded once for all of them (one more join at 5000 agents is 5000 copies
   * of the same delta, each encoded and concatenated per stream before).
   */
  private sharedDelta(updates: Buffer[]): Buffer {
    const m = this.deltaMemo;
    if (m && m.updates === updates && m.revision === this.model.revision) return m.buf;
    const buf = Buffer.concat([encodeUpdateHead(this.model.revision, false), ...updates]);
    this.deltaMemo = { updates, revision: this.model.revision, buf };
    return buf;
  }

  private write(r: Reader, pieces: Buffer[], snapshot: boolean): void {
    const buf = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
    const len = buf.length;
    r.needSnapshot = false;
    this.writes++;
    r.inflight += len;
    if (snapshot) {
      r.snapshotInflight += len;
      this.snapshotInflight += len;
      this.opts.stats?.snapshots?.();
    } else {
      r.lastDeltaAt = this.lastFlush;
      this.opts.stats?.deltas?.();
    }
    r.sub.sent(this.model.revision, snapshot, len);
    const ok = r.sub.stream.write(buf, () => {
      r.inflight -= len;
      if (snapshot && this.readers.get(r.sub) === r) {
        r.snapshotInflight -= len;
        this.snapshotInflight -= len;
      }
      if (this.readers.has(r.sub)) this.schedule();
    });
    if (!ok) {
      r.blocked = true;
      r.sub.stream.once("drain", () => {
        r.blocked = false;
        if (this.readers.has(r.sub)) this.schedule();
      });
    }
  }
}
