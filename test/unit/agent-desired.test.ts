import assert from "node:assert/strict";
import { applyConfigUpdate, emptyDesired, type NetworkConfig, type Peer } from "../../pkg/api/index.js";
import { ConfigModel, toNetworkSpecs } from "../../pkg/agent/desired.js";

function peer(name: string, i: number, extra: Partial<Peer> = {}): Peer {
  return { nodeName: name, underlayIp: `192.168.1.${i}`, vtepMac: `02:00:00:00:00:0${i}`, subnet: `10.244.${i}.0/24`, ...extra };
}

function net(name: string, extra: Partial<NetworkConfig> = {}): NetworkConfig {
  return {
    name, vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true,
    default: false, flood: false, dns: false, subnet: "10.244.1.0/24", error: "", peers: [peer("node-b", 2), peer("node-c", 3)], ...extra,
  };
}

function config(...nets: NetworkConfig[]) {
  return applyConfigUpdate(emptyDesired(), { revision: 7, snapshot: true, networks: nets, removedNetworks: [], peerUpdates: [], endpointUpdates: [] });
}

describe("agent: NetworkConfig -> NetworkSpec", () => {
  it("copies every network field, without the peers (they go to the dataplane one by one)", () => {
    const { specs, skipped } = toNetworkSpecs(config(net("blue")), {});
    assert.deepEqual(skipped, []);
    assert.deepEqual(specs, [{ name: "blue", vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true, flood: false, dns: false, isDefault: true, subnet: "10.244.1.0/24" }]);
  });

  it("passes the kept VTEP MAC of the network's device, normalised", () => {
    const { specs } = toNetworkSpecs(config(net("blue"), net("red", { vni: 43 })), { blue: "02:AA:BB:CC:DD:EE" });
    assert.equal(specs[0].vtepMac, "02:aa:bb:cc:dd:ee");
    assert.equal("vtepMac" in specs[1], false);
  });

  it("does not program a network without a subnet, and says why", () => {
    const { specs, skipped } = toNetworkSpecs(config(net("blue", { subnet: "", error: "pool exhausted" }), net("red", { vni: 43 })), {});
    assert.deepEqual(specs.map((n) => n.name), ["red"]);
    assert.deepEqual(skipped, [{ network: "blue", reason: "no subnet: pool exhausted" }]);
    assert.equal(toNetworkSpecs(config(net("blue", { subnet: "" })), {}).skipped[0].reason, "no subnet assigned");
  });

  for (const [field, bad, expect] of [
    ["mode", { mode: "bridged" }, /mode "bridged"/],
    ["vni 0", { vni: 0 }, /vni 0/],
    ["vni too big", { vni: 16_777_216 }, /vni 16777216/],
    ["cidr", { cidr: "10.244.0.0/33" }, /^cidr:/],
    ["subnet host bits", { subnet: "10.244.1.1/24" }, /^subnet:.*host bits/],
    ["mtu", { mtu: 0 }, /mtu 0/],
    ["port", { port: 0 }, /port 0/],
  ] as const) {
    it(`skips a network with a bad ${field}, naming the field`, () => {
      const { specs, skipped } = toNetworkSpecs(config(net("blue", bad as Partial<NetworkConfig>)), {});
      assert.equal(specs.length, 0);
      assert.equal(skipped.length, 1);
      assert.match(skipped[0].reason, expect);
    });
  }

  it("keeps exactly one default network, and orders networks by name", () => {
    const defaults = (...nets: NetworkConfig[]) => toNetworkSpecs(config(...nets), {}).specs.map((n) => [n.name, n.isDefault]);
    assert.deepEqual(defaults(net("blue")), [["blue", true]], "the only network gets the conflist");
    assert.deepEqual(defaults(net("red", { vni: 43 }), net("blue")), [["blue", false], ["red", false]], "two, none marked: no guess");
    assert.deepEqual(defaults(net("blue"), net("red", { vni: 43, default: true })), [["blue", false], ["red", true]]);
    assert.deepEqual(defaults(net("red", { vni: 43, default: true }), net("blue", { default: true })), [["blue", true], ["red", false]]);
  });
});

describe("agent: config model (in place, with what changed)", () => {
  const snapshot = (rev: number, ...nets: NetworkConfig[]) => ({ revision: rev, snapshot: true, networks: nets, removedNetworks: [], peerUpdates: [], endpointUpdates: [] });
  const changed = (m: ConfigModel) => {
    const c = m.takeChanges();
    return { networks: c.networksChanged, peers: Object.fromEntries([...c.peers].map(([n, s]) => [n, [...s].sort()])) };
  };

  it("a delta marks exactly the peers it touches; an identical peer update marks nothing", () => {
    const m = new ConfigModel();
    m.apply(snapshot(7, net("blue"), net("red", { vni: 43, peers: [] })));
    assert.deepEqual(changed(m), { networks: true, peers: { blue: ["node-b", "node-c"] } });
    m.apply({ revision: 8, snapshot: false, networks: [], removedNetworks: [], peerUpdates: [
      { network: "blue", peer: peer("node-d", 4), removed: false },
      { network: "blue", peer: peer("node-b", 2), removed: false },
      { network: "blue", peer: peer("node-c", 3, { vtepMac: "02:00:00:00:00:99" }), removed: false },
      { network: "nowhere", peer: peer("node-x", 9), removed: false },
    ], endpointUpdates: [] });
    assert.equal(m.revision, 8);
    assert.deepEqual(changed(m), { networks: false, peers: { blue: ["node-c", "node-d"] } });
    m.apply({ revision: 9, snapshot: false, networks: [], removedNetworks: ["red"], peerUpdates: [{ network: "blue", peer: { nodeName: "node-b", underlayIp: "", vtepMac: "", subnet: "" }, removed: true }], endpointUpdates: [] });
    assert.deepEqual(changed(m), { networks: true, peers: { blue: ["node-b"] } });
    assert.deepEqual([...m.config.networks.keys()], ["blue"]);
    assert.deepEqual([...m.config.networks.get("blue")!.peers.keys()].sort(), ["node-c", "node-d"]);
  });

  it("a snapshot replaces everything: what vanished and what is new are marked, unchanged peers are not", () => {
    const m = new ConfigModel();
    m.apply(snapshot(7, net("blue"), net("red", { vni: 43, peers: [peer("node-r", 5)] })));
    m.takeChanges();
    m.apply(snapshot(20, net("blue", { peers: [peer("node-b", 2), peer("node-e", 5)] })));
    assert.equal(m.revision, 20);
    assert.deepEqual(changed(m), { networks: true, peers: { red: ["node-r"], blue: ["node-c", "node-e"] } });
  });

  it("keeps endpoints per network: updates applied in place, kept across a delta's header, replaced by a snapshot", () => {
    const e = (node: string, id: string, ip: string) => ({ id, nodeName: node, network: "blue", name: id, aliases: [], ips: [ip], mac: "02:00:00:00:00:01" });
    const m = new ConfigModel();
    m.apply({ ...snapshot(7, net("blue")), endpointUpdates: [{ network: "blue", endpoint: e("node-b", "c1/eth0", "10.1.0.5"), removed: false }, { network: "nowhere", endpoint: e("x", "c9/eth0", "10.9.0.1"), removed: false }] });
    const eps = () => [...m.config.networks.get("blue")!.endpoints.keys()].sort();
    assert.deepEqual(eps(), ["node-b/c1/eth0"]);
    m.apply({ revision: 8, snapshot: false, networks: [net("blue", { mtu: 1400 })], removedNetworks: [], peerUpdates: [], endpointUpdates: [{ network: "blue", endpoint: e("node-c", "c2/eth0", "10.1.1.5"), removed: false }] });
    assert.deepEqual(eps(), ["node-b/c1/eth0", "node-c/c2/eth0"], "a header change keeps the endpoints");
    m.apply({ revision: 9, snapshot: false, networks: [], removedNetworks: [], peerUpdates: [], endpointUpdates: [{ network: "blue", endpoint: e("node-b", "c1/eth0", ""), removed: true }] });
    assert.deepEqual(eps(), ["node-c/c2/eth0"]);
    m.apply({ ...snapshot(10, net("blue")), endpointUpdates: [{ network: "blue", endpoint: e("node-d", "c3/eth0", "10.1.2.5"), removed: false }] });
    assert.deepEqual(eps(), ["node-d/c3/eth0"], "a snapshot carries the complete set");
  });

  it("changes taken by a flush that did not run can be put back", () => {
    const m = new ConfigModel();
    m.apply(snapshot(1, net("blue")));
    const c = m.takeChanges();
    m.restoreChanges(c);
    assert.deepEqual(changed(m), { networks: true, peers: { blue: ["node-b", "node-c"] } });
  });
});

describe("agent: config model endpoints (tracked like peers)", () => {
  const ep = (node: string, id: string, ip: string, mac = "02:00:00:00:00:aa") => ({ id, nodeName: node, network: "l2", name: "", aliases: [], ips: [ip], mac });
  const l2 = (extra: Partial<NetworkConfig> = {}) => net("l2", { mode: "switched", ...extra });
  const upd = (network: string, endpoint: ReturnType<typeof ep>, removed = false) => ({ network, endpoint, removed });
  const changedEndpoints = (m: ConfigModel) => Object.fromEntries([...m.takeChanges().endpoints].map(([n, s]) => [n, [...s].sort()]));

  it("a delta marks exactly the endpoints it touches; an identical update marks nothing; removal is marked", () => {
    const m = new ConfigModel();
    m.apply({ revision: 1, snapshot: true, networks: [l2()], removedNetworks: [], peerUpdates: [], endpointUpdates: [upd("l2", ep("node-b", "c1/eth0", "10.244.2.5"))] });
    assert.deepEqual(changedEndpoints(m), { l2: ["node-b/c1/eth0"] });
    m.apply({ revision: 2, snapshot: false, networks: [], removedNetworks: [], peerUpdates: [], endpointUpdates: [
      upd("l2", ep("node-b", "c1/eth0", "10.244.2.5")),
      upd("l2", ep("node-c", "c2/eth0", "10.244.3.5", "02:00:00:00:00:bb")),
      upd("nowhere", ep("node-x", "c9/eth0", "10.9.9.9")),
    ] });
    assert.deepEqual(changedEndpoints(m), { l2: ["node-c/c2/eth0"] });
    m.apply({ revision: 3, snapshot: false, networks: [l2()], removedNetworks: [], peerUpdates: [], endpointUpdates: [upd("l2", ep("node-b", "c1/eth0", ""), true)] });
    assert.deepEqual(changedEndpoints(m), { l2: ["node-b/c1/eth0"] });
    assert.deepEqual([...m.config.networks.get("l2")!.endpoints.keys()], ["node-c/c2/eth0"], "a NetworkConfig in a delta keeps the network's endpoints");
  });

  it("a snapshot replaces a network's endpoints: only what differs is marked", () => {
    const m = new ConfigModel();
    m.apply({ revision: 1, snapshot: true, networks: [l2()], removedNetworks: [], peerUpdates: [], endpointUpdates: [upd("l2", ep("node-b", "c1/eth0", "10.244.2.5")), upd("l2", ep("node-c", "c2/eth0", "10.244.3.5", "02:00:00:00:00:bb"))] });
    m.takeChanges();
    m.apply({ revision: 9, snapshot: true, networks: [l2()], removedNetworks: [], peerUpdates: [], endpointUpdates: [upd("l2", ep("node-b", "c1/eth0", "10.244.2.5")), upd("l2", ep("node-d", "c4/eth0", "10.244.4.5", "02:00:00:00:00:dd"))] });
    assert.deepEqual(changedEndpoints(m), { l2: ["node-c/c2/eth0", "node-d/c4/eth0"] });
    assert.deepEqual([...m.config.networks.get("l2")!.endpoints.keys()].sort(), ["node-b/c1/eth0", "node-d/c4/eth0"]);
  });
});
