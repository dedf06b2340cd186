// endpoints/<network>/<node>/<id>: the pod interfaces agents reported, written
// by the controller holding the node's stream, each bound to the node's etcd
// lease so they vanish with the node. Writes carry no compares: a node's
// endpoints have one writer (its stream's controller), and a put or delete
// of an endpoint is idempotent, so a retried or repeated write is harmless.
import type { IRequestOp } from "etcd3";
import { EtcdKv, TXN_CHUNK, decodeValid, del, put } from "./etcd.js";
import type { EndpointRecord } from "./types.js";

export interface EndpointWrite {
  puts: { record: EndpointRecord; lease: string }[];
  deletes: Pick<EndpointRecord, "network" | "node" | "id">[];
}

/**
 * Writes `w` in transactions of at most TXN_CHUNK ops (etcd refuses more than
 * --max-txn-ops, 128 by default). Returns the revision of the last one (0:
 * nothing to write). A failure leaves the chunks before it written; the caller
 * diffs again and retries, which converges because every op is idempotent.
 */
export async function writeEndpoints(etcd: EtcdKv, w: EndpointWrite): Promise<number> {
  const ops: IRequestOp[] = [
    ...w.puts.map(({ record, lease }) => put(etcd.keys.endpoint(record.network, record.node, record.id), record, lease)),
    ...w.deletes.map((e) => del(etcd.keys.endpoint(e.network, e.node, e.id))),
  ];
  let revision = 0;
  for (let i = 0; i < ops.length; i += TXN_CHUNK) {
    const res = await etcd.txn("write_endpoints", [], ops.slice(i, i + TXN_CHUNK));
    revision = Number(res.header.revision);
  }
  return revision;
}

/** Every endpoint (or one network's), read in pages; values that do not decode are logged and skipped. */
export async function listEndpoints(etcd: EtcdKv, network?: string): Promise<EndpointRecord[]> {
  const { kvs } = await etcd.rangePrefix(etcd.keys.endpoints(network), "list_endpoints");
  return decodeValid<EndpointRecord>(kvs, etcd.log);
}
