import assert from "node:assert/strict";
import { applyConfigUpdate, emptyDesired, type NetworkConfig, type Peer } from "../../pkg/api/index.js";
import { peerCounts, peerProblem, sameDesired, subnetsOf, toNodeDesired, type NodeIdentity } from "../../pkg/agent/desired.js";

const self: NodeIdentity = { nodeName: "node-a", uplink: "eth0", underlayIp: "192.168.1.1" };

function peer(name: string, i: number, extra: Partial<Peer> = {}): Peer {
  return { nodeName: name, underlayIp: `192.168.1.${i}`, vtepMac: `02:00:00:00:00:0${i}`, subnet: `10.244.${i}.0/24`, ...extra };
}

function net(name: string, extra: Partial<NetworkConfig> = {}): NetworkConfig {
  return {
    name, vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true,
    default: false, subnet: "10.244.1.0/24", error: "", peers: [peer("node-b", 2), peer("node-c", 3)], ...extra,
  };
}

function config(...nets: NetworkConfig[]) {
  return applyConfigUpdate(emptyDesired(), { revision: 7, snapshot: true, networks: nets, removedNetworks: [], peerUpdates: [] });
}

describe("agent: NetworkConfig -> NetworkDesired", () => {
  it("copies every field and the peers, sorted by node name", () => {
    const c = config(net("blue", { peers: [peer("node-c", 3), peer("node-b", 2)] }));
    const { desired, skippedNetworks, skippedPeers } = toNodeDesired(c, self, {});
    assert.deepEqual(skippedNetworks, []);
    assert.deepEqual(skippedPeers, []);
    assert.deepEqual(desired, {
      uplink: "eth0",
      underlayIp: "192.168.1.1",
      networks: [{
        name: "blue", vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true,
        isDefault: true, subnet: "10.244.1.0/24",
        peers: [
          { nodeName: "node-b", underlayIp: "192.168.1.2", vtepMac: "02:00:00:00:00:02", subnet: "10.244.2.0/24" },
          { nodeName: "node-c", underlayIp: "192.168.1.3", vtepMac: "02:00:00:00:00:03", subnet: "10.244.3.0/24" },
        ],
      }],
    });
  });

  it("passes the kept VTEP MAC of the network's device, normalised", () => {
    const { desired } = toNodeDesired(config(net("blue"), net("red", { vni: 43 })), self, { blue: "02:AA:BB:CC:DD:EE" });
    assert.equal(desired.networks[0].vtepMac, "02:aa:bb:cc:dd:ee");
    assert.equal("vtepMac" in desired.networks[1], false, "no MAC known: the dataplane picks one");
  });

  it("normalises peer MACs so a case change is not a change", () => {
    const { desired } = toNodeDesired(config(net("blue", { peers: [peer("node-b", 2, { vtepMac: "02-00-00-00-00-AB" })] })), self, {});
    assert.equal(desired.networks[0].peers[0].vtepMac, "02:00:00:00:00:ab");
  });

  it("does not program a network without a subnet, and says why", () => {
    const { desired, skippedNetworks } = toNodeDesired(config(net("blue", { subnet: "", error: "pool exhausted" }), net("red", { vni: 43 })), self, {});
    assert.deepEqual(desired.networks.map((n) => n.name), ["red"]);
    assert.deepEqual(skippedNetworks, [{ network: "blue", reason: "no subnet: pool exhausted" }]);
    const none = toNodeDesired(config(net("blue", { subnet: "" })), self, {});
    assert.equal(none.skippedNetworks[0].reason, "no subnet assigned");
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
      const { desired, skippedNetworks } = toNodeDesired(config(net("blue", bad as Partial<NetworkConfig>)), self, {});
      assert.equal(desired.networks.length, 0);
      assert.equal(skippedNetworks.length, 1);
      assert.match(skippedNetworks[0].reason, expect);
    });
  }

  it("leaves out peers without a MAC (device not yet created), with a bad address, and itself", () => {
    const c = config(net("blue", {
      peers: [
        peer("node-b", 2, { vtepMac: "" }),
        peer("node-c", 3, { underlayIp: "not-an-ip" }),
        peer("node-d", 4, { subnet: "" }),
        peer("node-e", 5, { vtepMac: "01:00:5e:00:00:01" }),
        peer("node-f", 6, { subnet: "10.244.6.0/99" }),
        peer("node-a", 1),
        peer("node-g", 7),
      ],
    }));
    const { desired, skippedPeers } = toNodeDesired(c, self, {});
    assert.deepEqual(desired.networks[0].peers.map((p) => p.nodeName), ["node-g"]);
    assert.deepEqual(skippedPeers.map((p) => p.node), ["node-b", "node-c", "node-d", "node-e", "node-f"]);
    assert.match(skippedPeers[0].reason, /vtep_mac is not known yet/);
    assert.match(skippedPeers[1].reason, /underlay_ip/);
    assert.match(skippedPeers[2].reason, /subnet is empty/);
    assert.match(skippedPeers[3].reason, /not a unicast MAC/);
    assert.match(skippedPeers[4].reason, /^subnet:/);
  });

  it("peerProblem is undefined for a complete peer", () => {
    assert.equal(peerProblem(peer("x", 9)), undefined);
    assert.match(peerProblem(peer("", 9)) ?? "", /node_name/);
  });

  it("keeps exactly one default network", () => {
    const one = toNodeDesired(config(net("blue")), self, {});
    assert.equal(one.desired.networks[0].isDefault, true, "the only network gets the conflist");
    const two = toNodeDesired(config(net("blue"), net("red", { vni: 43 })), self, {});
    assert.deepEqual(two.desired.networks.map((n) => n.isDefault), [false, false], "two, none marked: no guess");
    const marked = toNodeDesired(config(net("blue"), net("red", { vni: 43, default: true })), self, {});
    assert.deepEqual(marked.desired.networks.map((n) => n.isDefault), [false, true]);
    const both = toNodeDesired(config(net("red", { vni: 43, default: true }), net("blue", { default: true })), self, {});
    assert.deepEqual(both.desired.networks.map((n) => [n.name, n.isDefault]), [["blue", true], ["red", false]]);
  });

  it("orders networks by name whatever order the controller used", () => {
    const a = toNodeDesired(config(net("red", { vni: 43 }), net("blue")), self, {});
    const b = toNodeDesired(config(net("blue"), net("red", { vni: 43 })), self, {});
    assert.ok(sameDesired(a.desired, b.desired));
  });

  it("follows deltas: peer added, peer changed, peer removed, network removed", () => {
    let c = config(net("blue", { peers: [peer("node-b", 2)] }), net("red", { vni: 43, peers: [] }));
    c = applyConfigUpdate(c, {
      revision: 8, snapshot: false, networks: [], removedNetworks: [],
      peerUpdates: [
        { network: "blue", peer: peer("node-c", 3), removed: false },
        { network: "blue", peer: peer("node-b", 2, { vtepMac: "02:00:00:00:00:99" }), removed: false },
      ],
    });
    let d = toNodeDesired(c, self, {}).desired;
    assert.deepEqual(d.networks[0].peers.map((p) => [p.nodeName, p.vtepMac]), [["node-b", "02:00:00:00:00:99"], ["node-c", "02:00:00:00:00:03"]]);
    c = applyConfigUpdate(c, { revision: 9, snapshot: false, networks: [], removedNetworks: ["red"], peerUpdates: [{ network: "blue", peer: { nodeName: "node-b", underlayIp: "", vtepMac: "", subnet: "" }, removed: true }] });
    d = toNodeDesired(c, self, {}).desired;
    assert.equal(c.revision, 9);
    assert.deepEqual(d.networks.map((n) => n.name), ["blue"]);
    assert.deepEqual(d.networks[0].peers.map((p) => p.nodeName), ["node-c"]);
  });

  it("a snapshot replaces everything known before", () => {
    let c = config(net("blue"), net("red", { vni: 43 }));
    c = applyConfigUpdate(c, { revision: 20, snapshot: true, networks: [net("green", { vni: 44, peers: [] })], removedNetworks: [], peerUpdates: [] });
    const d = toNodeDesired(c, self, {}).desired;
    assert.deepEqual(d.networks.map((n) => n.name), ["green"]);
    assert.deepEqual(d.networks[0].peers, []);
  });

  it("subnetsOf, peerCounts and sameDesired", () => {
    const { desired } = toNodeDesired(config(net("blue"), net("red", { vni: 43, subnet: "10.244.9.0/24", peers: [] })), self, {});
    assert.deepEqual(subnetsOf(desired), { blue: "10.244.1.0/24", red: "10.244.9.0/24" });
    assert.deepEqual(peerCounts(desired), { blue: 2, red: 0 });
    assert.equal(sameDesired(desired, undefined), false);
    const changed = structuredClone(desired);
    changed.networks[0].peers[0].underlayIp = "192.168.1.200";
    assert.equal(sameDesired(desired, changed), false);
    assert.equal(sameDesired(desired, structuredClone(desired)), true);
  });
});
