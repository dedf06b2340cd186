// The controller's pure core: the Model built from etcd events, and the
// distributor that turns model changes into snapshots and coalesced deltas
// read from per-network change logs. The stream is an in-memory fake that
// decodes what the distributor writes, exactly as an agent would.
import assert from "node:assert/strict";
import { applyConfigUpdate, ConfigUpdate, emptyDesired, type DesiredConfig } from "../../pkg/api/index.js";
import { desiredHeaders, Distributor, Model, type NodeContext, type Subscriber } from "../../pkg/controller/index.js";
import { Keys, type LeaseRecord, type NetworkSpec, type NodeRecord, type StoreEvent } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";

const keys = new Keys("/t/");
let rev = 1;

function putNetwork(spec: NetworkSpec): StoreEvent {
  return { type: "put", key: keys.parse(keys.network(spec.name))!, record: { kind: "network", value: spec }, lease: "0", modRevision: ++rev };
}
function delNetwork(name: string): StoreEvent {
  return { type: "delete", key: keys.parse(keys.network(name))!, modRevision: ++rev };
}
function putNode(name: string, labels: Record<string, string> = {}): StoreEvent {
  const rec: NodeRecord = { name, underlayIP: "192.0.2.1", labels, agentVersion: "t", uplinkMtu: 1500, vtepMacs: {}, subnets: {}, lastSeen: "" };
  return { type: "put", key: keys.parse(keys.node(name))!, record: { kind: "node", value: rec }, lease: "7", modRevision: ++rev };
}
function putLease(network: string, subnet: string, node: string, vtepMac = `02:00:00:00:00:${node.slice(-2).padStart(2, "0")}`, vtepIP = "192.0.2.9"): StoreEvent {
  const rec: LeaseRecord = { network, subnet, node, vtepIP, vtepMac, acquired: "", renewed: "" };
  return { type: "put", key: keys.parse(keys.lease(network, subnet))!, record: { kind: "lease", value: rec }, lease: "7", modRevision: ++rev };
}
function delLease(network: string, subnet: string): StoreEvent {
  return { type: "delete", key: keys.parse(keys.lease(network, subnet))!, modRevision: ++rev };
}

/** A subscriber whose stream decodes every message; `stalled` holds back the transport's completions. */
class FakeAgent implements Subscriber {
  received: ConfigUpdate[] = [];
  desired: DesiredConfig = emptyDesired();
  stalled = false;
  private held: (() => void)[] = [];
  readonly errors = new Map<string, string>();
  uplinkMtu = 1500;

  constructor(
    readonly node: string,
    public labels: Record<string, string> = {},
  ) {}

  readonly stream = {
    write: (chunk: Buffer | ConfigUpdate, cb: () => void): boolean => {
      const u = ConfigUpdate.decode(chunk as Buffer);
      this.received.push(u);
      this.desired = applyConfigUpdate(this.desired, u);
      if (this.stalled) this.held.push(cb);
      else cb();
      return true;
    },
    once: () => undefined,
  };
  sent(): void {}

  resume(): void {
    this.stalled = false;
    this.held.splice(0).forEach((cb) => cb());
  }

  take(): ConfigUpdate[] {
    return this.received.splice(0);
  }
}

function harness(opts: ConstructorParameters<typeof Distributor>[1] = {}) {
  const model = new Model();
  const d = new Distributor(model, opts);
  const agents = new Map<string, FakeAgent>();
  return {
    model,
    d,
    agent(node: string, labels: Record<string, string> = {}) {
      const a = new FakeAgent(node, labels);
      agents.set(node, a);
      d.add(a);
      d.flush();
      return a;
    },
    /** Applies events and flushes; returns what `a` received. */
    step(a: FakeAgent, ...events: StoreEvent[]) {
      this.apply(...events);
      d.flush();
      return a.take();
    },
    apply(...events: StoreEvent[]) {
      d.onChange(model.apply(events, rev), (n) => agents.get(n));
    },
  };
}

/** What a fresh snapshot for `ctx` must hold, computed from the model directly. */
function reference(model: Model, ctx: NodeContext) {
  return desiredHeaders(model, ctx).map((h) => ({ ...h, peers: h.subnet ? model.peersOf(h.name, ctx.node) : [] }));
}

function normalize(d: DesiredConfig | ReturnType<typeof reference>) {
  const nets = Array.isArray(d) ? d : [...d.networks.values()].map(({ endpoints: _endpoints, ...n }) => ({ ...n, peers: [...n.peers.values()] }));
  return nets
    .map((n) => ({ ...n, peers: [...n.peers].sort((x, y) => x.nodeName.localeCompare(y.nodeName)) }))
    .sort((x, y) => x.name.localeCompare(y.name));
}

describe("controller model and distributor (pure)", () => {
  it("snapshots only networks where the node has a subnet or a known error, with peers that have a MAC", () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putNetwork(netSpec("b", "10.2.0.0/16", 2)), putNetwork(netSpec("c", "10.3.0.0/16", 3)));
    h.apply(putLease("a", "10.1.1.0/24", "n01"), putLease("a", "10.1.2.0/24", "n02"), putLease("a", "10.1.3.0/24", "n03", ""));
    const a = new FakeAgent("n01");
    a.errors.set("c", "pool c is full");
    h.d.add(a);
    h.d.flush();
    const [snap] = a.take();
    assert.equal(snap.snapshot, true);
    assert.deepEqual(snap.networks.map((n) => n.name), ["a", "c"]);
    const net = snap.networks[0];
    assert.equal(net.subnet, "10.1.1.0/24");
    assert.equal(net.mtu, 1450);
    assert.deepEqual(net.peers.map((p) => p.nodeName), ["n02"], "n03 has no VTEP MAC yet, n01 is the node itself");
    assert.equal(snap.networks[1].subnet, "");
    assert.equal(snap.networks[1].error, "pool c is full");
  });

  it("sends peer adds, MAC changes and removals as peer updates, and nothing for unrelated changes", () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putLease("a", "10.1.1.0/24", "n01"));
    const a = h.agent("n01");
    assert.equal(a.take().length, 1);

    let d = h.step(a, putLease("a", "10.1.2.0/24", "n02"));
    assert.deepEqual(d[0]?.peerUpdates.map((u) => [u.peer?.nodeName, u.removed]), [["n02", false]]);
    assert.equal(d[0]?.networks.length, 0);

    assert.deepEqual(h.step(a, putNode("n09")), [], "a node without a lease changes nothing");
    assert.deepEqual(h.step(a, putLease("a", "10.1.2.0/24", "n02")), [], "an identical lease rewrite changes nothing");

    d = h.step(a, putLease("a", "10.1.2.0/24", "n02", "02:aa:aa:aa:aa:aa"));
    assert.equal(d[0]?.peerUpdates[0].peer?.vtepMac, "02:aa:aa:aa:aa:aa");

    d = h.step(a, putLease("a", "10.1.2.0/24", "n02", "02:aa:aa:aa:aa:aa", "192.0.2.77"));
    assert.equal(d[0]?.peerUpdates[0].peer?.underlayIp, "192.0.2.77");

    d = h.step(a, delLease("a", "10.1.2.0/24"));
    assert.deepEqual(d[0]?.peerUpdates.map((u) => [u.peer?.nodeName, u.removed]), [["n02", true]]);
    assert.deepEqual(h.step(a, delLease("a", "10.1.2.0/24")), []);
  });

  it("coalesces everything since the cursor into one message, newest entry per peer, never the node's own", () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putLease("a", "10.1.1.0/24", "n01"));
    const a = h.agent("n01");
    a.take();
    h.apply(putLease("a", "10.1.2.0/24", "n02"));
    h.apply(putLease("a", "10.1.2.0/24", "n02", "02:bb:bb:bb:bb:bb"));
    h.apply(putLease("a", "10.1.3.0/24", "n03"));
    h.apply(putLease("a", "10.1.1.0/24", "n01", "02:cc:cc:cc:cc:cc"));
    h.d.flush();
    const got = a.take();
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].peerUpdates.map((u) => [u.peer?.nodeName, u.peer?.vtepMac]), [["n02", "02:bb:bb:bb:bb:bb"], ["n03", "02:00:00:00:00:03"]]);
  });

  it("resends a network whole when its header changes, and removes networks the node left", () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putLease("a", "10.1.1.0/24", "n01"), putLease("a", "10.1.2.0/24", "n02"));
    const a = h.agent("n01");
    a.take();
    let d = h.step(a, putNetwork({ ...netSpec("a", "10.1.0.0/16", 1), mtu: 1400 }));
    assert.equal(d[0]?.networks.length, 1);
    assert.equal(d[0]?.networks[0].mtu, 1400);
    assert.deepEqual(d[0]?.networks[0].peers.map((p) => p.nodeName), ["n02"]);
    d = h.step(a, delNetwork("a"));
    assert.deepEqual(d[0]?.removedNetworks, ["a"]);
  });

  it("follows nodeSelector: a node whose labels do not match gets nothing", () => {
    const h = harness();
    h.apply(putNetwork({ ...netSpec("gpu", "10.5.0.0/16", 5), nodeSelector: { gpu: "yes" } }), putLease("gpu", "10.5.1.0/24", "n01"));
    assert.deepEqual(h.agent("n01", { gpu: "no" }).take()[0].networks, []);
    assert.equal(h.agent("n01", { gpu: "yes" }).take()[0].networks.length, 1);
  });

  it("switches a stream that falls behind by more than the byte bound to a snapshot, holding nothing for it meanwhile", () => {
    const h = harness({ maxLagBytes: 2048 });
    h.apply(putNetwork(netSpec("a", "10.0.0.0/8", 1)), putLease("a", "10.0.1.0/24", "n0001"));
    const a = h.agent("n0001");
    a.take();
    a.stalled = true;
    h.step(a, putLease("a", "10.0.2.0/24", "n0002")); // written, never completed by the transport
    for (let i = 3; i < 500; i++) h.apply(putLease("a", `10.${i >> 8}.${i & 255}.0/24`, `n${String(i).padStart(4, "0")}`));
    h.d.flush();
    a.take();
    assert.ok(h.d.bufferedBytes <= 2048, `buffered ${h.d.bufferedBytes} bytes for the stalled stream, bound 2048`);
    assert.ok(h.d.logBytes > 20_000, "the backlog is in the shared log, not in the stream");
    a.resume();
    h.d.flush();
    const got = a.take();
    assert.equal(got.length, 1);
    assert.equal(got[0].snapshot, true, "too far behind: a snapshot, not the backlog");
    const ref = normalize(reference(h.model, a));
    assert.equal(ref[0].peers.length, 498);
    assert.deepEqual(normalize(a.desired), ref);
  });

  it("coalesced deltas applied to a snapshot always equal a fresh snapshot (random event sequences, stalls, lag bound)", () => {
    // A small deterministic PRNG so a failure can be replayed.
    let seed = 12345;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const nodes = ["n01", "n02", "n03", "n04", "n05", "n06"];
    const nets = [netSpec("a", "10.1.0.0/16", 1), netSpec("b", "10.2.0.0/16", 2)];
    for (let round = 0; round < 60; round++) {
      // Storm pacing off: events are replayed here with no time passing (pacing is checked in the next test).
      const h = harness({ maxLagBytes: [256, 1024, 1 << 20][rand(3)], maxLogBytes: [512, 1 << 20][rand(2)], stormPacing: false });
      const agents = [h.agent("n01"), h.agent("n02", { x: "1" })];
      for (let i = 0; i < 80; i++) {
        const net = nets[rand(2)];
        const node = nodes[rand(nodes.length)];
        const subnet = `${net.cidr.split(".").slice(0, 2).join(".")}.${nodes.indexOf(node) + 1}.0/24`;
        const events: StoreEvent[] = [];
        switch (rand(7)) {
          case 0: events.push(putNetwork({ ...net, mtu: [0, 1400][rand(2)] })); break;
          case 1: events.push(delNetwork(net.name)); break;
          case 2: case 3: events.push(putLease(net.name, subnet, node, ["", "02:00:00:00:00:01", "02:00:00:00:00:02"][rand(3)])); break;
          case 4: events.push(delLease(net.name, subnet)); break;
          case 5: events.push(putNode(node)); break;
          case 6: {
            const a = agents[rand(2)];
            if (a.stalled) a.resume();
            else a.stalled = true;
          }
        }
        h.apply(...events);
        // Flush only now and then: several changes coalesce into one message.
        if (rand(3) === 0) h.d.flush();
      }
      for (const a of agents) a.resume();
      h.d.flush();
      for (const a of agents) {
        assert.deepEqual(normalize(a.desired), normalize(reference(h.model, a)), `round ${round}, ${a.node}`);
      }
    }
  });

  it("in a storm, a stream's deltas wait for the gap, then bring it to the fresh snapshot's state", async () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putLease("a", "10.1.1.0/24", "n01"));
    const a = h.agent("n01");
    a.take();
    h.apply(putLease("a", "10.1.2.0/24", "n02"));
    h.d.flush();
    assert.equal(a.take().length, 1, "the first change goes at once");
    // Hundreds of changes at once: a storm.
    for (let i = 3; i < 200; i++) {
      h.apply(putLease("a", `10.1.${i}.0/24`, `n${String(i).padStart(3, "0")}`));
      h.d.flush();
    }
    const during = a.take().length;
    // Unpaced, each of the 197 flushes would write one delta; the first few go before the rate estimate rises.
    assert.ok(during <= 10, `a few deltas for 197 changes flushed one by one, got ${during}`);
    await new Promise((r) => setTimeout(r, 600));
    h.d.flush();
    a.take();
    assert.deepEqual(normalize(a.desired), normalize(reference(h.model, a)), "after the gap the stream holds everything");
  });

  it("the first change after a storm goes at once, though the stream's last delta is younger than the storm's gap", async () => {
    const h = harness();
    h.apply(putNetwork(netSpec("a", "10.1.0.0/16", 1)), putLease("a", "10.1.1.0/24", "n01"));
    const a = h.agent("n01");
    a.take();
    for (let i = 2; i < 200; i++) {
      h.apply(putLease("a", `10.1.${i}.0/24`, `n${String(i).padStart(3, "0")}`));
      h.d.flush();
    }
    a.take();
    // Quiet for longer than a storm's pauses, shorter than its gap (which the rate's average still sets).
    await new Promise((r) => setTimeout(r, 350));
    a.take(); // what the paced flushes delivered meanwhile
    h.apply(putLease("a", "10.1.250.0/24", "n250"));
    h.d.flush();
    const next = a.take();
    assert.equal(next.length, 1, "one more join after a storm is sent at the first flush");
    assert.deepEqual(next[0].peerUpdates.map((u) => u.peer?.nodeName), ["n250"]);
    assert.deepEqual(normalize(a.desired), normalize(reference(h.model, a)));
  });
});
