// etcd plumbing: the client, deadlines and latency per call, range reads,
// transactions, op builders, (de)serialisation and etcd leases (the time to
// live of a node's records). The job files (networks, nodes, leases, leader,
// watch) build on this and nothing else talks to the client directly.
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry, type IBackoff } from "cockatiel";
import { Etcd3, isRecoverableError, type IKeyValue, type IRequestOp, type ICompare, type IResponseOp } from "etcd3";
import type { Logger } from "../log/index.js";
import { prom, type Registry } from "../metrics/index.js";
import { Backoff, sleep } from "../retry/index.js";
import { Keys, parseEndpointParts, prefixEnd, segmentSubnet, type ParsedKey } from "./keys.js";
import { InvalidRecordError } from "./errors.js";
import { decodeRecord } from "./records.js";
import type { EtcdTls } from "./tls.js";

export interface StoreOptions {
  endpoints: string[];
  prefix?: string;
  log?: Logger;
  registry?: Registry;
  /** How long to wait for etcd before a call fails (ms). */
  timeoutMs?: number;
  /** TLS for https:// endpoints (client certificate for etcd's --client-cert-auth). */
  tls?: EtcdTls;
}

/** A value with the etcd metadata the controller needs for compare-and-swap. */
export interface Versioned<T> {
  value: T;
  modRevision: number;
  createRevision: number;
  /** etcd lease ID the key is bound to ("0" for none). */
  lease: string;
}

export const MAX_CAS_ATTEMPTS = 64;

/** Keys per page of a range read: 256 node records with 1 KB of labels stay far below grpc-js' 4 MiB receive limit. */
export const RANGE_PAGE_SIZE = 256;

/** Ops per transaction when a job writes many keys: well under etcd's default --max-txn-ops of 128. */
export const TXN_CHUNK = 64;

/**
 * Jittered backoff between compare-and-swap attempts: replicas that lost a
 * race spread out instead of colliding again at once.
 */
export function casBackoff(): { wait(): Promise<void> } {
  const b = new Backoff(2, 250);
  return { wait: () => sleep(b.next()) };
}

export function encode(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

/** What a key holds, from its last segments (networks/<n>, nodes/<n>, leases/<net>/<subnet>, endpoints/<net>/<node>/<id>): the job files' reads know their prefix only through etcd.keys. */
function kindOf(key: string): ParsedKey {
  const parts = key.split("/");
  const n = parts.length;
  if (n >= 4 && parts[n - 4] === "endpoints") return parseEndpointParts(parts[n - 3], parts[n - 2], parts[n - 1]);
  if (n >= 3 && parts[n - 3] === "leases") return { kind: "lease", network: parts[n - 2], subnet: segmentSubnet(parts[n - 1]) };
  if (n >= 2 && parts[n - 2] === "networks") return { kind: "network", network: parts[n - 1] };
  if (n >= 2 && parts[n - 2] === "nodes") return { kind: "node", node: parts[n - 1] };
  return { kind: "other" };
}

/** A record read back from etcd, checked against its key's schema; throws an error naming the key when it does not decode. */
export function decode<T>(kv: IKeyValue): T {
  const key = kv.key.toString();
  const res = decodeRecord(kindOf(key), kv.value);
  if (!res) return JSON.parse(kv.value.toString()) as T;
  if (!res.ok) throw new InvalidRecordError(key, res.kind, res.error);
  return res.value as T;
}

/** The records among `kvs` that decode; the others are logged and skipped (a bad value must not hide the good ones). */
export function decodeValid<T>(kvs: IKeyValue[], log?: Logger): T[] {
  const out: T[] = [];
  for (const kv of kvs) {
    try {
      out.push(decode<T>(kv));
    } catch (err) {
      log?.warn({ key: kv.key.toString(), err: (err as Error).message }, "stored value does not decode; skipped");
    }
  }
  return out;
}

/** decode(), or undefined when the value does not decode (a write path that replaces it anyway). */
export function decodeOrUndefined<T>(kv: IKeyValue): T | undefined {
  try {
    return decode<T>(kv);
  } catch {
    return undefined;
  }
}

export function versioned<T>(kv: IKeyValue): Versioned<T> {
  return { value: decode<T>(kv), modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), lease: String(kv.lease ?? "0") };
}

export const put = (key: string, value: unknown, lease?: string): IRequestOp => ({
  request_put: { key: Buffer.from(key), value: encode(value), ...(lease && lease !== "0" ? { lease } : {}) },
});
export const del = (key: string): IRequestOp => ({ request_delete_range: { key: Buffer.from(key) } });
export const delPrefix = (prefix: string): IRequestOp => ({ request_delete_range: { key: Buffer.from(prefix), range_end: prefixEnd(prefix) } });
export const get = (key: string): IRequestOp => ({ request_range: { key: Buffer.from(key) } });
export const modIs = (key: string, rev: number): ICompare => ({ key: Buffer.from(key), target: "Mod", result: "Equal", mod_revision: rev });
export const absent = (key: string): ICompare => ({ key: Buffer.from(key), target: "Create", result: "Equal", create_revision: 0 });
export const leaseIs = (key: string, lease: string): ICompare => ({ key: Buffer.from(key), target: "Lease", result: "Equal", lease });

export function firstKv(res: IResponseOp | undefined): IKeyValue | undefined {
  return res?.response_range?.kvs?.[0];
}

const KEEPALIVE_STREAMS = 8;

interface KeepAliveStream {
  stream: { write(req: { ID: string }): unknown; end(): unknown };
  /** Renewals waiting for etcd's answer, by lease ID. */
  waiting: Map<string, { resolve: (ttl: number) => void; reject: (err: Error) => void }[]>;
}

export class EtcdKv {
  readonly keys: Keys;
  readonly client: Etcd3;
  readonly log?: Logger;
  private readonly opLatency?: prom.Histogram<"op">;
  private readonly timeoutMs: number;

  constructor(opts: StoreOptions) {
    this.keys = new Keys(opts.prefix);
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: Math.min(this.timeoutMs, 5000),
      // The library's defaults (watch re-connect backoff up to 30 s, a circuit
      // breaker open for 5 s, grpc-js' reconnect backoff growing to 120 s)
      // left the controller blind for up to 10 s after etcd returned.
      // Retrying a refused loopback/LAN connection every few hundred ms costs
      // nothing, and it bounds recovery to about that long.
      faultHandling: {
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 250, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 2, backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 200 }) }),
        // etcd3 calls next() on what it is given and uses the result, as it does with its own default (a factory, despite the declared type).
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 500 }) as unknown as IBackoff<unknown>,
      },
      grpcOptions: {
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.min_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 500,
        // Nothing reads channelz; it costs counters and a timestamp per call.
        "grpc.enable_channelz": 0,
      },
      ...(opts.tls ? { credentials: { rootCertificate: opts.tls.ca ?? (null as unknown as Buffer), certChain: opts.tls.cert, privateKey: opts.tls.key } } : {}),
    });
    if (opts.registry) {
      this.opLatency = new prom.Histogram({
        name: "weft_controller_etcd_operation_seconds",
        help: "Latency of etcd operations issued by the controller, by operation.",
        labelNames: ["op"],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
        registers: [opts.registry],
      });
    }
  }

  close(): void {
    for (const ka of this.keepAliveShared) void ka?.then((k) => k.stream.end()).catch(() => undefined);
    this.client.close();
  }

  /** Runs one etcd call with a deadline and records its latency. */
  async op<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const end = this.opLatency?.startTimer({ op: name });
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`etcd ${name}: no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      end?.();
    }
  }

  /**
   * Everything under `prefix` at one revision, read in pages of
   * RANGE_PAGE_SIZE keys (one unpaged read would cross grpc-js' 4 MiB receive
   * limit at a few thousand nodes). Every page after the first is read at the
   * first page's revision, so the result is one consistent cut.
   */
  async rangePrefix(prefix: string, name: string): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const end = prefixEnd(prefix);
    const kvs: IKeyValue[] = [];
    let from = Buffer.from(prefix);
    let revision = 0;
    for (;;) {
      const res = await this.op(name, () =>
        this.client.kv.range({ key: from, range_end: end, limit: RANGE_PAGE_SIZE, ...(revision ? { revision: String(revision) } : {}) }),
      );
      if (!revision) revision = Number(res.header.revision);
      for (const kv of res.kvs) kvs.push(kv);
      if (!res.more || res.kvs.length === 0) break;
      // The next page starts just after the last key read.
      from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
    return { kvs, revision };
  }

  async getKv(key: string, name: string): Promise<IKeyValue | undefined> {
    const res = await this.op(name, () => this.client.kv.range({ key: Buffer.from(key) }));
    return res.kvs[0];
  }

  txn(name: string, compare: ICompare[], success: IRequestOp[], failure: IRequestOp[] = []) {
    return this.op(name, () => this.client.kv.txn({ compare, success, failure }));
  }

  // ---- etcd leases (time to live of a node's records) -------------------

  async grantLease(ttlSeconds: number): Promise<string> {
    const res = await this.op("lease_grant", () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }));
    return String(res.ID);
  }

  /**
   * Renews a lease once; returns the seconds it now has left (0: it is gone).
   * Renewals share KEEPALIVE_STREAMS long-lived LeaseKeepAlive streams (etcd
   * answers each ID on the stream it came on): a stream opened and closed per
   * renewal cost 5000 nodes / (TTL/3) HTTP/2 streams a second, and a burst of
   * them after a controller restart. More than one, because etcd answers the
   * requests of one stream one after the other.
   */
  async keepAlive(leaseId: string): Promise<number> {
    const slot = Number(BigInt(leaseId) % BigInt(KEEPALIVE_STREAMS));
    try {
      return await this.op("lease_keepalive", async () => {
        const ka = await this.keepAliveStream(slot);
        return new Promise<number>((resolve, reject) => {
          let waiting = ka.waiting.get(leaseId);
          if (!waiting) ka.waiting.set(leaseId, (waiting = []));
          waiting.push({ resolve, reject });
          ka.stream.write({ ID: leaseId });
        });
      });
    } catch (err) {
      // No answer in time (or a broken stream): a stream that went silent would fail every
      // later renewal on it too, so it is dropped and the next renewal opens a new one.
      this.dropKeepAliveStream(slot, err as Error);
      throw err;
    }
  }

  private dropKeepAliveStream(slot: number, err: Error): void {
    const shared = this.keepAliveShared[slot];
    if (!shared) return;
    this.keepAliveShared[slot] = undefined;
    void shared
      .then((ka) => {
        for (const ws of ka.waiting.values()) ws.forEach((w) => w.reject(err));
        ka.waiting.clear();
        ka.stream.end();
      })
      .catch(() => undefined);
  }

  private readonly keepAliveShared: (Promise<KeepAliveStream> | undefined)[] = [];

  private keepAliveStream(slot: number): Promise<KeepAliveStream> {
    const shared = (this.keepAliveShared[slot] ??= (async () => {
      const stream = await this.client.leaseClient.leaseKeepAlive();
      const ka: KeepAliveStream = { stream, waiting: new Map() };
      stream.on("data", (res: { ID: string | number; TTL: string | number }) => {
        const id = String(res.ID);
        const waiting = ka.waiting.get(id);
        ka.waiting.delete(id);
        waiting?.forEach((w) => w.resolve(Number(res.TTL)));
      });
      // A broken stream fails what waits on it; the next renewal opens a new one.
      const broken = (err: Error) => {
        if (this.keepAliveShared[slot] === shared) this.keepAliveShared[slot] = undefined;
        for (const ws of ka.waiting.values()) ws.forEach((w) => w.reject(err));
        ka.waiting.clear();
      };
      stream.on("error", broken);
      stream.on("end", () => broken(new Error("etcd lease keep-alive stream ended")));
      return ka;
    })());
    shared.catch(() => {
      if (this.keepAliveShared[slot] === shared) this.keepAliveShared[slot] = undefined;
    });
    return shared;
  }

  async revokeLease(leaseId: string): Promise<void> {
    await this.op("lease_revoke", () => this.client.leaseClient.leaseRevoke({ ID: leaseId }));
  }
}
