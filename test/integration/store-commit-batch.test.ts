// Registrations committed together (pkg/store/commit-batch.ts), against a
// real etcd: concurrent registrations share transactions, and a batch in
// which one registration loses its race still commits the others while the
// loser learns exactly which subnet was taken.
import assert from "node:assert/strict";
import { newRegistry } from "../../pkg/metrics/index.js";
import { Store, type LeaseRecord, type NodeRecord, type NodeState, type NodeWrite } from "../../pkg/store/index.js";
import { useEtcd } from "../harness/etcd.js";

function registration(node: string, subnet: string, leaseId: string): [NodeState, NodeWrite] {
  const now = new Date().toISOString();
  const record: NodeRecord = { name: node, underlayIP: "192.0.2.1", labels: {}, agentVersion: "t", uplinkMtu: 1500, vtepMacs: { blue: "02:00:00:00:00:01" }, subnets: { blue: subnet }, lastSeen: now };
  const claim: LeaseRecord = { network: "blue", subnet, node, vtepIP: "192.0.2.1", vtepMac: "02:00:00:00:00:01", acquired: now, renewed: now };
  return [{ name: node, leases: new Map() }, { record, leaseId, claims: [claim], rewrites: [], releases: [] }];
}

describe("store: registrations batched into shared transactions (real etcd)", function () {
  this.timeout(60_000);
  const etcd = useEtcd();
  let n = 0;

  async function withStore<T>(fn: (store: Store, txns: () => Promise<Record<string, number>>) => Promise<T>): Promise<T> {
    const registry = newRegistry(false);
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: `/weft-batch-${++n}/`, registry });
    const txns = async () => {
      const values = (await registry.getSingleMetric("weft_controller_etcd_operation_seconds")!.get()).values;
      const out: Record<string, number> = {};
      for (const v of values as { metricName?: string; labels: Record<string, unknown>; value: number }[]) if (v.metricName?.endsWith("_count")) out[String(v.labels.op)] = v.value;
      return out;
    };
    try {
      return await fn(store, txns);
    } finally {
      await store.close();
    }
  }

  it("commits 60 concurrent registrations in fewer transactions, each with its own record and lease", async () => {
    await withStore(async (store, txns) => {
      const lease = await store.grantLease(60);
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => store.commitNode(...registration(`n${i}`, `10.1.${i}.0/24`, lease))));
      assert.ok(results.every((r) => r.ok), "every registration committed");
      const counts = await txns();
      assert.ok((counts.register_nodes ?? 0) >= 1, `some registrations shared a transaction: ${JSON.stringify(counts)}`);
      assert.ok((counts.register_node ?? 0) + (counts.register_nodes ?? 0) < 60, `fewer transactions than registrations: ${JSON.stringify(counts)}`);
      const leases = await store.listLeases("blue");
      assert.equal(leases.length, 60);
      assert.deepEqual(new Set(leases.map((l) => l.node)).size, 60);
      assert.equal((await store.listNodes()).length, 60);
    });
  });

  it("a registration that loses its subnet in a batch fails alone, told which subnet was taken; the rest commit", async () => {
    await withStore(async (store) => {
      const lease = await store.grantLease(60);
      // Held before the batch: one of the claims below cannot succeed.
      assert.ok((await store.commitNode(...registration("holder", "10.2.7.0/24", lease))).ok);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.commitNode(...registration(`m${i}`, `10.2.${i}.0/24`, lease))));
      results.forEach((r, i) => {
        if (i === 7) {
          assert.equal(r.ok, false, "m7's subnet is held by another node");
          assert.deepEqual(!r.ok && r.taken.map((t) => t.subnet), ["10.2.7.0/24"]);
        } else assert.equal(r.ok, true, `m${i} committed`);
      });
      const leases = await store.listLeases("blue");
      assert.equal(leases.find((l) => l.subnet === "10.2.7.0/24")?.node, "holder", "the held subnet kept its node");
      assert.equal(leases.length, 20);
      assert.equal((await store.getNode("m7")), undefined, "the loser's node record was not written");
    });
  });

  it("two registrations claiming one subnet in the same burst: exactly one gets it", async () => {
    await withStore(async (store) => {
      const lease = await store.grantLease(60);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.commitNode(...registration(`p${i}`, "10.3.0.0/24", lease))));
      assert.equal(results.filter((r) => r.ok).length, 1, "one winner");
      const leases = await store.listLeases("blue");
      assert.equal(leases.length, 1);
    });
  });
});
