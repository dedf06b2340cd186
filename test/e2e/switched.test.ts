// A switched (L2) network on a real kernel, driven through the Dataplane
// without controller or agent: three "hosts" (namespaces whose eth0 sits on a
// bridge in a switch namespace), two pods per host attached by the real CNI
// plugins through the conflist the dataplane wrote, and the endpoints the
// `weft` plugin reported to each host's socket fed to the other hosts'
// dataplanes, as the agents do once the controller has distributed them. Checks the kernel objects, the ping matrix, ARP
// suppression and unicast-only VXLAN on the underlay (tcpdump), a pod moving
// between hosts, flooding on and off, a pod in a routed and a switched network
// at once, and drift repair. Everything lives in weft-sw-<random>-… namespaces.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { cniAdd, cniDel, CONFLIST_NAME, conflistName, gatewayAddress, switchedGatewayMac, type CniInvocation } from "../../pkg/cni/index.js";
import { EndpointServer } from "../../pkg/cni/endpoint-server.js";
import { Dataplane, type EndpointSpec, type NetworkDesired, type NodeDesired } from "../../pkg/dataplane/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { cniBinDir } from "../harness/cli.js";
import { startTcpdump, type Capture } from "../harness/tcpdump.js";
import { deleteNamespacesWithPrefix, Netns, switchedHosts, uniqueNetnsPrefix } from "../harness/netns.js";

const VNI = 4343;
const DEV = `weft.${VNI}`;
const BR = `weftbr${VNI}`;
const PORT = 4791;
const CIDR = "10.251.0.0/16";
const GATEWAY = "10.251.0.1";
const ROUTED_VNI = 4344;
const ROUTED_CIDR = "10.252.0.0/16";

interface Host {
  i: number;
  name: string;
  ns: Netns;
  ip: string;
  /** This host's lease in the switched network. */
  lease: string;
  dir: string;
  dp: Dataplane;
  /** The agent's side of the weft plugin (the agent itself is not running here). */
  endpoints: EndpointServer;
}
interface Pod {
  name: string;
  host: Host;
  ns: Netns;
  ip: string;
  mac: string;
  key: string;
  inv: CniInvocation;
}
interface FdbEntry {
  mac: string;
  dst?: string;
  master?: string;
  state?: string;
  flags?: string[];
}
interface NeighEntry {
  dst: string;
  lladdr?: string;
  state?: string[];
}

describe("e2e: switched network on a real kernel (three hosts, two CNI-attached pods each)", function () {
  this.timeout(180_000);
  const prefix = uniqueNetnsPrefix("sw");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-sw-e2e-"));
  const hosts: Host[] = [];
  const pods: Pod[] = [];
  let sw: Netns;
  let flood = false;
  let withRouted = false;
  const binDir = cniBinDir(path.join(tmp, "bin"));

  /** What the other hosts' plugins reported for the switched network, keyed as the controller distributes it. */
  const remoteEndpoints = (h: Host): EndpointSpec[] =>
    hosts.filter((o) => o !== h).flatMap((o) => o.endpoints.list().filter((e) => e.network === "l2").map((e) => ({ key: `${o.name}/${e.id}`, nodeName: o.name, ips: e.ips, mac: e.mac })));

  function desired(h: Host): NodeDesired {
    const others = hosts.filter((o) => o !== h);
    const networks: NetworkDesired[] = [
      {
        name: "l2", vni: VNI, cidr: CIDR, mode: "switched", mtu: 0, port: PORT, natOutgoing: true, isolated: true, flood, isDefault: true, subnet: h.lease,
        peers: others.map((o) => ({ nodeName: o.name, underlayIp: o.ip, vtepMac: "", subnet: o.lease })),
        endpoints: remoteEndpoints(h),
      },
    ];
    if (withRouted) {
      networks.push({
        name: "r1", vni: ROUTED_VNI, cidr: ROUTED_CIDR, mode: "routed", mtu: 0, port: PORT, natOutgoing: true, isolated: true, flood: false, isDefault: false, subnet: `10.252.${h.i}.0/24`,
        peers: others.map((o) => ({ nodeName: o.name, underlayIp: o.ip, vtepMac: routedMacs.get(o.name)!, subnet: `10.252.${o.i}.0/24` })),
      });
    }
    return { uplink: "eth0", underlayIp: h.ip, networks };
  }
  const routedMacs = new Map<string, string>();

  const applyAll = () => Promise.all(hosts.map((h) => h.dp.apply(desired(h))));

  async function ping(from: Netns, to: string, count = 1): Promise<boolean> {
    const r = await from.exec("ping", ["-c", String(count), "-i", "0.2", "-w", "5", to]);
    return r.exitCode === 0;
  }

  async function attach(h: Host, name: string, conflist = path.join(h.dir, "net.d", CONFLIST_NAME), ifName = "eth0", ns?: Netns): Promise<Pod> {
    ns ??= await Netns.create(`${prefix}-${name}`);
    const inv: CniInvocation = { conflistPath: conflist, netnsPath: ns.path, containerId: name, ifName, hostNetns: h.ns.name, binDir, args: { weft: { name } } };
    const res = await cniAdd(inv);
    assert.ok(res.mac, `CNI result names the pod's MAC: ${JSON.stringify(res.raw)}`);
    const reported = h.endpoints.list().find((e) => e.id === `${name}/${ifName}`);
    assert.deepEqual([reported?.ips, reported?.mac], [[res.ip], res.mac!.toLowerCase()], "the weft plugin reported the pod's address and MAC");
    return { name, host: h, ns, ip: res.ip, mac: res.mac!.toLowerCase(), key: `${h.name}/${name}/${ifName}`, inv };
  }

  /** tcpdump on every switch port (-i any), decoding VXLAN on the test's port; resolves once attached. */
  function capture(): Promise<Capture> {
    return startTcpdump(sw.name, 60, ["-i", "any", "-T", "vxlan", `udp port ${PORT}`]);
  }

  /** Outer (underlay) source -> destination of every VXLAN packet in a capture. */
  function outerPairs(out: string): string[] {
    const re = new RegExp(`(\\d+\\.\\d+\\.\\d+\\.\\d+)\\.\\d+ > (\\d+\\.\\d+\\.\\d+\\.\\d+)\\.${PORT}: VXLAN`, "g");
    return [...out.matchAll(re)].map((m) => `${m[1]}>${m[2]}`);
  }

  before(async function () {
    const underlay = await switchedHosts(prefix, [1, 2, 3].map((i) => `192.168.78.${10 + i}`));
    sw = underlay.sw;
    for (const i of [1, 2, 3]) {
      const ns = underlay.hosts[i - 1];
      const ip = `192.168.78.${10 + i}`;
      const dir = path.join(tmp, `h${i}`);
      const dp = new Dataplane({ log: silentLogger(), netns: ns.name, cniConfDir: path.join(dir, "net.d"), stateDir: path.join(dir, "state") });
      const endpoints = new EndpointServer({ stateDir: path.join(dir, "state") });
      await endpoints.start();
      // Host 1's lease holds the network's first host, the distributed gateway: its range must skip it.
      hosts.push({ i, name: `h${i}`, ns, ip, lease: `10.251.${i - 1}.0/24`, dir, dp, endpoints });
    }
  });

  after(async function () {
    for (const h of hosts) {
      h.dp.close();
      await h.endpoints.stop();
    }
    await deleteNamespacesWithPrefix(prefix);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("every host: bridge with the distributed gateway (same address and MAC), VXLAN port with learning off and neigh_suppress on, no routes, no VXLAN address", async () => {
    await applyAll();
    for (const h of hosts) {
      const [vx] = await h.ns.ipJson<{ master?: string; linkinfo: { info_data: { learning: boolean; id: number }; info_slave_data: { learning: boolean; neigh_suppress: boolean } } }>("-d", "link", "show", "dev", DEV);
      assert.equal(vx.master, BR);
      assert.equal(vx.linkinfo.info_data.learning, false, "nolearning on the VXLAN device");
      assert.equal(vx.linkinfo.info_data.id, VNI);
      assert.deepEqual([vx.linkinfo.info_slave_data.learning, vx.linkinfo.info_slave_data.neigh_suppress], [false, true]);
      const [br] = await h.ns.ipJson<{ address: string; addr_info: { family: string; local: string; prefixlen: number }[] }>("addr", "show", "dev", BR);
      assert.equal(br.address, switchedGatewayMac(VNI));
      assert.deepEqual(br.addr_info.filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`), [`${GATEWAY}/16`]);
      const [vxAddr] = await h.ns.ipJson<{ addr_info: { family: string }[] }>("addr", "show", "dev", DEV);
      assert.deepEqual(vxAddr.addr_info.filter((a) => a.family === "inet"), []);
      const routes = await h.ns.ipJson<{ dst: string; dev: string }>("route", "show");
      assert.deepEqual(routes.filter((r) => r.dev === DEV), [], "no per-node routes");
      const save = String((await h.ns.exec("iptables-save", [])).stdout);
      assert.match(save, /-A WEFT-POSTRTG -s 10\.251\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE/, "NAT outgoing as in routed mode");
    }
    assert.equal(gatewayAddress({ mode: "switched", cidr: CIDR, subnet: hosts[1].lease }), GATEWAY);
  });

  it("the conflist's IPAM: the whole CIDR as subnet, the node's lease as range without network, broadcast and gateway, default route via the gateway", () => {
    const ranges = hosts.map((h) => {
      const c = JSON.parse(fs.readFileSync(path.join(h.dir, "net.d", CONFLIST_NAME), "utf8"));
      const ipam = c.plugins[0].ipam;
      assert.deepEqual(ipam.routes, [{ dst: "0.0.0.0/0", gw: GATEWAY }]);
      return ipam.ranges[0][0];
    });
    assert.deepEqual(ranges[0], { subnet: CIDR, rangeStart: "10.251.0.2", rangeEnd: "10.251.0.254", gateway: GATEWAY });
    assert.deepEqual(ranges[1], { subnet: CIDR, rangeStart: "10.251.1.1", rangeEnd: "10.251.1.254", gateway: GATEWAY });
  });

  it("attaches two pods per host; each host programs the remote endpoints (master + self FDB, permanent bridge neighbour) and nothing for its own", async () => {
    for (const h of hosts) for (const j of [1, 2]) pods.push(await attach(h, `p${h.i}${j}`));
    for (const p of pods) assert.ok(p.ip.startsWith(`10.251.${p.host.i - 1}.`), `${p.name} ${p.ip} from its host's lease`);
    const reports = await applyAll();
    assert.ok(reports.every((r) => (r.byKind.fdb ?? 0) === 8 && (r.byKind.neigh ?? 0) === 4), JSON.stringify(reports.map((r) => r.byKind)));
    for (const h of hosts) {
      const fdb = await h.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV);
      const neigh = await h.ns.ipJson<NeighEntry>("neigh", "show", "dev", BR, "nud", "permanent");
      for (const p of pods) {
        const remote = p.host !== h;
        assert.equal(fdb.some((e) => e.mac === p.mac && e.master === BR && e.state === "static"), remote, `${h.name}: master FDB for ${p.name}`);
        assert.equal(fdb.some((e) => e.mac === p.mac && e.dst === p.host.ip), remote, `${h.name}: VXLAN FDB for ${p.name}`);
        assert.equal(neigh.some((n) => n.dst === p.ip && n.lladdr === p.mac), remote, `${h.name}: neighbour for ${p.name}`);
      }
      assert.ok(!fdb.some((e) => e.mac === "00:00:00:00:00:00"), "flood off: no flooding entries");
    }
  });

  it("pods on different hosts talking for the first time: no encapsulated ARP on the underlay, VXLAN only between the two hosts", async () => {
    for (const [a, b] of [[pods[0], pods[2]], [pods[4], pods[1]]] as const) {
      const cap = await capture();
      assert.ok(await ping(a.ns, b.ip, 3), `${a.name} -> ${b.name}`);
      const out = await cap.stop();
      const pairs = outerPairs(out);
      assert.ok(pairs.length >= 6, `the capture saw the pings: ${out}`);
      assert.doesNotMatch(out, /ARP/, "ARP is answered on the bridge (neigh_suppress), never encapsulated");
      const allowed = new Set([`${a.host.ip}>${b.host.ip}`, `${b.host.ip}>${a.host.ip}`]);
      assert.deepEqual([...new Set(pairs)].filter((x) => !allowed.has(x)), [], `unicast VXLAN between ${a.host.name} and ${b.host.name} only`);
    }
  });

  it("every pod pings every other, and a pod's neighbour entry for a pod on another host is that pod's own MAC (L2, not via the gateway)", async () => {
    const failures: string[] = [];
    await Promise.all(
      pods.map(async (a) => {
        for (const b of pods) if (a !== b && !(await ping(a.ns, b.ip))) failures.push(`${a.name} -> ${b.name}`);
      }),
    );
    assert.deepEqual(failures, []);
    const [p11, , p21] = pods;
    const [n] = await p11.ns.ipJson<NeighEntry>("neigh", "show", p21.ip, "dev", "eth0");
    assert.equal(n?.lladdr, p21.mac);
    assert.ok(await ping(p11.ns, GATEWAY), "the distributed gateway answers locally");
    const [gw] = await p11.ns.ipJson<NeighEntry>("neigh", "show", GATEWAY, "dev", "eth0");
    assert.equal(gw?.lladdr, switchedGatewayMac(VNI), "the gateway answers with the distributed gateway's MAC");
  });

  it("flood on: 00:00:00:00:00:00 entries to every peer; off again: none", async () => {
    flood = true;
    await applyAll();
    for (const h of hosts) {
      const dsts = (await h.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV)).filter((e) => e.mac === "00:00:00:00:00:00").map((e) => e.dst).sort();
      assert.deepEqual(dsts, hosts.filter((o) => o !== h).map((o) => o.ip).sort());
    }
    flood = false;
    await applyAll();
    for (const h of hosts) assert.deepEqual((await h.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV)).filter((e) => e.mac === "00:00:00:00:00:00"), []);
  });

  it("a pod deleted on one host and re-created on another with the same address is reachable there; no stale entry is left anywhere", async () => {
    const [, h2, h3] = hosts;
    const old = pods[0]; // p11 on h1
    await cniDel(old.inv);
    pods.splice(0, 1);
    await applyAll();
    // The same address on h3: a static address (host-local hands out only h3's lease).
    const list = JSON.parse(fs.readFileSync(path.join(h3.dir, "net.d", CONFLIST_NAME), "utf8"));
    list.plugins[0].ipam = { type: "static", addresses: [{ address: `${old.ip}/16`, gateway: GATEWAY }], routes: [{ dst: "0.0.0.0/0", gw: GATEWAY }] };
    const staticList = path.join(tmp, "static.conflist");
    fs.writeFileSync(staticList, JSON.stringify(list));
    const moved = await attach(h3, "p11m", staticList, "eth0", old.ns);
    assert.equal(moved.ip, old.ip);
    assert.notEqual(moved.mac, old.mac);
    pods.push(moved);
    const t0 = performance.now();
    await applyAll();
    // A client that talks to it afresh (a cached ARP entry of the old MAC is the client kernel's to expire).
    const client = pods.find((p) => p.host === h2)!;
    await client.ns.ip("neigh", "flush", "dev", "eth0");
    assert.ok(await ping(client.ns, moved.ip), "reachable at its new place");
    console.log(`      moved pod reachable ${Math.round(performance.now() - t0)} ms after the endpoint change was handed to the dataplanes (loaded machine)`);
    for (const h of hosts) {
      const fdb = await h.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV);
      assert.deepEqual(fdb.filter((e) => e.mac === old.mac), [], `${h.name}: no FDB entry for the old MAC`);
      const neigh = await h.ns.ipJson<NeighEntry>("neigh", "show", "dev", BR, "nud", "permanent");
      assert.deepEqual(neigh.filter((n) => n.dst === old.ip).map((n) => n.lladdr), h === h3 ? [] : [moved.mac], `${h.name}: neighbour for ${old.ip}`);
      assert.equal(fdb.some((e) => e.mac === moved.mac && e.dst === h3.ip), h !== h3);
    }
  });

  it("a full resync repairs a deleted FDB and neighbour entry and leaves foreign entries alone", async () => {
    const h1 = hosts[0];
    const remote = pods.find((p) => p.host !== h1)!;
    const local = pods.find((p) => p.host === h1)!;
    await execa("bridge", ["-n", h1.ns.name, "fdb", "del", remote.mac, "dev", DEV, "master"]);
    await execa("bridge", ["-n", h1.ns.name, "fdb", "del", remote.mac, "dev", DEV, "dst", remote.host.ip, "self"]);
    await h1.ns.ip("neigh", "del", remote.ip, "dev", BR);
    // Foreign: a non-permanent neighbour, a permanent one outside the CIDR, a static FDB entry on a pod's port.
    const hostVeth = (await h1.ns.ipJson<{ ifname: string }>("link", "show", "master", BR)).find((l) => l.ifname !== DEV)!.ifname;
    await h1.ns.ip("neigh", "add", "10.251.200.200", "lladdr", "02:99:00:00:00:01", "dev", BR, "nud", "stale");
    await h1.ns.ip("neigh", "add", "192.0.2.9", "lladdr", "02:99:00:00:00:02", "dev", BR, "nud", "permanent");
    await execa("bridge", ["-n", h1.ns.name, "fdb", "add", "02:99:00:00:00:03", "dev", hostVeth, "master", "static"]);
    const r = await h1.dp.apply(desired(h1), "resync");
    assert.deepEqual(r.byKind, { fdb: 2, neigh: 1 });
    const fdb = await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV);
    assert.ok(fdb.some((e) => e.mac === remote.mac && e.master === BR) && fdb.some((e) => e.mac === remote.mac && e.dst === remote.host.ip), "FDB restored");
    const neigh = await h1.ns.ipJson<NeighEntry>("neigh", "show", "dev", BR);
    assert.ok(neigh.some((n) => n.dst === remote.ip && n.lladdr === remote.mac), "neighbour restored");
    assert.ok(neigh.some((n) => n.dst === "10.251.200.200"), "foreign non-permanent neighbour kept");
    assert.ok(neigh.some((n) => n.dst === "192.0.2.9"), "foreign permanent neighbour outside the CIDR kept");
    assert.ok((await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", hostVeth)).some((e) => e.mac === "02:99:00:00:00:03"), "foreign FDB entry kept");
    assert.equal((await h1.dp.apply(desired(h1), "resync")).changes, 0, "converged");
    assert.ok(await ping(local.ns, remote.ip), "traffic flows after the repair");
  });

  it("one pod in a routed and a switched network has two interfaces and reaches both; an isolated network still cannot reach the other", async () => {
    withRouted = true;
    for (const h of hosts) {
      await h.dp.apply({ ...desired(h), networks: desired(h).networks.map((n) => (n.name === "r1" ? { ...n, peers: [] } : n)) });
      routedMacs.set(h.name, (await h.dp.vtepMacs()).r1);
    }
    await applyAll();
    const [h1, h2] = hosts;
    const routedConflist = (h: Host) => path.join(h.dir, "net.d", conflistName("r1", false));
    const dual = pods.find((p) => p.host === h1)!;
    const dualRouted = await attach(h1, dual.name, routedConflist(h1), "eth1", dual.ns);
    assert.ok(dualRouted.ip.startsWith("10.252.1."), dualRouted.ip);
    const links = (await dual.ns.ipJson<{ ifname: string }>("link", "show")).map((l) => l.ifname).sort();
    assert.deepEqual(links, ["eth0", "eth1", "lo"]);
    const routedOnly = await attach(h2, "r2", routedConflist(h2));
    const switchedRemote = pods.find((p) => p.host === h2)!;
    assert.ok(await ping(dual.ns, routedOnly.ip), "dual-homed pod -> routed pod on another host");
    assert.ok(await ping(dual.ns, switchedRemote.ip), "dual-homed pod -> switched pod on another host");
    const switchedOnly = pods.find((p) => p.host === hosts[2])!;
    assert.equal(await ping(switchedOnly.ns, routedOnly.ip), false, "switched-only pod cannot reach the isolated routed network");
    assert.equal(await ping(routedOnly.ns, switchedOnly.ip), false, "routed-only pod cannot reach the isolated switched network");
    await cniDel(dualRouted.inv);
    await cniDel(routedOnly.inv);
  });

  it("cleanup() removes the switched network's devices and everything on them", async () => {
    const h1 = hosts[0];
    await h1.dp.cleanup();
    const links = await h1.ns.ipJson<{ ifname: string }>("link", "show");
    assert.deepEqual(links.filter((l) => l.ifname.startsWith("weft")), []);
    assert.equal((await h1.ns.ipJson<NeighEntry>("neigh", "show", "nud", "permanent")).filter((n) => n.dst.startsWith("10.251.")).length, 0);
  });
});
