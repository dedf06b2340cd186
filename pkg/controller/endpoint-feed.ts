// One network's endpoints and their change log, encoded once and read by
// every member's cursor, like the peer entries in change-log.ts. Pure.
//
// - `set` records an endpoint's new value (or its removal) when it differs
//   from the last one, encoded once as a ConfigUpdate.endpoint_updates
//   element; the same element is what snapshots carry.
// - The log keeps a bounded number of bytes; a cursor older than what it
//   keeps gets a snapshot instead (the distributor decides).
// - Snapshots take one shared buffer with every endpoint's element, rebuilt
//   only when the log since it has grown large compared with it; the reader
//   then also gets the log since the buffer, in the same message.
// Every member gets every endpoint, its own node's included (DNS answers
// for them), so there is no per-reader filtering.
import type { Endpoint } from "../api/index.js";
import type { EndpointRecord } from "../store/index.js";
import { DEFAULT_LOG_BYTES } from "./change-log.js";
import { encodeEndpointUpdateElement } from "./wire.js";

interface Entry {
  seq: number;
  key: string;
  bytes: Buffer;
  /** Bytes appended up to and including this entry. */
  total: number;
}

/** Networks whose members are sent endpoints: switched ones (the dataplane programs them) and those with DNS. */
export function wantsEndpoints(n: { mode: string; dns: boolean }): boolean {
  return n.mode === "switched" || n.dns;
}

export function toEndpoint(e: EndpointRecord): Endpoint {
  return { id: e.id, nodeName: e.node, network: e.network, name: e.name, aliases: e.aliases, ips: e.ips, mac: e.mac };
}

function identity(e: EndpointRecord): string {
  return JSON.stringify([e.name, e.aliases, e.ips, e.mac]);
}

export class EndpointFeed {
  /** Sequence number of the newest entry (0: none yet). */
  seq = 0;
  private readonly current = new Map<string, { id: string; element: Buffer }>();
  private entries: Entry[] = [];
  private start = 0;
  private appended = 0;
  private blob?: { seq: number; buf: Buffer };
  private rangeCache?: { seq: number; from: number; pieces: Buffer[] };

  constructor(
    readonly network: string,
    private readonly maxLogBytes = DEFAULT_LOG_BYTES,
  ) {}

  get size(): number {
    return this.current.size;
  }

  /** Log bytes currently retained. */
  get logBytes(): number {
    const first = this.entries[this.start];
    return first ? this.appended - first.total + first.bytes.length : 0;
  }

  /** Records the endpoint under `key` (node/id); undefined: removed. Returns true when it changed (and was logged). */
  set(key: string, e: EndpointRecord | undefined): boolean {
    const old = this.current.get(key);
    if (e) {
      const id = identity(e);
      if (old?.id === id) return false;
      const element = encodeEndpointUpdateElement(this.network, toEndpoint(e), false);
      this.current.set(key, { id, element });
      this.append(key, element);
    } else {
      if (!old) return false;
      this.current.delete(key);
      const slash = key.indexOf("/");
      const removal = { id: key.slice(slash + 1), nodeName: key.slice(0, slash), network: this.network, name: "", aliases: [], ips: [], mac: "" };
      this.append(key, encodeEndpointUpdateElement(this.network, removal, true));
    }
    return true;
  }

  private append(key: string, bytes: Buffer): void {
    this.appended += bytes.length;
    this.entries.push({ seq: ++this.seq, key, bytes, total: this.appended });
    while (this.logBytes > this.maxLogBytes && this.start < this.entries.length - 1) this.start++;
    if (this.start > 1024 && this.start > this.entries.length / 2) {
      this.entries = this.entries.slice(this.start);
      this.start = 0;
    }
  }

  /** Bytes of log after `cursor`, or undefined when the log no longer holds everything after it. */
  bytesSince(cursor: number): number | undefined {
    if (cursor >= this.seq) return 0;
    const first = this.entries[this.start];
    if (!first || cursor < first.seq - 1) return undefined;
    const at = cursor === first.seq - 1 ? first.total - first.bytes.length : this.entries[this.start + (cursor - first.seq)].total;
    return this.appended - at;
  }

  /** The elements that bring a reader from `cursor` to `seq`, newest per endpoint; readers at one cursor share the array. */
  since(cursor: number): Buffer[] {
    if (cursor >= this.seq) return [];
    const r = this.rangeCache;
    if (r && r.seq === this.seq && r.from === cursor) return r.pieces;
    const first = this.entries[this.start];
    if (!first || cursor < first.seq - 1) throw new Error(`network ${this.network}: endpoint log no longer holds entries after ${cursor}`);
    const seen = new Set<string>();
    const pieces: Buffer[] = [];
    for (let i = this.entries.length - 1; i >= this.start && this.entries[i].seq > cursor; i--) {
      const e = this.entries[i];
      if (seen.has(e.key)) continue;
      seen.add(e.key);
      pieces.push(e.bytes);
    }
    pieces.reverse();
    this.rangeCache = { seq: this.seq, from: cursor, pieces };
    return pieces;
  }

  /** Every endpoint's element, as of the returned sequence number (the log after it brings the reader up to date). */
  snapshot(): { seq: number; pieces: Buffer[] } {
    let b = this.blob;
    const behind = b ? this.bytesSince(b.seq) : undefined;
    if (!b || behind === undefined || behind > Math.max(16 * 1024, b.buf.length / 4)) {
      b = this.blob = { seq: this.seq, buf: Buffer.concat([...this.current.values()].map((c) => c.element)) };
    }
    return { seq: b.seq, pieces: b.buf.length ? [b.buf] : [] };
  }
}
