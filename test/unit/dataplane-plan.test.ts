// The dataplane's pure parts: the diff from kernel state to batch commands,
// the iptables rules, and parsing what ip/bridge/iptables print.
import assert from "node:assert/strict";
import { buildConflist } from "../../pkg/cni/index.js";
import {
  emptyKernelState,
  parseKernel,
  parseSave,
  partialPeerCleanup,
  planChanges,
  planSize,
  renderRules,
  restoreScript,
  rulesMatch,
  type KernelState,
  type NetworkDesired,
  type NodeDesired,
} from "../../pkg/dataplane/index.js";
import { splitJsonValues } from "../../pkg/dataplane/exec.js";
import { PeerTable, validatePeer } from "../../pkg/dataplane/peers.js";
import { chooseBackend } from "../../pkg/dataplane/iptables-backend.js";
import { ipToInt, isIPv4, parseIPv4 } from "../../pkg/ip/index.js";
import ipaddr from "ipaddr.js";

const peerA = { nodeName: "a", underlayIp: "192.168.1.2", vtepMac: "02:00:00:00:00:0a", subnet: "10.244.2.0/24" };
const peerB = { nodeName: "b", underlayIp: "192.168.1.3", vtepMac: "02:00:00:00:00:0b", subnet: "10.244.3.0/24" };

function net(extra: Partial<NetworkDesired> = {}): NetworkDesired {
  return { name: "blue", vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: "10.244.1.0/24", peers: [peerA, peerB], ...extra };
}
function node(...networks: NetworkDesired[]): NodeDesired {
  return { uplink: "eth0", underlayIp: "192.168.1.1", networks };
}

/** The kernel state a correct apply of `desired` leaves behind. */
function converged(desired: NodeDesired, macs: Record<number, string> = {}): KernelState {
  const s = emptyKernelState();
  s.mtus.set("eth0", 1500);
  for (const n of desired.networks) {
    const vx = `weft.${n.vni}`;
    s.links.set(vx, { name: vx, kind: "vxlan", mtu: n.mtu || 1450, mac: n.vtepMac ?? macs[n.vni] ?? "06:00:00:00:00:01", up: true, addrs: [n.subnet.replace(/\/\d+$/, "/32")], vxlan: { id: n.vni, local: desired.underlayIp, link: desired.uplink, port: n.port, learning: false } });
    s.links.set(`weftbr${n.vni}`, { name: `weftbr${n.vni}`, kind: "bridge", mtu: n.mtu || 1450, mac: "06:00:00:00:00:02", up: true, addrs: [n.subnet.replace(/\.0\/(\d+)$/, ".1/$1")] });
    s.neigh.set(vx, new Map(n.peers.map((p) => [p.subnet.split("/")[0], p.vtepMac])));
    s.fdb.set(vx, new Map(n.peers.map((p) => [p.vtepMac, [p.underlayIp]])));
    s.routes.set(vx, new Map(n.peers.map((p) => [p.subnet, p.subnet.split("/")[0]])));
  }
  return s;
}

describe("dataplane: plan (pure)", () => {
  it("from empty: device, bridge, addresses, then per peer neighbour, FDB and route in that order", () => {
    const s = emptyKernelState();
    s.mtus.set("eth0", 9000);
    const p = planChanges(node(net()), s, 9000);
    assert.deepEqual(p.ip1.slice(0, 6), [
      "link add weft.42 type vxlan id 42 local 192.168.1.1 dev eth0 dstport 4789 nolearning",
      "link add weftbr42 type bridge",
      "link set dev weft.42 mtu 8950 up",
      "link set dev weftbr42 mtu 8950 up",
      "addr add 10.244.1.0/32 dev weft.42",
      "addr add 10.244.1.1/24 dev weftbr42",
    ]);
    assert.deepEqual(p.ip1.slice(6), ["neigh replace 10.244.2.0 lladdr 02:00:00:00:00:0a dev weft.42 nud permanent", "neigh replace 10.244.3.0 lladdr 02:00:00:00:00:0b dev weft.42 nud permanent"]);
    assert.deepEqual(p.bridge, ["fdb append 02:00:00:00:00:0a dev weft.42 dst 192.168.1.2 self permanent", "fdb append 02:00:00:00:00:0b dev weft.42 dst 192.168.1.3 self permanent"]);
    assert.deepEqual(p.ip2, ["route replace 10.244.2.0/24 via 10.244.2.0 dev weft.42 onlink", "route replace 10.244.3.0/24 via 10.244.3.0 dev weft.42 onlink"]);
    assert.deepEqual(p.byKind, { device: 2, address: 2, neigh: 2, fdb: 2, route: 2 });
  });

  it("plans nothing when the kernel already matches (an agent restart touches nothing)", () => {
    const d = node(net());
    assert.equal(planSize(planChanges(d, converged(d), 1500)), 0);
  });

  it("removes a vanished peer in reverse order: route first, FDB, neighbour last", () => {
    const d = node(net({ peers: [peerA] }));
    const p = planChanges(d, converged(node(net())), 1500);
    assert.deepEqual(p.ip1, ["route del 10.244.3.0/24 dev weft.42"]);
    assert.deepEqual(p.bridge, ["fdb del 02:00:00:00:00:0b dev weft.42 dst 192.168.1.3 self"]);
    assert.deepEqual(p.ip2, ["neigh del 10.244.3.0 dev weft.42"]);
  });

  it("replaces both neighbour and FDB entries when a peer's MAC changes, leaving no stale FDB entry", () => {
    const moved = { ...peerB, vtepMac: "02:00:00:00:00:bb" };
    const p = planChanges(node(net({ peers: [peerA, moved] })), converged(node(net())), 1500);
    assert.deepEqual(p.ip1, ["neigh replace 10.244.3.0 lladdr 02:00:00:00:00:bb dev weft.42 nud permanent"]);
    assert.deepEqual(p.bridge, ["fdb del 02:00:00:00:00:0b dev weft.42 dst 192.168.1.3 self", "fdb append 02:00:00:00:00:bb dev weft.42 dst 192.168.1.3 self permanent"]);
    assert.deepEqual(p.ip2, []);
  });

  it("moves the FDB entry when a peer's underlay IP changes", () => {
    const p = planChanges(node(net({ peers: [peerA, { ...peerB, underlayIp: "192.168.1.99" }] })), converged(node(net())), 1500);
    assert.deepEqual(p.bridge, ["fdb del 02:00:00:00:00:0b dev weft.42 dst 192.168.1.3 self", "fdb append 02:00:00:00:00:0b dev weft.42 dst 192.168.1.99 self permanent"]);
    assert.deepEqual([...p.ip1, ...p.ip2], []);
  });

  it("follows a peer to a new subnet: new neighbour and route, old ones removed", () => {
    const p = planChanges(node(net({ peers: [peerA, { ...peerB, subnet: "10.244.9.0/24" }] })), converged(node(net())), 1500);
    assert.deepEqual(p.ip1, ["route del 10.244.3.0/24 dev weft.42", "neigh replace 10.244.9.0 lladdr 02:00:00:00:00:0b dev weft.42 nud permanent"]);
    assert.deepEqual(p.ip2, ["route replace 10.244.9.0/24 via 10.244.9.0 dev weft.42 onlink", "neigh del 10.244.3.0 dev weft.42"]);
  });

  it("skips peers without a MAC or with a bad subnet, MAC or underlay address", () => {
    const bad = [
      { ...peerA, vtepMac: "" },
      { ...peerB, subnet: "garbage" },
      { ...peerB, vtepMac: "01:00:5e:00:00:01" },
      { ...peerB, vtepMac: "zz:00:00:00:00:01" },
      { ...peerB, underlayIp: "fe80::1" },
      { ...peerB, underlayIp: "" },
    ];
    const p = planChanges(node(net({ peers: bad })), converged(node(net({ peers: [] }))), 1500);
    assert.equal(planSize(p), 0);
    const withGood = planChanges(node(net({ peers: [...bad, { ...peerA, vtepMac: "02-00-00-00-00-AA" }] })), converged(node(net({ peers: [] }))), 1500);
    assert.deepEqual(withGood.bridge, ["fdb append 02:00:00:00:00:aa dev weft.42 dst 192.168.1.2 self permanent"]);
  });

  it("recreates the VXLAN device when its VNI parameters differ, and writes its peers again", () => {
    for (const change of [{ port: 8472 }, { vni: 42 }]) {
      const before = converged(node(net()));
      before.links.get("weft.42")!.vxlan!.local = "192.168.1.77";
      const p = planChanges(node(net(change)), before, 1500);
      assert.equal(p.ip1[0], "link del dev weft.42");
      assert.ok(p.ip1.some((l) => l.startsWith("link add weft.42 type vxlan")));
      assert.equal(p.ip2.filter((l) => l.startsWith("route replace")).length, 2);
    }
  });

  it("sets MTU and persisted MAC on an existing device without recreating it", () => {
    const p = planChanges(node(net({ mtu: 1400, vtepMac: "02:aa:bb:cc:dd:ee" })), converged(node(net())), 1500);
    assert.ok(p.ip1.includes("link set dev weft.42 mtu 1400 address 02:aa:bb:cc:dd:ee"));
    assert.ok(p.ip1.includes("link set dev weftbr42 mtu 1400 up"));
    assert.ok(!p.ip1.some((l) => l.startsWith("link del")));
  });

  it("writes every neighbour again after its own MAC changes (the kernel flushes them), after the MAC is set", () => {
    const p = planChanges(node(net({ vtepMac: "02:aa:bb:cc:dd:ee" })), converged(node(net())), 1500);
    const setMac = p.ip1.indexOf("link set dev weft.42 address 02:aa:bb:cc:dd:ee");
    const neighs = p.ip1.filter((l) => l.startsWith("neigh replace"));
    assert.ok(setMac >= 0, p.ip1.join("\n"));
    assert.deepEqual(neighs, ["neigh replace 10.244.2.0 lladdr 02:00:00:00:00:0a dev weft.42 nud permanent", "neigh replace 10.244.3.0 lladdr 02:00:00:00:00:0b dev weft.42 nud permanent"]);
    assert.ok(p.ip1.indexOf(neighs[0]) > setMac);
    assert.deepEqual([p.bridge, p.ip2], [[], []], "FDB and routes survive a MAC change");
    assert.equal(planSize(planChanges(node(net({ vtepMac: "02:aa:bb:cc:dd:ee" })), converged(node(net({ vtepMac: "02:aa:bb:cc:dd:ee" }))), 1500)), 0);
  });

  it("moves the addresses when the node's subnet changes", () => {
    const p = planChanges(node(net({ subnet: "10.244.7.0/24" })), converged(node(net())), 1500);
    assert.deepEqual(p.ip1, ["addr del 10.244.1.0/32 dev weft.42", "addr add 10.244.7.0/32 dev weft.42", "addr del 10.244.1.1/24 dev weftbr42", "addr add 10.244.7.1/24 dev weftbr42"]);
  });

  it("deletes the devices of networks no longer wanted, and only Weft's", () => {
    const s = converged(node(net(), net({ name: "red", vni: 43, cidr: "10.245.0.0/16", subnet: "10.245.1.0/24", peers: [] })));
    s.links.set("eth1", { name: "eth1", kind: "veth", mtu: 1500, mac: "", up: true, addrs: [] });
    const p = planChanges(node(net()), s, 1500);
    assert.deepEqual(p.ip1, ["link del dev weft.43", "link del dev weftbr43"]);
  });

  it("an update plans only the changed peer's keys against the kernel model, and a commit makes the model match", () => {
    const t = new PeerTable("weft.42");
    const many = Array.from({ length: 500 }, (_, i) => ({ nodeName: `n${i}`, underlayIp: `192.168.${i >> 8}.${i & 255}`, vtepMac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`, subnet: `10.${100 + (i >> 8)}.${i & 255}.0/24` }));
    for (const p of many) assert.equal(t.set(p), undefined);
    const first = t.plan();
    assert.deepEqual(first.counts, { neigh: 500, fdb: 500, route: 500 });
    first.commit();
    assert.equal(t.dirty, false);
    assert.equal(t.set(many[7]), undefined, "the same peer again");
    assert.equal(t.dirty, false, "an unchanged peer leaves nothing pending");
    t.set({ nodeName: "new", underlayIp: "192.168.9.9", vtepMac: "02:aa:00:00:00:01", subnet: "10.200.0.0/24" });
    const one = t.plan();
    assert.deepEqual([one.neighSets, one.bridge, one.ip2], [
      ["neigh replace 10.200.0.0 lladdr 02:aa:00:00:00:01 dev weft.42 nud permanent"],
      ["fdb append 02:aa:00:00:00:01 dev weft.42 dst 192.168.9.9 self permanent"],
      ["route replace 10.200.0.0/24 via 10.200.0.0 dev weft.42 onlink"],
    ]);
    one.commit();
    t.remove("n3");
    const gone = t.plan();
    assert.deepEqual([gone.routeDels, gone.bridge, gone.ip2], [["route del 10.100.3.0/24 dev weft.42"], ["fdb del 02:00:00:00:00:03 dev weft.42 dst 192.168.0.3 self"], ["neigh del 10.100.3.0 dev weft.42"]]);
    gone.abandon();
    assert.equal(t.plan().counts.route, 1, "an abandoned plan's keys are pending again");
  });

  it("refuses a peer whose subnet or MAC another peer holds, and programs it once that one leaves", () => {
    const t = new PeerTable("weft.42");
    t.set(peerA);
    assert.match(t.set({ ...peerB, subnet: peerA.subnet }) ?? "", /subnet 10\.244\.2\.0\/24 already belongs to peer a/);
    assert.match(t.set({ ...peerB, vtepMac: peerA.vtepMac }) ?? "", /vtep_mac .* already belongs to peer a/);
    t.remove("a");
    assert.equal(t.has("b"), true, "the refused peer took the freed keys");
    assert.equal(t.size, 1);
  });

  it("finds half-applied peers after a failure: neighbour without FDB, route without neighbour", () => {
    const s = converged(node(net()));
    s.fdb.get("weft.42")!.delete(peerB.vtepMac);
    s.neigh.get("weft.42")!.delete("10.244.2.0");
    assert.deepEqual(partialPeerCleanup(s).ip.sort(), ["neigh del 10.244.3.0 dev weft.42", "route del 10.244.2.0/24 dev weft.42", "route del 10.244.3.0/24 dev weft.42"]);
    assert.equal(partialPeerCleanup(converged(node(net()))).count, 0);
  });
});

describe("dataplane: reading the kernel (pure)", () => {
  it("keeps only Weft's devices and what hangs off its VXLAN devices", () => {
    const links = [
      { ifname: "eth0", mtu: 1500, address: "aa:aa:aa:aa:aa:aa", flags: ["UP"], addr_info: [{ family: "inet", local: "192.168.1.1", prefixlen: 24 }] },
      { ifname: "weft.42", mtu: 1450, address: "06:AA:00:00:00:01", flags: ["BROADCAST", "UP"], linkinfo: { info_kind: "vxlan", info_data: { id: 42, local: "192.168.1.1", link: "eth0", port: 4789, learning: false } }, addr_info: [{ family: "inet", local: "10.244.1.0", prefixlen: 32 }, { family: "inet6", local: "fe80::1", prefixlen: 64 }] },
      { ifname: "weftbr42", mtu: 1450, address: "06:00:00:00:00:02", flags: [], linkinfo: { info_kind: "bridge" } },
    ];
    const s = parseKernel(
      links,
      links,
      [{ dst: "10.244.2.0", dev: "weft.42", lladdr: "02:00:00:00:00:0A" }, { dst: "192.168.1.2", dev: "eth0", lladdr: "bb:bb:bb:bb:bb:bb" }],
      [{ mac: "02:00:00:00:00:0a", ifname: "weft.42", dst: "192.168.1.2" }, { mac: "33:33:00:00:00:01", ifname: "eth0" }, { mac: "02:00:00:00:00:0a", ifname: "weft.42", dst: "192.168.1.5" }],
      [{ dst: "10.244.2.0/24", dev: "weft.42", gateway: "10.244.2.0" }, { dst: "10.244.1.0/24", dev: "weftbr42", protocol: "kernel" }, { dst: "default", dev: "eth0", gateway: "192.168.1.254" }],
    );
    assert.deepEqual([...s.links.keys()], ["weft.42", "weftbr42"]);
    assert.equal(s.links.get("weft.42")!.mac, "06:aa:00:00:00:01");
    assert.deepEqual(s.links.get("weft.42")!.addrs, ["10.244.1.0/32"]);
    assert.equal(s.links.get("weftbr42")!.up, false);
    assert.deepEqual([...s.neigh.get("weft.42")!], [["10.244.2.0", "02:00:00:00:00:0a"]]);
    assert.deepEqual([...s.fdb.get("weft.42")!], [["02:00:00:00:00:0a", ["192.168.1.2", "192.168.1.5"]]]);
    assert.deepEqual([...s.routes.keys()], ["weft.42"]);
    assert.equal(s.mtus.get("eth0"), 1500);
  });

  it("splits the JSON arrays `ip -json -batch` prints back to back", () => {
    assert.deepEqual(splitJsonValues('[{"a":"]["}][]\n[{"b":[1,2]},{"c":"\\"]"}]'), [[{ a: "][" }], [], [{ b: [1, 2] }, { c: '"]' }]]);
  });
});

describe("one address parser (pure)", () => {
  it("pkg/ip's fast IPv4 parser agrees with ipaddr.js", () => {
    const cases = ["0.0.0.0", "10.0.0.1", "192.168.77.255", "255.255.255.255", "256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "a.b.c.d", "", " 1.2.3.4", "1.2.3.4 ", "fe80::1", "1..2.3", "-1.2.3.4", "99.199.249.250"];
    for (const c of cases) {
      assert.equal(isIPv4(c), ipaddr.IPv4.isValidFourPartDecimal(c), c);
      if (isIPv4(c)) assert.equal(parseIPv4(c), ipToInt(c), c);
    }
  });

  it("validates a peer once, naming the field, and keeps the subnet's network address as gateway", () => {
    assert.deepEqual(validatePeer({ ...peerA, vtepMac: "02-00-00-00-00-AA" }), { node: "a", gateway: "10.244.2.0", mac: "02:00:00:00:00:aa", underlay: "192.168.1.2", subnet: "10.244.2.0/24" });
    assert.match(validatePeer({ ...peerA, subnet: "10.244.2.1/24" }) as string, /^subnet: .*host bits/);
    assert.match(validatePeer({ ...peerA, underlayIp: "fe80::1" }) as string, /^underlay_ip/);
    assert.match(validatePeer({ ...peerA, vtepMac: "" }) as string, /not known yet/);
  });
});

describe("dataplane: iptables backend detection (pure)", () => {
  const rules = (n: number, chain = "KUBE-SERVICES") => Array.from({ length: n }, (_, i) => `-A ${chain} -d 10.0.0.${i} -j ACCEPT`).join("\n");
  it("chooses the backend holding the host's rules, Kubernetes' hint chain first, nft when both are empty", () => {
    assert.equal(chooseBackend({ legacy: rules(30), nft: rules(2) }).backend, "legacy");
    assert.equal(chooseBackend({ legacy: rules(2), nft: rules(30) }).backend, "nft");
    assert.deepEqual(chooseBackend({ legacy: "", nft: "" }), { backend: "nft", reason: "default", rules: { legacy: 0, nft: 0 } });
    assert.equal(chooseBackend({ legacy: rules(30), nft: "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT" }).backend, "nft");
    assert.equal(chooseBackend({ legacy: rules(5, "WEFT-FWD"), nft: rules(1) }).backend, "nft", "Weft's own rules do not count");
  });
});

describe("dataplane: iptables rules (pure)", () => {
  const blue = net();
  const red = net({ name: "red", vni: 43, cidr: "10.245.0.0/16", subnet: "10.245.1.0/24", natOutgoing: false, isolated: false });

  it("masquerades traffic leaving a network with natOutgoing, never pod-to-pod or multicast", () => {
    assert.match(renderRules([blue], false).nat.at(-1)!, /-j MASQUERADE$/, "without --random-fully when iptables lacks it");
    const r = renderRules([blue, red]);
    assert.deepEqual(r.nat, [
      "-A WEFT-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment weft:blue -j RETURN",
      "-A WEFT-POSTRTG -s 10.244.0.0/16 -d 10.245.0.0/16 -m comment --comment weft:blue -j RETURN",
      "-A WEFT-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment weft:blue -j MASQUERADE --random-fully",
    ]);
  });

  it("drops traffic between two networks when either is isolated, and accepts each network's own", () => {
    const f = renderRules([blue, red]).filter;
    assert.ok(f.includes("-A WEFT-ISOLATION -s 10.244.0.0/16 -d 10.245.0.0/16 -m comment --comment weft:isolation -j DROP"));
    assert.ok(f.includes("-A WEFT-ISOLATION -s 10.245.0.0/16 -d 10.244.0.0/16 -m comment --comment weft:isolation -j DROP"));
    assert.ok(f.includes("-A WEFT-FWD -s 10.245.0.0/16 -m comment --comment weft:red -j ACCEPT"));
    assert.equal(f[0], "-A WEFT-FWD -j WEFT-ISOLATION", "isolation is checked before the accepts");
    assert.deepEqual(renderRules([red, { ...red, name: "green", vni: 44, cidr: "10.246.0.0/16" }]).filter.filter((l) => l.includes("DROP")), [], "two non-isolated networks may talk");
  });

  it("recognises its own rules in iptables-save output, so an unchanged rule set is not rewritten", () => {
    const want = renderRules([blue]);
    const save = [
      "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":WEFT-FWD - [0:0]", ":WEFT-ISOLATION - [0:0]", ":OTHER - [0:0]",
      "-A FORWARD -m comment --comment weft -j WEFT-FWD", "-A OTHER -j ACCEPT", ...want.filter.map((l) => l.replace("weft:blue", '"weft:blue"')), "COMMIT",
      "*nat", ":POSTROUTING ACCEPT [0:0]", ":WEFT-POSTRTG - [0:0]", "-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG", ...want.nat, "COMMIT",
    ].join("\n");
    const saved = parseSave(save);
    assert.ok(rulesMatch(saved, want));
    assert.equal(rulesMatch(saved, renderRules([blue, red])), false);
    assert.equal(rulesMatch(parseSave(save.replace("-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG\n", "")), want), false, "a missing jump is noticed");
  });

  it("restores atomically: chains declared (flushed) with their rules, jumps inserted only when missing", () => {
    const script = restoreScript(renderRules([blue]), parseSave(""));
    assert.match(script, /^\*nat\n:WEFT-POSTRTG - \[0:0\]\n-I POSTROUTING 1 -m comment --comment weft -j WEFT-POSTRTG\n/);
    assert.match(script, /\*filter\n:WEFT-FWD - \[0:0\]\n:WEFT-ISOLATION - \[0:0\]\n-I FORWARD 1 -m comment --comment weft -j WEFT-FWD\n/);
    assert.equal((script.match(/COMMIT/g) ?? []).length, 2);
    const again = restoreScript(renderRules([blue]), parseSave("*nat\n-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG\nCOMMIT\n*filter\n-A FORWARD -m comment --comment weft -j WEFT-FWD\nCOMMIT\n"));
    assert.doesNotMatch(again, /-I /);
  });
});

describe("cni: conflist (pure)", () => {
  it("bridge with the gateway and host-local over the node's subnet under the state dir, then weft (the agent's socket), then portmap", () => {
    const c = buildConflist({ name: "blue", vni: 42, subnet: "10.244.1.0/24", mtu: 1450 }, "/var/lib/weft") as { plugins: Record<string, unknown>[]; cniVersion: string };
    assert.equal(c.cniVersion, "1.0.0");
    assert.deepEqual(c.plugins.map((p) => p.type), ["bridge", "weft", "portmap"]);
    assert.deepEqual(c.plugins[1], { type: "weft", network: "blue", socket: "/var/lib/weft/cni.sock" });
    assert.deepEqual(c.plugins[0], {
      type: "bridge", bridge: "weftbr42", isGateway: true, ipMasq: false, hairpinMode: true, mtu: 1450,
      ipam: { type: "host-local", ranges: [[{ subnet: "10.244.1.0/24", gateway: "10.244.1.1" }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: "/var/lib/weft/cni/networks" },
    });
  });
});
