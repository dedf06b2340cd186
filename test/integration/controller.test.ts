import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { ControllerClient } from "../../pkg/api/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { Store } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

describe("controller (real etcd, real gRPC)", function () {
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
  function agent(c: RunningController, name: string, i: number, networks: string[]): SimAgent {
    const a = new SimAgent(`127.0.0.1:${c.port}`, simJoinRequest(name, i, networks));
    agents.push(a);
    return a;
  }

  beforeEach(() => {
    // Each test gets its own key space in the shared etcd.
    prefix = `/weft-test-${++n}/`;
    store = Store.connect({ endpoints: [etcd.endpoint], prefix });
  });
  afterEach(async () => {
    agents.splice(0).forEach((a) => a.close());
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    await store.close();
  });

  it("gives a joining node a subnet and tells the other nodes about it", async () => {
    await store.saveNetwork(netSpec("blue", "10.50.0.0/16", 50), () => {});
    const c = await controller();
    const a = agent(c, "node-a", 1, ["blue"]);
    await a.connect();
    const subnetA = a.subnet("blue");
    assert.match(subnetA ?? "", /^10\.50\.\d+\.0\/24$/);
    assert.deepEqual(a.peers("blue"), []);
    const net = a.desired.networks.get("blue")!;
    assert.equal(net.vni, 50);
    assert.equal(net.mtu, 1450, "MTU defaults to the uplink's 1500 - 50");
    assert.equal(net.default, true, "the only network is the default one");

    const b = agent(c, "node-b", 2, ["blue"]);
    await b.connect();
    assert.deepEqual(b.peers("blue"), ["node-a"]);
    const peerA = b.desired.networks.get("blue")!.peers.get("node-a")!;
    assert.equal(peerA.subnet, subnetA);
    assert.equal(peerA.underlayIp, "172.20.0.1");
    assert.equal(peerA.vtepMac, a.request.vtepMacs.blue);
    await waitFor("node-a to hear about node-b", () => a.peers("blue").includes("node-b"));
    assert.notEqual(b.subnet("blue"), subnetA);

    const leases = await store.listLeases("blue");
    assert.deepEqual(leases.map((l) => l.node).sort(), ["node-a", "node-b"]);
  });

  it("keeps a node's subnet across agent and controller restarts, and sends a fresh snapshot", async () => {
    await store.saveNetwork(netSpec("blue", "10.51.0.0/16", 51), () => {});
    let c = await controller();
    const a = agent(c, "node-a", 1, ["blue"]);
    const b = agent(c, "node-b", 2, ["blue"]);
    await a.connect();
    await b.connect();
    const before = { a: a.subnet("blue"), b: b.subnet("blue") };

    a.close(); // agent restart
    const a2 = agent(c, "node-a", 1, ["blue"]);
    await a2.connect();
    assert.equal(a2.subnet("blue"), before.a);

    await c.stop(); // controller restart with agents connected
    controllers.splice(controllers.indexOf(c), 1);
    const status = await b.waitEnded();
    assert.equal(status.code, grpc.status.UNAVAILABLE);
    c = await controller();
    const b2 = agent(c, "node-b", 2, ["blue"]);
    const a3 = agent(c, "node-a", 1, ["blue"]);
    await b2.connect();
    await a3.connect();
    assert.equal(b2.snapshots, 1);
    assert.equal(b2.subnet("blue"), before.b);
    assert.equal(a3.subnet("blue"), before.a);
    assert.deepEqual(b2.peers("blue"), ["node-a"]);
    assert.equal((await store.listLeases("blue")).length, 2, "no extra leases after restarts");
  });

  it("updates peers when a node's VTEP MAC or underlay IP changes", async () => {
    await store.saveNetwork(netSpec("blue", "10.52.0.0/16", 52), () => {});
    const c = await controller();
    const a = agent(c, "node-a", 1, ["blue"]);
    const b = agent(c, "node-b", 2, ["blue"]);
    await a.connect();
    await b.connect();
    a.rejoin({ vtepMacs: { blue: "02:aa:bb:cc:dd:ee" }, underlayIp: "172.20.9.9" });
    await waitFor("node-b to see node-a's new MAC", () => b.desired.networks.get("blue")?.peers.get("node-a")?.vtepMac === "02:aa:bb:cc:dd:ee");
    assert.equal(b.desired.networks.get("blue")!.peers.get("node-a")!.underlayIp, "172.20.9.9");
    const lease = (await store.listLeases("blue")).find((l) => l.node === "node-a")!;
    assert.equal(lease.vtepMac, "02:aa:bb:cc:dd:ee");
  });

  it("withholds a peer until its VTEP MAC is known", async () => {
    await store.saveNetwork(netSpec("blue", "10.53.0.0/16", 53), () => {});
    const c = await controller();
    const a = agent(c, "node-a", 1, []); // no MACs yet, as on a first start
    const b = agent(c, "node-b", 2, ["blue"]);
    await a.connect();
    await b.connect();
    assert.ok(a.subnet("blue"), "a node gets its subnet before it has a MAC");
    assert.deepEqual(b.peers("blue"), []);
    a.rejoin({ vtepMacs: { blue: "02:00:00:00:00:0a" } });
    await waitFor("node-b to learn node-a", () => b.peers("blue").includes("node-a"));
  });

  it("removes a node's entries from its peers when the node is removed", async () => {
    await store.saveNetwork(netSpec("blue", "10.54.0.0/16", 54), () => {});
    const c = await controller();
    const a = agent(c, "node-a", 1, ["blue"]);
    const b = agent(c, "node-b", 2, ["blue"]);
    await a.connect();
    await b.connect();
    a.close();
    assert.equal(await store.removeNode("node-a"), true);
    await waitFor("node-b to drop node-a", () => !b.peers("blue").includes("node-a"));
    assert.deepEqual((await store.listLeases("blue")).map((l) => l.node), ["node-b"]);
    assert.deepEqual((await store.listNodes()).map((x) => x.name), ["node-b"]);
  });

  it("reclaims a subnet only after its lease expires, and peers drop the node then", async () => {
    await store.saveNetwork(netSpec("blue", "10.55.0.0/16", 55), () => {});
    const c = await controller({ leaseTtlSeconds: 5 });
    const a = agent(c, "node-a", 1, ["blue"]);
    const b = agent(c, "node-b", 2, ["blue"]);
    await a.connect();
    await b.connect();
    // A connected node keeps its lease well past the TTL: the controller renews it.
    await new Promise((r) => setTimeout(r, 7000));
    assert.deepEqual(b.peers("blue"), ["node-a"]);
    a.close();
    const gone = Date.now();
    await waitFor("node-a's lease to expire", () => !b.peers("blue").includes("node-a"), 20_000, 100);
    assert.ok(Date.now() - gone >= 3000, "not reclaimed long before the TTL");
    assert.deepEqual((await store.listLeases("blue")).map((l) => l.node), ["node-b"]);
  });

  it("reports an exhausted pool for one network and still serves the others", async () => {
    await store.saveNetwork(netSpec("tiny", "10.56.0.0/23", 56), () => {}); // two /24s
    await store.saveNetwork(netSpec("big", "10.57.0.0/16", 57, { default: true }), () => {});
    const c = await controller();
    const nodes = [1, 2, 3].map((i) => agent(c, `node-${i}`, i, ["tiny", "big"]));
    for (const a of nodes) await a.connect();
    const tiny = nodes.map((a) => a.desired.networks.get("tiny")!);
    assert.equal(tiny.filter((t) => t.subnet).length, 2);
    const starved = tiny.find((t) => !t.subnet)!;
    assert.match(starved.error, /tiny.*exhausted/);
    assert.ok(nodes.every((a) => a.subnet("big")), "the other network is served to every node");
    const metrics = await c.registry.getSingleMetricAsString("weft_controller_allocation_failures_total");
    assert.match(metrics, /network="tiny",reason="pool_exhausted"\} [1-9]/);
  });

  it("rejects malformed and invalid Join requests with INVALID_ARGUMENT", async () => {
    await store.saveNetwork(netSpec("blue", "10.58.0.0/16", 58), () => {});
    const c = await controller();
    const bad = [
      { nodeName: "Not_A_Node" },
      { underlayIp: "300.1.2.3" },
      { vtepMacs: { blue: "ff:ff:ff:ff:ff:ff" } },
      { previousSubnets: { blue: "10.58.1.5/24" } },
    ];
    for (const [i, change] of bad.entries()) {
      const a = new SimAgent(`127.0.0.1:${c.port}`, { ...simJoinRequest(`node-${i}`, i, ["blue"]), ...change });
      agents.push(a);
      await assert.rejects(a.connect(), (err: { code?: number; message: string }) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.message);
        assert.match(err.message, new RegExp(Object.keys(change)[0].replace(/[A-Z]/g, (m) => "_" + m.toLowerCase())));
        return true;
      });
    }
    // An ack before join.
    const client = new ControllerClient(`127.0.0.1:${c.port}`, grpc.credentials.createInsecure());
    const early = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.join();
      call.on("status", resolve);
      call.on("error", () => {});
      call.on("data", () => {});
      call.write({ msg: { $case: "ack", value: { revision: 1, error: "" } } });
    });
    client.close();
    assert.equal(early.code, grpc.status.INVALID_ARGUMENT);
    assert.match(early.details, /first message must be join/);
    // Raw bytes that are not a protobuf AgentMessage.
    const Raw = grpc.makeGenericClientConstructor({
      join: { path: "/weft.v1.Controller/Join", requestStream: true, responseStream: true, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
    }, "Controller");
    const raw = new Raw(`127.0.0.1:${c.port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & { join: () => grpc.ClientDuplexStream<Buffer, Buffer> };
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = raw.join();
      call.on("status", resolve);
      call.on("error", () => {});
      call.on("data", () => {});
      call.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    });
    raw.close();
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    assert.match(status.details, /malformed/);
    // The controller is still serving.
    const ok = agent(c, "node-ok", 20, ["blue"]);
    await ok.connect();
    assert.ok(ok.subnet("blue"));
  });

  it("hands out distinct subnets to 200 agents joining at once through two replicas", async function () {
    this.timeout(120_000);
    await store.saveNetwork(netSpec("blue", "10.60.0.0/16", 60), () => {});
    const [c1, c2] = [await controller(), await controller()];
    const all = Array.from({ length: 200 }, (_, i) => agent(i % 2 ? c1 : c2, `node-${i}`, i + 1, ["blue"]));
    await Promise.all(all.map((a) => a.connect(90_000)));
    const leases = await store.listLeases("blue");
    assert.equal(leases.length, 200);
    assert.equal(new Set(leases.map((l) => l.subnet)).size, 200, "no subnet leased twice");
    assert.equal(new Set(leases.map((l) => l.node)).size, 200, "no node holds two subnets");
    const nodes = await store.listNodes();
    for (const node of nodes) {
      const lease = leases.find((l) => l.node === node.name)!;
      assert.equal(node.subnets.blue, lease.subnet, `node record of ${node.name} matches its lease`);
    }
    for (const a of all) assert.equal(a.subnet("blue"), leases.find((l) => l.node === a.request.nodeName)!.subnet);
    await waitFor("every agent to see 199 peers", () => all.every((a) => a.peers("blue").length === 199), 60_000, 100);
  });

  it("elects exactly one leader among replicas, and another after it stops", async () => {
    const c1 = await controller();
    const c2 = await controller();
    await waitFor("a leader", () => c1.isLeader() || c2.isLeader());
    assert.notEqual(c1.isLeader(), c2.isLeader());
    const [leader, other] = c1.isLeader() ? [c1, c2] : [c2, c1];
    await leader.stop();
    controllers.splice(controllers.indexOf(leader), 1);
    await waitFor("the other replica to take over", () => other.isLeader(), 20_000, 100);
  });
});
