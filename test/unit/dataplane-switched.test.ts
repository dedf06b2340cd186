// The switched dataplane's pure parts: endpoint validation, the
// SwitchedTable's dirty-key planning against its kernel model (FDB before
// neighbour on the way in, the reverse on the way out; endpoints wait for
// their node), flooding, and the device plan of a switched network.
import assert from "node:assert/strict";
import { emptyKernelState, parseKernel, planChanges, SwitchedTable, validateEndpoint, type NetworkDesired } from "../../pkg/dataplane/index.js";
import { parseCidr } from "../../pkg/ip/index.js";

const cidr = parseCidr("10.50.0.0/16");
const table = (flood = false) => new SwitchedTable("weft.77", "weftbr77", cidr, "10.50.0.1", flood);
const peerB = { nodeName: "b", underlayIp: "192.168.1.3", vtepMac: "", subnet: "10.50.3.0/24" };
const peerC = { nodeName: "c", underlayIp: "192.168.1.4", vtepMac: "", subnet: "10.50.4.0/24" };
const epB = { key: "b/c1/eth0", nodeName: "b", ips: ["10.50.3.5"], mac: "02:00:00:00:03:05" };

describe("dataplane: switched table (pure)", () => {
  it("validates an endpoint on arrival, naming the field", () => {
    assert.deepEqual(validateEndpoint({ ...epB, mac: "02:00:00:00:03:05".toUpperCase() }, cidr, "10.50.0.1"), { key: epB.key, node: "b", ips: ["10.50.3.5"], mac: epB.mac });
    for (const [bad, re] of [
      [{ mac: "nope" }, /mac "nope"/],
      [{ mac: "01:00:5e:00:00:01" }, /mac .* unicast/],
      [{ ips: ["10.50.3"] }, /ips\[0\] "10\.50\.3" is not an IPv4/],
      [{ ips: ["10.60.0.5"] }, /ips\[0\] 10\.60\.0\.5 is outside/],
      [{ ips: ["10.50.0.1"] }, /gateway/],
      [{ nodeName: "" }, /node_name/],
    ] as const) {
      assert.match(validateEndpoint({ ...epB, ...bad } as typeof epB, cidr, "10.50.0.1") as string, re);
    }
    const t = table();
    assert.match(t.setEndpoint({ ...epB, mac: "zz" }) ?? "", /mac/);
    assert.equal(t.dirty, false, "a refused endpoint leaves nothing pending");
  });

  it("an endpoint waits for its node to be a peer; then FDB (master + self) in the bridge batch and its neighbour after", () => {
    const t = table();
    assert.equal(t.setEndpoint(epB), undefined);
    const waiting = t.plan();
    assert.deepEqual([waiting.ip1, waiting.bridge, waiting.ip2], [[], [], []], "no entries before its node is a peer");
    waiting.commit();
    t.setPeer(peerB);
    const p = t.plan();
    assert.deepEqual(p.ip1, []);
    assert.deepEqual(p.bridge, ["fdb replace 02:00:00:00:03:05 dev weft.77 master static", "fdb append 02:00:00:00:03:05 dev weft.77 dst 192.168.1.3 self permanent"]);
    assert.deepEqual(p.ip2, ["neigh replace 10.50.3.5 lladdr 02:00:00:00:03:05 dev weftbr77 nud permanent"]);
    assert.deepEqual(p.counts, { neigh: 1, fdb: 2, route: 0 });
    p.commit();
    assert.equal(t.dirty, false);
    assert.equal(t.setEndpoint(epB), undefined);
    assert.equal(t.dirty, false, "the same endpoint again changes nothing");
    t.removeEndpoint(epB.key);
    const gone = t.plan();
    assert.deepEqual(gone.ip1, ["neigh del 10.50.3.5 dev weftbr77"], "neighbour out first");
    assert.deepEqual(gone.bridge, ["fdb del 02:00:00:00:03:05 dev weft.77 master", "fdb del 02:00:00:00:03:05 dev weft.77 dst 192.168.1.3 self"]);
    gone.abandon();
    assert.equal(t.plan().counts.neigh, 1, "an abandoned plan's keys are pending again");
  });

  it("one update among many plans only its keys; a peer leaving removes exactly its endpoints' entries", () => {
    const t = table();
    t.setPeer(peerB);
    t.setPeer(peerC);
    for (let i = 0; i < 500; i++) t.setEndpoint({ key: `b/c${i}/eth0`, nodeName: "b", ips: [`10.50.${10 + (i >> 8)}.${i & 255}`], mac: `02:00:00:01:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}` });
    t.setEndpoint({ key: "c/x/eth0", nodeName: "c", ips: ["10.50.4.9"], mac: "02:00:00:00:04:09" });
    t.plan().commit();
    t.setEndpoint({ key: "c/y/eth0", nodeName: "c", ips: ["10.50.4.10"], mac: "02:00:00:00:04:0a" });
    const one = t.plan();
    assert.deepEqual(one.counts, { neigh: 1, fdb: 2, route: 0 }, "one endpoint among 501: its three entries only");
    one.commit();
    t.removePeer("c");
    const p = t.plan();
    assert.deepEqual(p.ip1.sort(), ["neigh del 10.50.4.10 dev weftbr77", "neigh del 10.50.4.9 dev weftbr77"]);
    assert.equal(p.bridge.length, 4, "master and self entry of each of c's two endpoints");
    p.commit();
    t.setPeer(peerC);
    assert.equal(t.plan().counts.neigh, 2, "c back: its endpoints, which waited, are programmed again");
  });

  it("a moved endpoint (same IP, new MAC on another node): the newest claim owns the IP; the old one's removal leaves it", () => {
    const t = table();
    t.setPeer(peerB);
    t.setPeer(peerC);
    t.setEndpoint(epB);
    t.plan().commit();
    const moved = { key: "c/c9/eth0", nodeName: "c", ips: ["10.50.3.5"], mac: "02:00:00:00:04:99" };
    t.setEndpoint(moved);
    const p = t.plan();
    assert.deepEqual(p.ip2, ["neigh replace 10.50.3.5 lladdr 02:00:00:00:04:99 dev weftbr77 nud permanent"]);
    p.commit();
    t.removeEndpoint(epB.key);
    const q = t.plan();
    assert.deepEqual([q.ip1, q.ip2], [[], []], "the neighbour stays the new endpoint's");
    assert.deepEqual(q.bridge, ["fdb del 02:00:00:00:03:05 dev weft.77 master", "fdb del 02:00:00:00:03:05 dev weft.77 dst 192.168.1.3 self"]);
    q.commit();
    t.removeEndpoint(moved.key);
    t.setEndpoint(epB);
    assert.deepEqual(t.plan().ip2, ["neigh replace 10.50.3.5 lladdr 02:00:00:00:03:05 dev weftbr77 nud permanent"]);
  });

  it("flood entries per peer only while flood is on", () => {
    const t = table(true);
    t.setPeer(peerB);
    t.setPeer(peerC);
    const p = t.plan();
    assert.deepEqual(p.bridge.sort(), ["fdb append 00:00:00:00:00:00 dev weft.77 dst 192.168.1.3 self permanent", "fdb append 00:00:00:00:00:00 dev weft.77 dst 192.168.1.4 self permanent"]);
    p.commit();
    t.removePeer("c");
    const q = t.plan();
    assert.deepEqual(q.bridge, ["fdb del 00:00:00:00:00:00 dev weft.77 dst 192.168.1.4 self"]);
    q.commit();
    t.flood = false;
    assert.deepEqual(t.plan().bridge, ["fdb del 00:00:00:00:00:00 dev weft.77 dst 192.168.1.3 self"]);
  });

  it("a full plan removes stale entries Weft wrote (endpoint gone while the agent was down)", () => {
    const t = table();
    t.setPeer(peerB);
    t.kernel.neigh.set("10.50.9.9", "02:00:00:00:09:09");
    t.kernel.master.add("02:00:00:00:09:09");
    t.kernel.fdb.set("02:00:00:00:09:09", ["192.168.1.9"]);
    t.kernel.fdb.set("00:00:00:00:00:00", ["192.168.1.9"]);
    t.markAllDirty();
    const p = t.plan();
    assert.deepEqual(p.ip1, ["neigh del 10.50.9.9 dev weftbr77"]);
    assert.deepEqual(p.bridge.sort(), ["fdb del 00:00:00:00:00:00 dev weft.77 dst 192.168.1.9 self", "fdb del 02:00:00:00:09:09 dev weft.77 dst 192.168.1.9 self", "fdb del 02:00:00:00:09:09 dev weft.77 master"]);
  });
});

describe("dataplane: switched network devices (pure)", () => {
  const l2 = (extra: Partial<NetworkDesired> = {}): NetworkDesired => ({
    name: "l2", vni: 77, cidr: "10.50.0.0/16", mode: "switched", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true,
    subnet: "10.50.1.0/24", peers: [peerB], endpoints: [epB], ...extra,
  });
  const node = (n: NetworkDesired) => ({ uplink: "eth0", underlayIp: "192.168.1.1", networks: [n] });

  it("from empty: bridge with the gateway's MAC and address, VXLAN device as its port (learning off, neigh_suppress on), no VXLAN address, no route", () => {
    const s = emptyKernelState();
    s.mtus.set("eth0", 1500);
    const p = planChanges(node(l2()), s, 1500);
    assert.deepEqual(p.ip1, [
      "link add weft.77 type vxlan id 77 local 192.168.1.1 dev eth0 dstport 4789 nolearning",
      "link add weftbr77 address 02:57:46:00:00:4d type bridge",
      "link set dev weft.77 mtu 1450 up master weftbr77",
      "link set dev weftbr77 mtu 1450 up",
      "link set dev weft.77 type bridge_slave learning off neigh_suppress on",
      "addr add 10.50.0.1/16 dev weftbr77",
    ]);
    assert.equal(p.bridge.length, 2);
    assert.deepEqual(p.ip2, ["neigh replace 10.50.3.5 lladdr 02:00:00:00:03:05 dev weftbr77 nud permanent"]);
    assert.equal(p.byKind.route, 0);
  });

  it("reads back a converged switched network as nothing to do; a port that learns, a wrong bridge MAC are set right", () => {
    const links = [
      { ifname: "eth0", mtu: 1500 },
      { ifname: "weft.77", mtu: 1450, address: "06:00:00:00:00:01", flags: ["UP"], master: "weftbr77", linkinfo: { info_kind: "vxlan", info_data: { id: 77, local: "192.168.1.1", link: "eth0", port: 4789, learning: false }, info_slave_kind: "bridge", info_slave_data: { learning: false, neigh_suppress: true } } },
      { ifname: "weftbr77", mtu: 1450, address: "02:57:46:00:00:4d", flags: ["UP"], linkinfo: { info_kind: "bridge" }, addr_info: [{ family: "inet", local: "10.50.0.1", prefixlen: 16 }] },
    ];
    const fdb = [
      { mac: "02:00:00:00:03:05", ifname: "weft.77", master: "weftbr77", state: "static" },
      { mac: "06:00:00:00:00:01", ifname: "weft.77", master: "weftbr77", state: "permanent" },
      { mac: "02:00:00:00:03:05", ifname: "weft.77", dst: "192.168.1.3", state: "permanent" },
    ];
    const neigh = [{ dst: "10.50.3.5", dev: "weftbr77", lladdr: "02:00:00:00:03:05" }, { dst: "192.0.2.1", dev: "weftbr77", lladdr: "02:00:00:00:99:99" }];
    const s = parseKernel(links, links, neigh, fdb, []);
    assert.deepEqual([...s.master.get("weft.77")!], ["02:00:00:00:03:05"], "the port's own permanent entry is not Weft's");
    const same = planChanges(node(l2()), s, 1500);
    assert.deepEqual([same.ip1, same.bridge, same.ip2], [[], [], []], "converged; the neighbour outside the CIDR is someone else's");
    s.links.get("weft.77")!.port = { learning: true, neighSuppress: false };
    s.links.get("weftbr77")!.mac = "02:00:00:00:00:99";
    const fix = planChanges(node(l2()), s, 1500);
    assert.ok(fix.ip1.includes("link set dev weft.77 type bridge_slave learning off neigh_suppress on"), fix.ip1.join("\n"));
    assert.ok(fix.ip1.includes("link set dev weftbr77 address 02:57:46:00:00:4d"));
    assert.deepEqual(fix.ip2, ["neigh replace 10.50.3.5 lladdr 02:00:00:00:03:05 dev weftbr77 nud permanent"], "the bridge's MAC change flushes its neighbours: written again");
  });
});
