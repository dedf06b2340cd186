// leases/<network>/<subnet>: which node holds which subnet. Claims are made
// by commitNode (nodes.ts) with create-if-absent on the lease key; which
// subnet to claim is the controller's choice, not the store's.
import { EtcdKv, decodeValid } from "./etcd.js";
import type { LeaseRecord } from "./types.js";

export async function listLeases(etcd: EtcdKv, network?: string): Promise<LeaseRecord[]> {
  const { kvs } = await etcd.rangePrefix(etcd.keys.leases(network), "list_leases");
  return decodeValid<LeaseRecord>(kvs, etcd.log);
}
