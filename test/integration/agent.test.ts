// The agent end to end on one machine: real etcd, real controllers, and two
// in-process agents whose dataplanes program two network namespaces ("hosts"
// joined by a veth pair as their underlay). Checks what each host's kernel
// holds for the other, acks, fail-static restarts, failover and cleanup.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { CONFLIST_NAME } from "../../pkg/cni/index.js";
import { Agent, loadState, removeState, statePath, type TlsFiles } from "../../pkg/agent/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry, type Registry } from "../../pkg/metrics/index.js";
import { Store } from "../../pkg/store/index.js";
import { Dataplane } from "../../pkg/dataplane/index.js";
import { makePki } from "../harness/certs.js";
import { useEtcd } from "../harness/etcd.js";
import { netSpec } from "../harness/specs.js";

const VNI = 4242;
const DEV = `weft.${VNI}`;
const PREFIX = "/weft-agent-it/";

interface Host {
  name: string;
  netns: string;
  ip: string;
  dir: string;
}

async function ip(netns: string, ...args: string[]): Promise<string> {
  return (await execa("ip", ["-n", netns, ...args])).stdout;
}

async function json<T>(cmd: string, netns: string, ...args: string[]): Promise<T[]> {
  const { stdout } = await execa(cmd, ["-n", netns, "-json", ...args], { reject: false });
  return stdout.trim() ? (JSON.parse(stdout) as T[]) : [];
}

/** What `host`'s kernel holds for a peer: neighbour, FDB and route on the VXLAN device. */
async function peerEntries(host: Host, peer: { ip: string; subnet: string; mac: string }) {
  const gw = peer.subnet.replace(/\.0\/\d+$/, ".0");
  const neigh = await json<{ dst: string; lladdr?: string }>("ip", host.netns, "neigh", "show", "dev", DEV);
  const fdb = await json<{ mac: string; dst?: string }>("bridge", host.netns, "fdb", "show", "dev", DEV);
  const routes = await json<{ dst: string; gateway?: string }>("ip", host.netns, "route", "show", "dev", DEV);
  return {
    neigh: neigh.some((n) => n.dst === gw && n.lladdr === peer.mac),
    fdb: fdb.some((f) => f.mac === peer.mac && f.dst === peer.ip),
    route: routes.some((r) => r.dst === peer.subnet && r.gateway === gw),
  };
}

async function fdbFor(host: Host, peerIp: string): Promise<string[]> {
  const fdb = await json<{ mac: string; dst?: string }>("bridge", host.netns, "fdb", "show", "dev", DEV);
  return fdb.filter((f) => f.dst === peerIp).map((f) => f.mac);
}

async function metric(registry: Registry, name: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  return (await m.get()).values.reduce((s, v) => s + v.value, 0);
}

async function deviceMac(host: Host): Promise<string | undefined> {
  const links = await json<{ address: string }>("ip", host.netns, "link", "show", "dev", DEV);
  return links[0]?.address;
}

describe("agent (real etcd, controller and kernel in network namespaces)", function () {
  this.timeout(120_000);
  const etcd = useEtcd();
  const tag = crypto.randomBytes(3).toString("hex");
  const hosts: Host[] = [
    { name: "host-a", netns: `weft-ag-${tag}-a`, ip: "192.168.231.1", dir: "" },
    { name: "host-b", netns: `weft-ag-${tag}-b`, ip: "192.168.231.2", dir: "" },
  ];
  const [A, B] = hosts;
  const podNamespaces: string[] = [];
  const controllers: RunningController[] = [];
  const agents: Agent[] = [];

  async function controller(port = 0, tls?: TlsFiles): Promise<RunningController> {
    const c = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: PREFIX, listen: `127.0.0.1:${port}`, tls, log: silentLogger() });
    controllers.push(c);
    return c;
  }

  async function stopController(c: RunningController): Promise<void> {
    await c.stop();
    controllers.splice(controllers.indexOf(c), 1);
  }

  function agent(host: Host, addresses: string[], extra: { metricsAddr?: string; resyncIntervalMs?: number; tls?: TlsFiles } = {}): Agent {
    const a = new Agent({
      nodeName: host.name,
      controllers: addresses,
      netns: host.netns,
      cniConfDir: path.join(host.dir, "net.d"),
      stateDir: path.join(host.dir, "state"),
      resyncIntervalMs: extra.resyncIntervalMs ?? 0,
      metricsAddr: extra.metricsAddr,
      tls: extra.tls,
      log: silentLogger(),
      registry: newRegistry(false),
      reconnectBaseMs: 50,
      reconnectCapMs: 500,
    });
    agents.push(a);
    return a;
  }

  async function stopAgent(a: Agent): Promise<void> {
    await a.stop();
    agents.splice(agents.indexOf(a), 1);
  }

  /** A stand-in pod: a namespace with a veth on the host's Weft bridge and the subnet's `.10`. Returns its address. */
  async function pod(host: Host, subnet: string): Promise<string> {
    const ns = `${host.netns}-pod`;
    const prefix = subnet.replace(/\.0\/\d+$/, "");
    await execa("ip", ["netns", "add", ns]);
    podNamespaces.push(ns);
    await ip(host.netns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", ns);
    await ip(host.netns, "link", "set", "vpod", "master", `weftbr${VNI}`, "up");
    await ip(ns, "addr", "add", `${prefix}.10/24`, "dev", "eth0");
    await ip(ns, "link", "set", "eth0", "up");
    await ip(ns, "link", "set", "lo", "up");
    await ip(ns, "route", "add", "default", "via", `${prefix}.1`);
    return `${prefix}.10`;
  }

  /** Both hosts hold complete entries for each other. */
  async function converged(a: Agent, b: Agent): Promise<boolean> {
    for (const [self, other, agentOther] of [[A, B, b], [B, A, a]] as const) {
      const subnet = agentOther.lastApplied?.networks[0]?.subnet;
      const mac = await deviceMac(other);
      if (!subnet || !mac) return false;
      const e = await peerEntries(self, { ip: other.ip, subnet, mac });
      if (!e.neigh || !e.fdb || !e.route) return false;
    }
    return true;
  }

  before(async () => {
    for (const h of hosts) {
      h.dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-ag-${h.name}-`));
      await execa("ip", ["netns", "add", h.netns]);
    }
    // The underlay: one veth pair, `eth0` in each host, and a default route so the agent finds its uplink by itself.
    await execa("ip", ["link", "add", "eth0", "netns", A.netns, "type", "veth", "peer", "name", "eth0", "netns", B.netns]);
    for (const h of hosts) {
      await ip(h.netns, "addr", "add", `${h.ip}/24`, "dev", "eth0");
      await ip(h.netns, "link", "set", "eth0", "up");
      await ip(h.netns, "link", "set", "lo", "up");
      await ip(h.netns, "route", "add", "default", "via", "192.168.231.254", "dev", "eth0");
    }
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: PREFIX });
    await store.saveNetwork(netSpec("blue", "10.231.0.0/16", VNI), () => {});
    await store.close();
  });

  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
  });

  after(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    for (const ns of podNamespaces) await execa("ip", ["netns", "del", ns], { reject: false });
    for (const h of hosts) {
      await execa("ip", ["netns", "del", h.netns], { reject: false });
      if (h.dir) fs.rmSync(h.dir, { recursive: true, force: true });
    }
  });

  it("programs each host's kernel for the other, registers the VTEP MACs and acks the revision", async () => {
    const c = await controller();
    const a = agent(A, [`127.0.0.1:${c.port}`], { metricsAddr: "127.0.0.1:0" });
    const b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("both agents ready", () => a.ready && b.ready);
    await waitFor("each host programmed for the other", () => converged(a, b));

    assert.equal(a.underlayIp, A.ip, "underlay IP taken from the default route's interface");
    const subnetA = a.lastApplied!.networks[0].subnet;
    assert.match(subnetA, /^10\.231\.\d+\.0\/24$/);
    assert.notEqual(subnetA, b.lastApplied!.networks[0].subnet);

    // The controller learned the MAC the device really has, and the agent acked what it applied.
    const macA = await deviceMac(A);
    await waitFor("controller to know host-a's MAC", () => c.model.nodes.get("host-a")?.vtepMacs.blue === macA);
    await waitFor("acks to catch up", async () => {
      const lag = (await c.registry.getSingleMetric("weft_controller_node_applied_revision_lag")!.get()).values;
      return lag.length === 2 && lag.every((v) => v.value === 0);
    });
    assert.ok(a.appliedRevision > 0);

    const state = await loadState(path.join(A.dir, "state"));
    assert.equal(state?.vtepMacs.blue, macA, "MAC persisted");
    assert.equal(state?.subnets.blue, subnetA);
    assert.equal(state?.revision, a.appliedRevision);

    // The one network is the default: its conflist points the CNI bridge plugin at Weft's bridge and the node's subnet.
    const conflist = JSON.parse(fs.readFileSync(path.join(A.dir, "net.d", CONFLIST_NAME), "utf8"));
    const bridge = conflist.plugins.find((p: { type: string }) => p.type === "bridge");
    assert.equal(bridge.bridge, `weftbr${VNI}`);
    assert.equal(bridge.mtu, 1450, "uplink MTU 1500 - 50");
    assert.equal(bridge.ipam.dataDir, path.join(A.dir, "state", "cni", "networks"), "host-local data under the state dir");
    assert.match(JSON.stringify(bridge.ipam), new RegExp(subnetA.replace(/\./g, "\\.")));

    const base = `http://127.0.0.1:${a.metricsPort}`;
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^weft_agent_controller_connected 1$/m);
    assert.match(metrics, /^weft_agent_peers\{network="blue"\} 1$/m);
    assert.match(metrics, new RegExp(`^weft_agent_applied_revision ${a.appliedRevision}$`, "m"));
  });

  it("an agent restart does not drop a packet between pods on different hosts", async () => {
    const c = controllers[0] ?? (await controller());
    let a = agent(A, [`127.0.0.1:${c.port}`]);
    const b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    await pod(A, a.lastApplied!.networks[0].subnet);
    const podB = await pod(B, b.lastApplied!.networks[0].subnet);

    const seqs: number[] = [];
    const ping = execa("ip", ["netns", "exec", `${A.netns}-pod`, "ping", "-n", "-i", "0.02", podB], { reject: false, buffer: false });
    ping.stdout!.setEncoding("utf8");
    let partial = "";
    ping.stdout!.on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop()!;
      for (const l of lines) {
        const m = /icmp_seq=(\d+)/.exec(l);
        if (m) seqs.push(Number(m[1]));
      }
    });
    try {
      await waitFor("pod-to-pod replies across the overlay", () => seqs.length >= 5);
      const before = Math.max(...seqs);
      await stopAgent(a);
      a = agent(A, [`127.0.0.1:${c.port}`]);
      await a.start();
      await waitFor("restarted agent has applied the snapshot", () => a.ready && a.idle);
      const during = Math.max(...seqs);
      await waitFor("more replies after the restart", () => Math.max(...seqs) >= during + 5);
      const last = Math.max(...seqs);
      assert.ok(last > before + 5, "ping ran across the restart");
      const got = new Set(seqs);
      const missing = [];
      for (let i = 1; i <= last; i++) if (!got.has(i)) missing.push(i);
      assert.deepEqual(missing, [], "no echo request went unanswered");
    } finally {
      ping.kill("SIGINT");
      await ping;
      for (const ns of podNamespaces.splice(0)) await execa("ip", ["netns", "del", ns], { reject: false });
    }
  });

  it("restarted while the controller is down: restores from the state dir, keeps its MAC, removes nothing", async () => {
    let c = await controller();
    const port = c.port;
    const a = agent(A, [`127.0.0.1:${port}`]);
    const b = agent(B, [`127.0.0.1:${port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    const macA = await deviceMac(A);
    const bSubnet = b.lastApplied!.networks[0].subnet;
    const macB = (await deviceMac(B))!;

    await stopController(c);
    await waitFor("agent a to notice", () => a.controller === undefined);
    await stopAgent(a);
    // Proof the restarted agent applies its saved config: an entry lost while it was down comes back.
    await ip(A.netns, "route", "del", bSubnet, "dev", DEV);
    const a2 = agent(A, [`127.0.0.1:${port}`], { metricsAddr: "127.0.0.1:0" });
    await a2.start();
    const base = `http://127.0.0.1:${a2.metricsPort}`;
    await waitFor("restored route", async () => (await peerEntries(A, { ip: B.ip, subnet: bSubnet, mac: macB })).route);
    await waitFor("restore apply done", () => a2.idle && a2.lastApplied !== undefined);
    assert.deepEqual(await peerEntries(A, { ip: B.ip, subnet: bSubnet, mac: macB }), { neigh: true, fdb: true, route: true });
    assert.equal(await deviceMac(A), macA);
    assert.equal(a2.ready, false, "not ready: no controller has confirmed this config");
    assert.equal((await fetch(`${base}/readyz`)).status, 503);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.match(await (await fetch(`${base}/metrics`)).text(), /^weft_agent_controller_connected 0$/m);

    // The device lost with a reboot comes back with the persisted MAC (flannel#1795).
    await ip(A.netns, "link", "del", DEV);
    a2.resync();
    await waitFor("device recreated", async () => (await deviceMac(A)) !== undefined && a2.idle);
    assert.equal(await deviceMac(A), macA);

    c = await controller(port);
    await waitFor("agents back and converged", async () => a2.ready && a2.controller !== undefined && (await converged(a2, b)));
    assert.equal(c.model.nodes.get("host-a")?.vtepMacs.blue, macA);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    // The count goes up when the new stream has delivered its snapshot, a moment after the stream opens.
    await waitFor("b to reconnect and get its snapshot", async () => b.controller !== undefined && (await metric(b.registry, "weft_agent_reconnects_total")) >= 1);
    assert.equal(await metric(b.registry, "weft_agent_reconnects_total"), 1, "b lost the controller once and came back");
    assert.equal(await metric(a2.registry, "weft_agent_reconnects_total"), 0, "a2's first stream is no reconnection");
  });

  it("fails over to the second controller and keeps converging", async () => {
    const c1 = await controller();
    const c2 = await controller();
    const addrs = [`127.0.0.1:${c1.port}`, `127.0.0.1:${c2.port}`];
    const a = agent(A, addrs);
    await a.start();
    await waitFor("a on c1", () => a.controller === addrs[0] && a.ready);
    await stopController(c1);
    await waitFor("a on c2", () => a.controller === addrs[1]);
    const b = agent(B, [addrs[1]]);
    await b.start();
    await waitFor("converged through c2", () => converged(a, b));
    assert.equal(c2.connectedAgents(), 2);
  });

  it("resync restores an FDB entry deleted by hand and counts the repair", async () => {
    const c = controllers[0] ?? (await controller());
    const a = agent(A, [`127.0.0.1:${c.port}`], { resyncIntervalMs: 300 });
    const b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    const macB = (await deviceMac(B))!;
    assert.deepEqual(await fdbFor(A, B.ip), [macB]);
    await execa("bridge", ["-n", A.netns, "fdb", "del", macB, "dev", DEV, "dst", B.ip, "self"]);
    assert.deepEqual(await fdbFor(A, B.ip), [], "entry really gone");
    await waitFor("FDB entry restored by the resync", async () => (await fdbFor(A, B.ip)).length === 1);
    assert.deepEqual(await fdbFor(A, B.ip), [macB]);
    await waitFor("repair counted", async () => (await metric(a.registry, "weft_agent_drift_repairs_total")) >= 1);
  });

  it("a peer that comes back with a new VTEP MAC has its neighbour and FDB entries replaced, none left stale", async () => {
    const c = controllers[0] ?? (await controller());
    const a = agent(A, [`127.0.0.1:${c.port}`]);
    let b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    const oldMac = (await deviceMac(B))!;

    // A reboot without the persisted state: the device comes back with a fresh random MAC.
    await stopAgent(b);
    await ip(B.netns, "link", "del", DEV);
    await removeState(path.join(B.dir, "state"));
    b = agent(B, [`127.0.0.1:${c.port}`]);
    await b.start();
    await waitFor("b back", async () => b.ready && (await deviceMac(B)) !== undefined);
    const newMac = (await deviceMac(B))!;
    assert.notEqual(newMac, oldMac);
    await waitFor("a to use the new MAC", () => converged(a, b));
    assert.deepEqual(await fdbFor(A, B.ip), [newMac], "exactly one FDB entry towards b, with the new MAC");
    const neigh = await json<{ lladdr?: string }>("ip", A.netns, "neigh", "show", "dev", DEV);
    assert.equal(neigh.filter((n) => n.lladdr === oldMac).length, 0, "no neighbour entry with the old MAC");
  });

  it("a node removed from the store disappears from the other host's FDB, neighbours and routes", async () => {
    const c = controllers[0] ?? (await controller());
    const a = agent(A, [`127.0.0.1:${c.port}`]);
    const b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    const peer = { ip: B.ip, subnet: b.lastApplied!.networks[0].subnet, mac: (await deviceMac(B))! };
    await stopAgent(b);
    // What `weftctl node remove host-b` does.
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: PREFIX });
    try {
      assert.equal(await store.removeNode("host-b"), true);
    } finally {
      await store.close();
    }
    await waitFor("b's entries gone from a", async () => {
      const e = await peerEntries(A, peer);
      return !e.neigh && !e.fdb && !e.route;
    });
    assert.deepEqual(await fdbFor(A, B.ip), []);
    await waitFor("the apply that removed them to finish", () => a.idle && a.lastApplied!.networks[0].peers.length === 0);
    await waitFor("peers gauge follows", async () => (await metric(a.registry, "weft_agent_peers")) === 0);
  });

  it("entries of a peer removed while the agent was down are gone once it is back (flannel#2554)", async () => {
    const c = controllers[0] ?? (await controller());
    let a = agent(A, [`127.0.0.1:${c.port}`]);
    const b = agent(B, [`127.0.0.1:${c.port}`]);
    await a.start();
    await b.start();
    await waitFor("converged", () => converged(a, b));
    const peer = { ip: B.ip, subnet: b.lastApplied!.networks[0].subnet, mac: (await deviceMac(B))! };
    await stopAgent(a);
    await stopAgent(b);
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: PREFIX });
    try {
      assert.equal(await store.removeNode("host-b"), true);
    } finally {
      await store.close();
    }
    assert.deepEqual(await peerEntries(A, peer), { neigh: true, fdb: true, route: true }, "a is down: its kernel still holds b");
    a = agent(A, [`127.0.0.1:${c.port}`]);
    await a.start();
    await waitFor("a ready", () => a.ready && a.idle);
    assert.deepEqual(await peerEntries(A, peer), { neigh: false, fdb: false, route: false });
    assert.deepEqual(await fdbFor(A, B.ip), []);
  });

  it("joins a controller that requires mTLS with a certificate naming its node", async () => {
    const pki = makePki();
    try {
      const c = await controller(0, { ...pki.server, ca: pki.ca });
      const a = agent(A, [`127.0.0.1:${c.port}`], { tls: { ...pki.client("host-a"), ca: pki.ca } });
      await a.start();
      await waitFor("a ready over mTLS", () => a.ready);
      assert.equal(a.controller, `127.0.0.1:${c.port}`);
      await waitFor("controller sees the agent", () => c.connectedAgents() === 1);
      await stopController(c);
    } finally {
      pki.remove();
    }
  });

  it("`weft-agent --cleanup` leaves the host with no Weft device, route, rule or file", async () => {
    const c = controllers[0] ?? (await controller());
    const a = agent(A, [`127.0.0.1:${c.port}`]);
    await a.start();
    await waitFor("a ready", () => a.ready);
    await stopAgent(a);
    const stateDir = path.join(A.dir, "state");
    const cniConfDir = path.join(A.dir, "net.d");
    const iptablesSave = async () => (await execa("ip", ["netns", "exec", A.netns, "iptables-save"])).stdout;
    // Everything the cleanup must remove is there first.
    assert.ok(fs.existsSync(statePath(stateDir)));
    assert.ok(fs.existsSync(path.join(cniConfDir, CONFLIST_NAME)));
    assert.match(await iptablesSave(), /WEFT-POSTRTG/);
    assert.notEqual(await deviceMac(A), undefined);

    const root = path.resolve(import.meta.dirname, "../..");
    const run = await execa("ip", ["netns", "exec", A.netns, process.execPath, "--import", "tsx", "cmd/weft-agent/main.ts", "--cleanup", "--state-dir", stateDir, "--cni-conf-dir", cniConfDir, "--log-level", "warn"], { cwd: root, reject: false });
    assert.equal(run.exitCode, 0, run.stderr);

    const links = await json<{ ifname: string }>("ip", A.netns, "link", "show");
    assert.deepEqual(links.filter((l) => l.ifname.startsWith("weft")).map((l) => l.ifname), []);
    const routes = await json<{ dst: string }>("ip", A.netns, "route", "show");
    assert.deepEqual(routes.filter((r) => r.dst.startsWith("10.231.")), []);
    assert.doesNotMatch(await iptablesSave(), /WEFT|weft:/);
    assert.equal(fs.existsSync(path.join(cniConfDir, CONFLIST_NAME)), false);
    assert.equal(fs.existsSync(stateDir), false, "state dir (state file and CNI data) removed");
    // The underlay is not Weft's: it stays.
    assert.equal((await Dataplane.interfaceInfo("eth0", A.netns)).ipv4, A.ip);
  });
});
