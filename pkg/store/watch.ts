// The whole prefix at one revision, and a watch that continues from it.
// Every value is decoded by its key's schema (records.ts): one that does not
// decode is reported (snapshot.invalid, an "invalid" event) instead of reaching the view.
import type { IKeyValue } from "etcd3";
import { EtcdKv, type Versioned } from "./etcd.js";
import { decodeRecord, type InvalidRecord, type RecordEvent } from "./records.js";
import type { EndpointRecord, LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

/** A watch event: decoded put, delete, or a value that does not decode; each carries its key's mod revision. */
export type StoreEvent = RecordEvent;

export interface Snapshot {
  revision: number;
  networks: Versioned<NetworkSpec>[];
  nodes: Versioned<NodeRecord>[];
  leases: Versioned<LeaseRecord>[];
  endpoints: Versioned<EndpointRecord>[];
  /** Values under networks/, nodes/, leases/ or endpoints/ that did not decode, left out of the lists above. */
  invalid: InvalidRecord[];
}

function meta(kv: IKeyValue) {
  return { modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), lease: String(kv.lease ?? "0") };
}

export interface StoreWatch {
  close(): Promise<void>;
}

/** Everything under the prefix at one revision. */
export async function snapshot(etcd: EtcdKv): Promise<Snapshot> {
  const { kvs, revision } = await etcd.rangePrefix(etcd.keys.prefix, "snapshot");
  const snap: Snapshot = { revision, networks: [], nodes: [], leases: [], endpoints: [], invalid: [] };
  for (const kv of kvs) {
    const key = kv.key.toString();
    const res = decodeRecord(etcd.keys.parse(key), kv.value);
    if (!res) continue;
    if (!res.ok) snap.invalid.push({ key, kind: res.kind, error: res.error, modRevision: Number(kv.mod_revision) });
    else if (res.kind === "network") snap.networks.push({ value: res.value, ...meta(kv) });
    else if (res.kind === "node") snap.nodes.push({ value: res.value, ...meta(kv) });
    else if (res.kind === "lease") snap.leases.push({ value: res.value, ...meta(kv) });
    else snap.endpoints.push({ value: res.value, ...meta(kv) });
  }
  return snap;
}

/**
 * Watches everything under the prefix from `fromRevision` (exclusive of
 * what a snapshot at fromRevision-1 already saw). `onEvents` gets each
 * response's events with the revision they bring the view to. `onLost` is
 * called once when the watch cannot continue (e.g. the revision was
 * compacted): the caller re-lists and watches again.
 */
export async function watch(
  etcd: EtcdKv,
  fromRevision: number,
  onEvents: (events: StoreEvent[], revision: number) => void,
  onLost: (err: Error) => void,
): Promise<StoreWatch> {
  const watcher = await etcd.client.watch().prefix(etcd.keys.prefix).startRevision(String(fromRevision)).create();
  let lost = false;
  watcher.on("data", (res) => {
    // After close() or a loss, a response still in flight must not reach the caller (it re-lists instead).
    if (lost || res.events.length === 0) return;
    const events: StoreEvent[] = [];
    for (const ev of res.events) {
      const rawKey = ev.kv.key.toString();
      const key = etcd.keys.parse(rawKey);
      if (key.kind === "other") continue;
      const modRevision = Number(ev.kv.mod_revision);
      if (ev.type === "Delete") {
        events.push({ type: "delete", key, modRevision });
        continue;
      }
      const rec = decodeRecord(key, ev.kv.value);
      if (!rec) continue;
      if (rec.ok) events.push({ type: "put", key, record: rec, lease: String(ev.kv.lease ?? "0"), modRevision });
      else events.push({ type: "invalid", key, rawKey, kind: rec.kind, error: rec.error, modRevision });
    }
    try {
      onEvents(events, Number(res.header.revision));
    } catch (err) {
      // etcd3 rethrows a listener's error outside any handler, which would end the process.
      etcd.log?.error({ err: String(err) }, "watch event handler failed");
    }
  });
  watcher.on("error", (err) => {
    // etcd3 drops a watcher after an error (e.g. compaction); without this listener it would crash the process.
    if (lost) return;
    lost = true;
    etcd.log?.warn({ err: String(err) }, "etcd watch lost; the view will be rebuilt");
    onLost(err instanceof Error ? err : new Error(String(err)));
  });
  return {
    close: async () => {
      const dropped = lost;
      lost = true;
      // etcd3 has already dropped a watcher that failed; cancelling it would wait for an answer that never comes.
      if (dropped) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([watcher.cancel().catch(() => undefined), new Promise((r) => (timer = setTimeout(r, 2_000)))]);
      clearTimeout(timer);
    },
  };
}
