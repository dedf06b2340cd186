// One network's peer entries and their change log, encoded once and read by
// every member's cursor (the shape of Calico Typha's snapshot cache). Pure.
//
// - `set` records a peer's new entry (or its removal) when it differs from
//   the last one: the entry is encoded once, as a NetworkConfig.peers element
//   for snapshots and as a ConfigUpdate.peer_updates element for the log.
// - The log keeps a bounded number of bytes; a cursor older than what it
//   keeps, or too far behind, gets a snapshot instead (the caller decides).
// - Snapshot peers come from one buffer holding every peer's element, built
//   at most once per batch of changes and reused by every member; a member's
//   own entry is cut out by its offsets. A slightly old buffer is reused and
//   the log since then follows it, so a join storm does not rebuild it per join.
import type { Peer } from "../api/index.js";
import { encodePeerElement, encodePeerUpdateElement } from "./wire.js";

interface Entry {
  seq: number;
  node: string;
  bytes: Buffer;
  /** Bytes appended up to and including this entry. */
  total: number;
}

interface PeerState {
  key: string;
  element: Buffer;
}

export interface PeerBlob {
  seq: number;
  buf: Buffer;
  offsets: Map<string, [number, number]>;
}

export const DEFAULT_LOG_BYTES = 4 * 1024 * 1024;

export function peerKey(p: Peer): string {
  return `${p.underlayIp}|${p.vtepMac}|${p.subnet}`;
}

export class NetworkFeed {
  /** Sequence number of the newest entry (0: none yet). */
  seq = 0;
  private readonly peers = new Map<string, PeerState>();
  private entries: Entry[] = [];
  private start = 0;
  private appended = 0;
  private blob?: PeerBlob;
  private rangeCache?: { seq: number; from: number; pieces: Buffer[]; nodes: Set<string> };

  constructor(
    readonly name: string,
    private readonly maxLogBytes = DEFAULT_LOG_BYTES,
  ) {}

  /** Log bytes currently retained. */
  get logBytes(): number {
    const first = this.entries[this.start];
    return first ? this.appended - first.total + first.bytes.length : 0;
  }

  /** Records `node`'s entry; returns true when it changed (and was logged). */
  set(node: string, peer: Peer | undefined): boolean {
    const old = this.peers.get(node);
    if (peer) {
      const key = peerKey(peer);
      if (old?.key === key) return false;
      this.peers.set(node, { key, element: encodePeerElement(peer) });
      this.append(node, encodePeerUpdateElement(this.name, peer, false));
    } else {
      if (!old) return false;
      this.peers.delete(node);
      this.append(node, encodePeerUpdateElement(this.name, { nodeName: node, underlayIp: "", vtepMac: "", subnet: "" }, true));
    }
    return true;
  }

  private append(node: string, bytes: Buffer): void {
    this.appended += bytes.length;
    this.entries.push({ seq: ++this.seq, node, bytes, total: this.appended });
    // Trim from the front past the byte bound; compact the array now and then.
    while (this.logBytes > this.maxLogBytes && this.start < this.entries.length - 1) this.start++;
    if (this.start > 1024 && this.start > this.entries.length / 2) {
      this.entries = this.entries.slice(this.start);
      this.start = 0;
    }
  }

  private entryAt(seq: number): Entry | undefined {
    const first = this.entries[this.start];
    if (!first) return undefined;
    return this.entries[this.start + (seq - first.seq)];
  }

  /**
   * Bytes of log after `cursor`, or undefined when the log no longer holds
   * everything after it (the reader needs a snapshot).
   */
  bytesSince(cursor: number): number | undefined {
    if (cursor >= this.seq) return 0;
    const first = this.entries[this.start];
    if (!first || cursor < first.seq - 1) return undefined;
    const at = cursor === first.seq - 1 ? first.total - first.bytes.length : this.entryAt(cursor)!.total;
    return this.appended - at;
  }

  /**
   * The peer_updates elements that bring a reader from `cursor` to `seq`,
   * newest entry per peer only, leaving out `self`'s own. Readers at the same
   * cursor share one array (computed once per cursor and sequence number).
   */
  since(cursor: number, self: string): Buffer[] {
    if (cursor >= this.seq) return [];
    let r = this.rangeCache;
    if (!r || r.seq !== this.seq || r.from !== cursor) {
      const pieces: Buffer[] = [];
      const nodes = new Set<string>();
      const first = this.entries[this.start];
      if (!first || cursor < first.seq - 1) throw new Error(`network ${this.name}: log no longer holds entries after ${cursor}`);
      for (let i = this.entries.length - 1; i >= this.start && this.entries[i].seq > cursor; i--) {
        const e = this.entries[i];
        if (nodes.has(e.node)) continue;
        nodes.add(e.node);
        pieces.push(e.bytes);
      }
      pieces.reverse();
      r = this.rangeCache = { seq: this.seq, from: cursor, pieces, nodes };
    }
    if (!r.nodes.has(self)) return r.pieces;
    const own = this.peerOwnUpdate(cursor, self);
    return r.pieces.filter((p) => p !== own);
  }

  private peerOwnUpdate(cursor: number, self: string): Buffer | undefined {
    for (let i = this.entries.length - 1; i >= this.start && this.entries[i].seq > cursor; i--) if (this.entries[i].node === self) return this.entries[i].bytes;
    return undefined;
  }

  /**
   * Every peer's NetworkConfig.peers element except `self`'s, and the
   * sequence number they reflect. Reuses the shared buffer while the log
   * since it is small compared with it (the reader then gets that log too).
   */
  snapshot(self: string): { seq: number; pieces: Buffer[] } {
    let b = this.blob;
    const behind = b ? this.bytesSince(b.seq) : undefined;
    if (!b || behind === undefined || behind > Math.max(16 * 1024, b.buf.length / 4)) b = this.buildBlob();
    const own = b.offsets.get(self);
    if (!own) return { seq: b.seq, pieces: b.buf.length ? [b.buf] : [] };
    const pieces = [b.buf.subarray(0, own[0]), b.buf.subarray(own[1])].filter((p) => p.length > 0);
    return { seq: b.seq, pieces };
  }

  private buildBlob(): PeerBlob {
    let len = 0;
    for (const p of this.peers.values()) len += p.element.length;
    const buf = Buffer.allocUnsafe(len);
    const offsets = new Map<string, [number, number]>();
    let at = 0;
    for (const [node, p] of this.peers) {
      p.element.copy(buf, at);
      offsets.set(node, [at, at + p.element.length]);
      at += p.element.length;
    }
    this.blob = { seq: this.seq, buf, offsets };
    return this.blob;
  }
}
