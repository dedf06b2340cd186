// The whole prefix at one revision, and a watch that continues from it.
import { EtcdKv, versioned, type Versioned } from "./etcd.js";
import type { ParsedKey } from "./keys.js";
import type { LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

export type StoreEvent =
  | { type: "put"; key: ParsedKey; value: unknown; lease: string; modRevision: number }
  | { type: "delete"; key: ParsedKey; modRevision: number };

export interface Snapshot {
  revision: number;
  networks: Versioned<NetworkSpec>[];
  nodes: Versioned<NodeRecord>[];
  leases: Versioned<LeaseRecord>[];
}

export interface StoreWatch {
  close(): Promise<void>;
}

/** Everything under the prefix at one revision. */
export async function snapshot(etcd: EtcdKv): Promise<Snapshot> {
  const { kvs, revision } = await etcd.rangePrefix(etcd.keys.prefix, "snapshot");
  const snap: Snapshot = { revision, networks: [], nodes: [], leases: [] };
  for (const kv of kvs) {
    const k = etcd.keys.parse(kv.key.toString());
    if (k.kind === "network") snap.networks.push(versioned<NetworkSpec>(kv));
    else if (k.kind === "node") snap.nodes.push(versioned<NodeRecord>(kv));
    else if (k.kind === "lease") snap.leases.push(versioned<LeaseRecord>(kv));
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
    if (res.events.length === 0) return;
    const events: StoreEvent[] = res.events.map((ev) => {
      const key = etcd.keys.parse(ev.kv.key.toString());
      const modRevision = Number(ev.kv.mod_revision);
      if (ev.type === "Delete") return { type: "delete", key, modRevision };
      let value: unknown;
      try {
        value = JSON.parse(ev.kv.value.toString());
      } catch {
        value = undefined;
      }
      return { type: "put", key, value, lease: String(ev.kv.lease ?? "0"), modRevision };
    });
    onEvents(events, Number(res.header.revision));
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
      lost = true;
      await watcher.cancel().catch(() => undefined);
    },
  };
}
