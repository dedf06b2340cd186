// The dataplane on a real kernel, without controller or agent: three "hosts"
// (namespaces whose eth0 sits on a bridge in a switch namespace), one pod per
// host attached by the real CNI plugins through the conflist the dataplane
// wrote, and the kernel checked after every step. Everything lives in
// namespaces named weft-dp-<random>-… and is removed afterwards.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { cniAdd, cniDel, CONFLIST_NAME } from "../../pkg/cni/index.js";
import { EndpointServer } from "../../pkg/cni/endpoint-server.js";
import { Dataplane, type NodeDesired, type PeerSpec } from "../../pkg/dataplane/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry, type Registry } from "../../pkg/metrics/index.js";
import { cniBinDir } from "../harness/cli.js";
import { startTcpdump } from "../harness/tcpdump.js";
import { deleteNamespacesWithPrefix, Netns, switchedHosts, uniqueNetnsPrefix } from "../harness/netns.js";

const VNI = 4242;
const DEV = `weft.${VNI}`;
const BR = `weftbr${VNI}`;
const PORT = 4790; // not the default, so the capture proves the configured port is used
const CIDR = "10.250.0.0/16";

interface Host {
  i: number;
  ns: Netns;
  ip: string;
  subnet: string;
  dir: string;
  registry: Registry;
  dp: Dataplane;
  /** The agent's side of the weft plugin the conflist chains (the agent itself is not running here). */
  endpoints: EndpointServer;
  mac: string;
  vtepMac?: string;
  pod?: { ns: Netns; ip: string };
}

interface FdbEntry {
  mac: string;
  dst?: string;
  state?: string;
}
interface NeighEntry {
  dst: string;
  lladdr?: string;
}
interface RouteEntry {
  dst: string;
  gateway?: string;
  dev?: string;
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  if (!m) return undefined;
  const data = await m.get();
  return data.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value;
}

describe("e2e: dataplane on a real kernel (three hosts in namespaces, CNI-attached pods)", function () {
  this.timeout(120_000);
  const prefix = uniqueNetnsPrefix("dp");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-dp-e2e-"));
  const hosts: Host[] = [];
  let sw: Netns;
  const binDir = cniBinDir(path.join(tmp, "bin"));

  function desired(h: Host, peers: Host[] = hosts.filter((o) => o !== h)): NodeDesired {
    const spec: PeerSpec[] = peers.map((p) => ({ nodeName: `h${p.i}`, underlayIp: p.ip, vtepMac: p.mac, subnet: p.subnet }));
    return {
      uplink: "eth0",
      underlayIp: h.ip,
      networks: [
        { name: "blue", vni: VNI, cidr: CIDR, mode: "routed", mtu: 0, port: PORT, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: h.subnet, vtepMac: h.vtepMac, peers: spec },
      ],
    };
  }

  /** Pings until one reply arrives or the deadline passes (ping's own -w); true when a reply came. */
  async function ping(from: Netns, to: string): Promise<boolean> {
    const r = await from.exec("ping", ["-c", "1", "-w", "5", to]);
    return r.exitCode === 0;
  }

  before(async function () {
    const underlay = await switchedHosts(prefix, [1, 2, 3].map((i) => `192.168.77.${10 + i}`));
    sw = underlay.sw;
    for (const i of [1, 2, 3]) {
      const ns = underlay.hosts[i - 1];
      const ip = `192.168.77.${10 + i}`;
      const dir = path.join(tmp, `h${i}`);
      const registry = newRegistry(false);
      const dp = new Dataplane({ log: silentLogger(), registry, netns: ns.name, cniConfDir: path.join(dir, "net.d"), stateDir: path.join(dir, "state") });
      const endpoints = new EndpointServer({ stateDir: path.join(dir, "state") });
      await endpoints.start();
      hosts.push({ i, ns, ip, subnet: `10.250.${i}.0/24`, dir, registry, dp, mac: "", endpoints });
    }
    // The default route is there only so defaultUplink has something to find; no test sends traffic to it.
    await hosts[0].ns.ip("route", "add", "default", "via", "192.168.77.1", "dev", "eth0");
  });

  after(async function () {
    for (const h of hosts) await h.endpoints.stop();
    await deleteNamespacesWithPrefix(prefix);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("finds the uplink and its MTU/address inside the namespace", async () => {
    const h = hosts[0];
    assert.equal(await Dataplane.defaultUplink(h.ns.name), "eth0");
    const info = await Dataplane.interfaceInfo("eth0", h.ns.name);
    assert.equal(info.mtu, 1500);
    assert.equal(info.ipv4, h.ip);
    assert.match(info.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  });

  it("creates device, bridge and conflist without peers; reports the VTEP MAC", async () => {
    for (const h of hosts) {
      const r = await h.dp.apply(desired(h, []));
      assert.ok(r.changes > 0, "first apply writes something");
      const macs = await h.dp.vtepMacs();
      assert.match(macs.blue ?? "", /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      h.mac = macs.blue;
    }
    const [link] = await hosts[0].ns.ipJson<{ mtu: number; flags: string[]; linkinfo: { info_kind: string; info_data: { id: number; port: number; local: string; learning: boolean } } }>("-d", "link", "show", "dev", DEV);
    assert.equal(link.linkinfo.info_kind, "vxlan");
    assert.deepEqual([link.linkinfo.info_data.id, link.linkinfo.info_data.port, link.linkinfo.info_data.local, link.linkinfo.info_data.learning], [VNI, PORT, hosts[0].ip, false]);
    assert.equal(link.mtu, 1450, "uplink MTU - 50");
    assert.ok(link.flags.includes("UP"));
    const addrs = await hosts[0].ns.ipJson<{ ifname: string; addr_info: { local: string; prefixlen: number }[] }>("-4", "addr", "show", "dev", BR);
    assert.deepEqual(addrs[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`), ["10.250.1.1/24"]);
    const forward = await hosts[0].ns.exec("cat", ["/proc/sys/net/ipv4/ip_forward"]);
    assert.equal(String(forward.stdout).trim(), "1");
    const conflist = JSON.parse(fs.readFileSync(path.join(hosts[0].dir, "net.d", CONFLIST_NAME), "utf8"));
    assert.equal(conflist.plugins[0].bridge, BR);
    assert.equal(conflist.plugins[0].mtu, 1450);
  });

  it("programs peers with the real MACs, neighbour + FDB + route each", async () => {
    await Promise.all(hosts.map((h) => h.dp.apply(desired(h))));
    const h1 = hosts[0];
    const fdb = await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV);
    for (const p of hosts.slice(1)) {
      assert.ok(fdb.some((e) => e.mac === p.mac && e.dst === p.ip), `FDB ${p.mac} dst ${p.ip} in ${JSON.stringify(fdb)}`);
    }
    const neigh = await h1.ns.ipJson<NeighEntry>("neigh", "show", "dev", DEV, "nud", "permanent");
    assert.deepEqual(neigh.map((n) => `${n.dst} ${n.lladdr}`).sort(), [`10.250.2.0 ${hosts[1].mac}`, `10.250.3.0 ${hosts[2].mac}`]);
    const routes = await h1.ns.ipJson<RouteEntry>("route", "show", "dev", DEV);
    assert.deepEqual(routes.filter((r) => r.gateway).map((r) => `${r.dst} via ${r.gateway}`).sort(), ["10.250.2.0/24 via 10.250.2.0", "10.250.3.0/24 via 10.250.3.0"]);
    assert.equal(await metricValue(h1.registry, "weft_agent_kernel_entries", { kind: "fdb" }), 2);
    assert.equal(await metricValue(h1.registry, "weft_agent_kernel_entries", { kind: "route" }), 2);
  });

  it("attaches a pod per host with the real CNI plugins through the written conflist", async () => {
    for (const h of hosts) {
      const ns = await Netns.create(`${prefix}-p${h.i}`);
      const res = await cniAdd({ conflistPath: path.join(h.dir, "net.d", CONFLIST_NAME), netnsPath: ns.path, containerId: `pod-h${h.i}`, ifName: "eth0", hostNetns: h.ns.name, binDir });
      assert.ok(res.ip.startsWith(`10.250.${h.i}.`), `pod IP ${res.ip} in ${h.subnet}`);
      h.pod = { ns, ip: res.ip };
      assert.deepEqual(h.endpoints.list().map((e) => [e.id, e.network, e.ips[0]]), [[`pod-h${h.i}/eth0`, "blue", res.ip]], "the weft plugin reported the pod");
      const [eth0] = await ns.ipJson<{ mtu: number }>("link", "show", "dev", "eth0");
      assert.equal(eth0.mtu, 1450, "pod MTU is the overlay MTU");
    }
  });

  it("pods reach each other across hosts, over VXLAN on the configured port", async () => {
    const [h1, h2, h3] = hosts;
    // Capture on the switch port of host 2.
    const capture = await startTcpdump(sw.name, 20, ["-T", "vxlan", "-i", "h2", "-c", "1", `udp dst port ${PORT}`]);
    assert.ok(await ping(h1.pod!.ns, h2.pod!.ip), "pod h1 -> pod h2");
    const out = await capture.output();
    const esc = (ip: string) => ip.replaceAll(".", "\\.");
    assert.match(out, new RegExp(`${esc(h1.ip)}\\.\\d+ > ${esc(h2.ip)}\\.${PORT}: VXLAN.*vni ${VNI}`), out);
    for (const [a, b] of [[h1, h3], [h2, h3], [h3, h1], [h2, h1], [h3, h2]]) {
      assert.ok(await ping(a.pod!.ns, b.pod!.ip), `pod h${a.i} -> pod h${b.i}`);
    }
  });

  it("applying the same desired state again changes nothing", async () => {
    for (const h of hosts) {
      const again = await h.dp.apply(desired(h));
      assert.equal(again.changes, 0, JSON.stringify(again.byKind));
      const resync = await h.dp.apply(desired(h), "resync");
      assert.equal(resync.changes, 0, JSON.stringify(resync.byKind));
    }
  });

  it("restores an FDB entry deleted by hand on resync, and counts it as a drift repair", async () => {
    const [h1, h2] = hosts;
    await execa("bridge", ["-n", h1.ns.name, "fdb", "del", h2.mac, "dev", DEV, "dst", h2.ip, "self"]);
    assert.ok(!(await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV)).some((e) => e.mac === h2.mac), "deleted");
    const before = (await metricValue(h1.registry, "weft_agent_drift_repairs_total", { kind: "fdb" })) ?? 0;
    const r = await h1.dp.apply(desired(h1), "resync");
    assert.deepEqual(r.byKind, { fdb: 1 });
    assert.equal(await metricValue(h1.registry, "weft_agent_drift_repairs_total", { kind: "fdb" }), before + 1);
    assert.ok((await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV)).some((e) => e.mac === h2.mac && e.dst === h2.ip), "restored");
    assert.ok(await ping(h1.pod!.ns, h2.pod!.ip), "pod h1 -> pod h2 after repair");
  });

  it("follows a peer's VTEP MAC change: neighbour and FDB replaced, no stale FDB entry", async () => {
    const [h1, h2, h3] = hosts;
    const oldMac = h3.mac;
    h3.vtepMac = "02:42:77:00:00:03";
    const r3 = await h3.dp.apply(desired(h3));
    assert.equal(r3.byKind.device, 1, "MAC set on the existing device");
    h3.mac = (await h3.dp.vtepMacs()).blue;
    assert.equal(h3.mac, h3.vtepMac);
    await Promise.all([h1.dp.apply(desired(h1)), h2.dp.apply(desired(h2))]);
    const fdb = await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV);
    assert.ok(!fdb.some((e) => e.mac === oldMac), `no FDB entry for the old MAC: ${JSON.stringify(fdb)}`);
    assert.deepEqual(fdb.filter((e) => e.dst === h3.ip).map((e) => e.mac), [h3.mac]);
    const neigh = await h1.ns.ipJson<NeighEntry>("neigh", "show", "10.250.3.0", "dev", DEV);
    assert.equal(neigh[0]?.lladdr, h3.mac);
    assert.ok(await ping(h1.pod!.ns, h3.pod!.ip), "pod h1 -> pod h3 after the MAC change");
  });

  it("removes a vanished peer's route, neighbour and FDB entry", async () => {
    const [h1, h2, h3] = hosts;
    const r = await h1.dp.apply(desired(h1, [h2]));
    assert.deepEqual(r.byKind, { route: 1, fdb: 1, neigh: 1 });
    assert.ok(!(await h1.ns.bridgeJson<FdbEntry>("fdb", "show", "dev", DEV)).some((e) => e.mac === h3.mac || e.dst === h3.ip));
    assert.equal((await h1.ns.ipJson<NeighEntry>("neigh", "show", "10.250.3.0", "dev", DEV)).length, 0);
    assert.equal((await h1.ns.ipJson<RouteEntry>("route", "show", "10.250.3.0/24")).length, 0);
    assert.equal(await metricValue(h1.registry, "weft_agent_kernel_entries", { kind: "fdb" }), 1);
    assert.ok(await ping(h1.pod!.ns, h2.pod!.ip), "the remaining peer still works");
  });

  it("keeps NAT and filter rules in its own chains, jumped to from the built-in ones", async () => {
    const save = String((await hosts[0].ns.exec("iptables-save", [])).stdout);
    assert.match(save, /-A POSTROUTING .*-j WEFT-POSTRTG/);
    assert.match(save, /-A FORWARD .*-j WEFT-FWD/);
    assert.match(save, /-A WEFT-POSTRTG -s 10\.250\.0\.0\/16 -d 10\.250\.0\.0\/16 .*-j RETURN/);
    assert.match(save, /-A WEFT-POSTRTG -s 10\.250\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE --random-fully/);
    assert.match(save, /-A WEFT-FWD -s 10\.250\.0\.0\/16 .*-j ACCEPT/);
    assert.match(save, /-A WEFT-FWD -j WEFT-ISOLATION/);
  });

  it("cniDel detaches the pod and releases its address", async () => {
    const h3 = hosts[2];
    const conflistPath = path.join(h3.dir, "net.d", CONFLIST_NAME);
    const reservation = path.join(h3.dir, "state", "cni", "networks", "weft-blue", h3.pod!.ip);
    assert.ok(fs.existsSync(reservation), "host-local keeps its reservation under the state dir");
    await cniDel({ conflistPath, netnsPath: h3.pod!.ns.path, containerId: "pod-h3", ifName: "eth0", hostNetns: h3.ns.name, binDir });
    assert.deepEqual(h3.endpoints.list(), [], "the weft plugin's DEL reached the agent's socket");
    assert.ok(!fs.existsSync(reservation), "reservation released");
    const links = await h3.pod!.ns.ipJson<{ ifname: string }>("link", "show");
    assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
  });

  it("cleanup() leaves no Weft device, route, chain or file, and is idempotent", async () => {
    const h1 = hosts[0];
    await h1.dp.cleanup();
    await h1.dp.cleanup();
    const links = await h1.ns.ipJson<{ ifname: string }>("link", "show");
    assert.deepEqual(links.filter((l) => l.ifname.startsWith("weft")), []);
    assert.ok(links.some((l) => l.ifname === "eth0"), "the uplink is not touched");
    const routes = await h1.ns.ipJson<RouteEntry>("route", "show");
    assert.deepEqual(routes.filter((r) => r.dst.startsWith("10.250.") || r.dev?.startsWith("weft")), []);
    assert.ok(routes.some((r) => r.dst === "default"), "routes Weft did not create stay");
    const save = String((await h1.ns.exec("iptables-save", [])).stdout);
    assert.doesNotMatch(save, /WEFT/);
    assert.ok(!fs.existsSync(path.join(h1.dir, "net.d", CONFLIST_NAME)), "conflist removed");
    assert.ok(!fs.existsSync(path.join(h1.dir, "state", "cni")), "CNI state removed");
    assert.deepEqual(await h1.dp.vtepMacs(), {});
  });
});
