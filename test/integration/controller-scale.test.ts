// The controller at scale, with a real etcd and real gRPC streams: a stalled
// agent is bounded and resynced, GC handles more victims than one etcd txn
// may hold, and a view larger than gRPC's 4 MiB receive limit loads.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { ControllerClient } from "../../pkg/api/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { collectGarbage } from "../../pkg/controller/leader.js";
import { silentLogger } from "../../pkg/log/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { Store, type LeaseRecord, type NodeRecord } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

async function metric(c: RunningController, name: string): Promise<number> {
  const m = await c.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((s, v) => s + v.value, 0) ?? NaN;
}

/** Writes keys with puts grouped 64 to a txn (etcd's --max-txn-ops is 128). */
async function putMany(store: Store, kvs: [string, unknown][]): Promise<void> {
  for (let i = 0; i < kvs.length; i += 64) {
    const chunk = kvs.slice(i, i + 64);
    await store.client.kv.txn({ compare: [], success: chunk.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(JSON.stringify(v)) } })), failure: [] });
  }
}

describe("controller at scale (real etcd, real gRPC)", function () {
  this.timeout(300_000);
  const etcd = useEtcd();
  let n = 0;
  let prefix = "";
  let store: Store;
  const controllers: RunningController[] = [];
  const agents: SimAgent[] = [];
  const clients: ControllerClient[] = [];

  beforeEach(() => {
    prefix = `/weft-scale-${++n}/`;
    store = Store.connect({ endpoints: [etcd.endpoint], prefix });
  });
  afterEach(async () => {
    agents.splice(0).forEach((a) => a.close());
    clients.splice(0).forEach((c) => c.close());
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    await store.close();
  });

  it("resyncs an agent that stopped reading while 500 nodes joined and left, holding a bounded amount for it meanwhile", async () => {
    await store.saveNetwork(netSpec("blue", "10.0.0.0/8", 90, { nodePrefixLength: 24 }), () => {});
    const bound = 64 * 1024;
    // Unpaced: storm pacing coalesces the churn into few large messages, and the stalled
    // client's call buffers 16 messages whatever their size, so it could absorb the whole
    // churn and never fall behind. The bound is what this test is about.
    const c = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, listen: "127.0.0.1:0", log: silentLogger(), streamLagBytes: bound, stormPacing: false });
    controllers.push(c);
    const addr = `127.0.0.1:${c.port}`;
    const client = new ControllerClient(addr, grpc.credentials.createInsecure());
    clients.push(client);
    // Long node names make each peer entry ~300 bytes, so the churn is far more than the transport's window.
    const name = (i: number) => `n${i}-${"x".repeat(240)}`;
    const stay: SimAgent[] = [];
    for (let i = 0; i < 20; i++) stay.push(new SimAgent(addr, simJoinRequest(name(i), i + 1, ["blue"]), { client }));
    agents.push(...stay);
    await Promise.all(stay.map((a) => a.connect()));
    const stalled = stay[0];
    const snapshotsBefore = stalled.snapshots;
    stalled.stall();

    const churn: SimAgent[] = [];
    for (let i = 20; i < 520; i++) churn.push(new SimAgent(addr, simJoinRequest(name(i), i + 1, ["blue"]), { client }));
    agents.push(...churn);
    for (let i = 0; i < churn.length; i += 25) await Promise.all(churn.slice(i, i + 25).map((a) => a.connect()));
    // ... and leave for good.
    for (const a of churn) {
      a.close();
      await store.removeNode(a.request.nodeName);
    }
    await waitFor("the controller to switch the stalled stream to a resync", async () => (await metric(c, "weft_controller_stream_resyncs_total")) >= 1, 60_000, 50);
    // The other agents read: once their snapshots are through, what is left is the stalled stream's.
    await waitFor("the reading agents' streams to drain", async () => (await metric(c, "weft_controller_stream_buffered_bytes_max")) <= bound, 60_000, 50);
    const held = await metric(c, "weft_controller_stream_buffered_bytes_max");
    assert.ok(held > 0, "the stalled stream holds what the transport did not take");
    assert.ok(held <= bound, `bytes held for the stalled stream: ${held}, bound ${bound}`);

    stalled.unstall();
    const expected = stay.slice(1).map((a) => a.request.nodeName).sort();
    // Before the stall it held exactly these too: what matters is that it holds them after a fresh snapshot.
    await waitFor("the stalled agent to get a fresh snapshot", () => stalled.snapshots > snapshotsBefore, 60_000, 50);
    await waitFor("the stalled agent to hold exactly the remaining peers", () => JSON.stringify(stalled.peers("blue")) === JSON.stringify(expected), 60_000, 50);
    assert.equal(stalled.ended, false, "its stream stayed open");
  });

  it("garbage-collects more than 300 orphaned leases in one pass", async () => {
    await store.saveNetwork(netSpec("blue", "10.0.0.0/8", 91, { nodePrefixLength: 24 }), () => {});
    const orphans: [string, LeaseRecord][] = [];
    for (let i = 0; i < 350; i++) {
      const subnet = `10.${i >> 8}.${i & 255}.0/24`;
      orphans.push([store.keys.lease("blue", subnet), { network: "blue", subnet, node: `gone-${i}`, vtepIP: "192.0.2.1", vtepMac: "02:00:00:00:00:01", acquired: "", renewed: "" }]);
    }
    await putMany(store, orphans);
    const lease = await store.grantLease(30);
    assert.ok(await store.tryLead("test", lease));
    const deleted = await collectGarbage(store, lease, silentLogger());
    assert.equal(deleted, 350);
    assert.equal((await store.listLeases("blue")).length, 0);
    await store.revokeLease(lease);
  });

  it("loads and serves a view larger than 4 MiB (5000 nodes with 1 KB of labels each)", async () => {
    await store.saveNetwork(netSpec("blue", "10.0.0.0/8", 92, { nodePrefixLength: 24 }), () => {});
    const labels = Object.fromEntries(Array.from({ length: 16 }, (_, k) => [`example.com/label-${k}`, "v".repeat(40)]));
    const kvs: [string, unknown][] = [];
    for (let i = 0; i < 5000; i++) {
      const node = `big-${i}`;
      const subnet = `10.${i >> 8}.${i & 255}.0/24`;
      const ip = `172.21.${i >> 8}.${i & 255}`;
      const mac = `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
      const rec: NodeRecord = { name: node, underlayIP: ip, labels, agentVersion: "t", uplinkMtu: 1500, vtepMacs: { blue: mac }, subnets: { blue: subnet }, lastSeen: "" };
      kvs.push([store.keys.node(node), rec]);
      kvs.push([store.keys.lease("blue", subnet), { network: "blue", subnet, node, vtepIP: ip, vtepMac: mac, acquired: "", renewed: "" } satisfies LeaseRecord]);
    }
    await putMany(store, kvs);
    const size = kvs.reduce((s, [k, v]) => s + k.length + JSON.stringify(v).length, 0);
    assert.ok(size > 4 * 1024 * 1024, `the view is ${size} bytes`);

    const c = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, listen: "127.0.0.1:0", log: silentLogger() });
    controllers.push(c);
    assert.equal(c.model.nodes.size, 5000);
    const a = new SimAgent(`127.0.0.1:${c.port}`, simJoinRequest("newcomer", 9999, ["blue"]));
    agents.push(a);
    await a.connect();
    assert.equal(a.peers("blue").length, 5000);
  });
});
