// The endpoint registry in the controller: real etcd, a real controller, and
// simulated agents on real gRPC streams sending EndpointReports the way the
// agent's relay does. Checks what is stored (keys, etcd lease), what members
// are told (EndpointUpdates, only for networks that are switched or have DNS),
// what is refused, and that endpoints vanish with their node.
import assert from "node:assert/strict";
import type { ConfigUpdate, Endpoint, EndpointReport } from "../../pkg/api/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store, type EndpointRecord } from "../../pkg/store/index.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";

async function metric(c: RunningController, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = c.registry.getSingleMetric(name);
  if (!m) return 0;
  const values = (await m.get()).values as { value: number; labels: Record<string, string | number>; metricName?: string }[];
  return values
    .filter((v) => (v.metricName === undefined || v.metricName === name || v.metricName === `${name}_count`) && Object.entries(labels).every(([k, x]) => v.labels[k] === x))
    .reduce((s, v) => s + v.value, 0);
}

/** A pod interface on `subnet` (its host .10 + i). */
function ep(network: string, subnet: string, i: number, extra: Partial<Endpoint> = {}): Endpoint {
  const base = subnet.replace(/\.0\/\d+$/, "");
  return { id: `ctr${i}/eth0`, nodeName: "", network, name: `pod${i}`, aliases: [`alias${i}`], ips: [`${base}.${10 + i}`], mac: `02:aa:00:00:00:${(i % 256).toString(16).padStart(2, "0")}`, ...extra };
}

function report(full: boolean, endpoints: Endpoint[], removed: string[] = []): EndpointReport {
  return { full, endpoints, removed };
}

describe("endpoint registry (real etcd, controller, gRPC streams)", function () {
  this.timeout(60_000);
  const etcd = useEtcd();
  let prefix = "";
  let n = 0;
  let store: Store;
  const controllers: RunningController[] = [];
  const agents: SimAgent[] = [];

  async function controller(extra: { leaseTtlSeconds?: number } = {}): Promise<RunningController> {
    const c = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, listen: "127.0.0.1:0", log: silentLogger(), ...extra });
    controllers.push(c);
    return c;
  }

  async function agent(c: RunningController, name: string, i: number, onUpdate?: (u: ConfigUpdate) => void): Promise<SimAgent> {
    const a = new SimAgent(`127.0.0.1:${c.port}`, simJoinRequest(name, i, ["blue", "plain"]), { onUpdate });
    agents.push(a);
    await a.connect();
    await waitFor(`${name} to hold subnets`, () => !!a.subnet("blue") && !!a.subnet("plain"), 10_000, 10);
    return a;
  }

  const endpointsOf = (a: SimAgent, network: string) =>
    [...(a.desired.networks.get(network)?.endpoints.values() ?? [])].map((e) => `${e.nodeName}/${e.id} ${e.name} ${e.ips.join(",")} ${e.mac}`).sort();
  const stored = async (): Promise<EndpointRecord[]> => (await store.listEndpoints()).sort((x, y) => `${x.network}/${x.node}/${x.id}`.localeCompare(`${y.network}/${y.node}/${y.id}`));

  beforeEach(async () => {
    prefix = `/weft-ep-${++n}/`;
    store = Store.connect({ endpoints: [etcd.endpoint], prefix });
    // blue: routed with DNS (its members hear endpoints); plain: routed without (they do not).
    await store.saveNetwork(netSpec("blue", "10.60.0.0/16", 60, { dns: true, default: true }), () => {});
    await store.saveNetwork(netSpec("plain", "10.61.0.0/16", 61), () => {});
  });
  afterEach(async () => {
    agents.splice(0).forEach((a) => a.close());
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    await store.close();
  });

  it("stores a full report bound to the node's etcd lease and tells every member of a DNS network, never a network without", async () => {
    const c = await controller();
    const plainUpdates: ConfigUpdate[] = [];
    const a = await agent(c, "node-a", 1);
    const b = await agent(c, "node-b", 2, (u) => {
      if (u.endpointUpdates.some((e) => e.network === "plain")) plainUpdates.push(u);
    });
    const blueA = a.subnet("blue")!;
    const plainA = a.subnet("plain")!;
    a.send({ msg: { $case: "endpoints", value: report(true, [ep("blue", blueA, 1), ep("plain", plainA, 2)]) } });

    await waitFor("both endpoints in etcd", async () => (await stored()).length === 2, 10_000, 20);
    const [blue, plain] = await stored();
    const ip1 = blueA.replace(/\.0\/24$/, ".11");
    assert.deepEqual(blue, { id: "ctr1/eth0", network: "blue", node: "node-a", name: "pod1", aliases: ["alias1"], ips: [ip1], mac: "02:aa:00:00:00:01" });
    assert.equal(plain.network, "plain");
    // Bound to the node's etcd lease, under the documented key with the id's slash escaped.
    const node = await store.getNode("node-a");
    const kv = await store.etcd.getKv(`${prefix}endpoints/blue/node-a/ctr1%2Feth0`, "test");
    assert.ok(kv, "endpoints/<network>/<node>/<id> exists");
    assert.equal(String(kv!.lease), node!.lease);
    assert.notEqual(node!.lease, "0");

    const want = [`node-a/ctr1/eth0 pod1 ${ip1} 02:aa:00:00:00:01`];
    await waitFor("B to hear about A's endpoint", () => endpointsOf(b, "blue").length === 1, 10_000, 10);
    assert.deepEqual(endpointsOf(b, "blue"), want);
    assert.deepEqual(b.desired.networks.get("blue")!.endpoints.get("node-a/ctr1/eth0")!.aliases, ["alias1"]);
    await waitFor("A to hear about its own endpoint (DNS answers for it)", () => endpointsOf(a, "blue").length === 1, 10_000, 10);

    // A delta: one removed, one added; only they change.
    a.send({ msg: { $case: "endpoints", value: report(false, [ep("blue", blueA, 3)], ["ctr1/eth0"]) } });
    const ip3 = blueA.replace(/\.0\/24$/, ".13");
    await waitFor("B to see the delta", () => endpointsOf(b, "blue").join() === `node-a/ctr3/eth0 pod3 ${ip3} 02:aa:00:00:00:03`, 10_000, 10);

    // A node joining later gets the complete set in its snapshot.
    const late = await agent(c, "node-c", 3);
    await waitFor("the late joiner's snapshot to carry the set", () => endpointsOf(late, "blue").length === 1, 10_000, 10);
    assert.deepEqual(endpointsOf(late, "blue"), endpointsOf(b, "blue"));

    assert.deepEqual(endpointsOf(b, "plain"), [], "a routed network without dns is told no endpoints");
    assert.deepEqual(plainUpdates, [], "no EndpointUpdate for the routed network without dns");
    assert.equal((await stored()).filter((e) => e.network === "plain").length, 1, "it is stored all the same (weftctl endpoint list shows it)");
  });

  it("diffs a full report against what is stored: an unchanged one writes nothing, a new stream's full report removes what is gone", async () => {
    const c = await controller();
    const a = await agent(c, "node-a", 1);
    const s = a.subnet("blue")!;
    // 200 endpoints: more than one transaction may hold (etcd's --max-txn-ops is 128).
    const many = Array.from({ length: 200 }, (_, i) => ep("blue", s, i, { ips: [s.replace(/\.0\/24$/, `.${(i % 250) + 2}`)] }));
    a.send({ msg: { $case: "endpoints", value: report(true, many) } });
    await waitFor("200 endpoints stored", async () => (await stored()).length === 200, 20_000, 50);
    // 200 puts take 4 transactions of at most 64 ops (the list may see the last one before the controller has its answer).
    await waitFor("4 transactions", async () => (await metric(c, "weft_controller_etcd_operation_seconds", { op: "write_endpoints" })) === 4, 10_000, 20);
    const writes = 4;

    // The same full report again, then one more endpoint: only that one is written.
    a.send({ msg: { $case: "endpoints", value: report(true, many) } });
    a.send({ msg: { $case: "endpoints", value: report(false, [ep("blue", s, 250, { ips: [s.replace(/\.0\/24$/, ".253")] })]) } });
    await waitFor("the extra endpoint stored", async () => (await stored()).length === 201, 10_000, 20);
    // Writes of one node run one after another: once the extra one's answer is in, any write before it is counted too.
    await waitFor("the extra write's answer", async () => (await metric(c, "weft_controller_etcd_operation_seconds", { op: "write_endpoints" })) >= writes + 1, 10_000, 20);
    assert.equal(await metric(c, "weft_controller_etcd_operation_seconds", { op: "write_endpoints" }), writes + 1, "the unchanged full report wrote nothing");

    // The agent reconnects (a new stream) with only 2 endpoints left: the rest go.
    a.close();
    const again = new SimAgent(`127.0.0.1:${c.port}`, simJoinRequest("node-a", 1, ["blue", "plain"]));
    agents.push(again);
    await again.connect();
    again.send({ msg: { $case: "endpoints", value: report(true, many.slice(0, 2)) } });
    await waitFor("only 2 endpoints left", async () => (await stored()).length === 2, 20_000, 50);
    assert.deepEqual((await stored()).map((e) => e.id), ["ctr0/eth0", "ctr1/eth0"]);
  });

  it("skips and counts reported endpoints that are invalid or outside the node's networks, naming nothing half-written", async () => {
    const c = await controller();
    const a = await agent(c, "node-a", 1);
    const s = a.subnet("blue")!;
    a.send({
      msg: {
        $case: "endpoints",
        value: report(true, [
          ep("blue", s, 1, { mac: "not-a-mac" }),
          ep("blue", s, 2, { ips: ["10.60.1.300"] }),
          ep("blue", s, 3, { id: "no-slash" }),
          ep("blue", s, 4, { ips: ["192.0.2.7"] }), // outside blue's CIDR
          ep("green", s, 5), // no such network
          ep("blue", s, 6), // the good one
        ]),
      },
    });
    await waitFor("the good endpoint stored", async () => (await stored()).length === 1, 10_000, 20);
    assert.equal((await stored())[0].id, "ctr6/eth0");
    await waitFor("rejections counted", async () => (await metric(c, "weft_controller_endpoints_rejected_total", { reason: "not_member" })) === 2, 10_000, 20);
    assert.equal(await metric(c, "weft_controller_endpoints_rejected_total", { reason: "invalid" }), 3);
    assert.equal(a.ended, false, "a bad endpoint does not cost the node its stream");
  });

  it("an endpoint the view cannot decode is logged, counted as invalid_records{kind=endpoint}, and never distributed", async () => {
    const c = await controller();
    const b = await agent(c, "node-b", 2);
    await store.client.put(`${prefix}endpoints/blue/node-x/ctr9%2Feth0`).value(JSON.stringify({ id: "ctr9/eth0", network: "blue", node: "node-x", ips: ["nope"], mac: "02:00:00:00:00:09" }));
    await waitFor("the bad value counted", async () => (await metric(c, "weft_controller_invalid_records", { kind: "endpoint" })) === 1, 10_000, 20);
    // A good one written after it does reach B, so the watch went on.
    await store.client.put(`${prefix}endpoints/blue/node-x/ctr8%2Feth0`).value(JSON.stringify({ id: "ctr8/eth0", network: "blue", node: "node-x", name: "", aliases: [], ips: ["10.60.200.8"], mac: "02:00:00:00:00:08" }));
    await waitFor("B to hear the good one", () => endpointsOf(b, "blue").length === 1, 10_000, 10);
    assert.deepEqual(endpointsOf(b, "blue"), ["node-x/ctr8/eth0  10.60.200.8 02:00:00:00:00:08"]);
  });

  it("endpoints vanish with their node: when its lease expires, and when it is removed", async () => {
    const c = await controller({ leaseTtlSeconds: 2 });
    const a = await agent(c, "node-a", 1);
    const b = await agent(c, "node-b", 2);
    a.send({ msg: { $case: "endpoints", value: report(true, [ep("blue", a.subnet("blue")!, 1)]) } });
    b.send({ msg: { $case: "endpoints", value: report(true, [ep("blue", b.subnet("blue")!, 2)]) } });
    await waitFor("both stored", async () => (await stored()).length === 2, 10_000, 20);
    await waitFor("B to hear both", () => endpointsOf(b, "blue").length === 2, 10_000, 10);

    // A's agent goes away: nobody renews its lease, which expires after the TTL with everything bound to it.
    a.close();
    await waitFor("A's endpoint gone with its lease", async () => (await stored()).map((e) => e.node).join() === "node-b", 20_000, 100);
    await waitFor("B to drop A's endpoint", () => endpointsOf(b, "blue").length === 1, 10_000, 10);

    assert.equal(await store.removeNode("node-b"), true);
    await waitFor("B's endpoint gone with the node", async () => (await stored()).length === 0, 10_000, 20);
  });
});
