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
import { Agent, cleanupNode, loadState, statePath } from "../../pkg/agent/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { Store } from "../../pkg/store/index.js";
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
  const controllers: RunningController[] = [];
  const agents: Agent[] = [];

  async function controller(port = 0): Promise<RunningController> {
    const c = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: PREFIX, listen: `127.0.0.1:${port}`, log: silentLogger() });
    controllers.push(c);
    return c;
  }

  async function stopController(c: RunningController): Promise<void> {
    await c.stop();
    controllers.splice(controllers.indexOf(c), 1);
  }

  function agent(host: Host, addresses: string[], extra: { metricsAddr?: string; resyncIntervalMs?: number } = {}): Agent {
    const a = new Agent({
      nodeName: host.name,
      controllers: addresses,
      netns: host.netns,
      cniConfDir: path.join(host.dir, "net.d"),
      stateDir: path.join(host.dir, "state"),
      resyncIntervalMs: extra.resyncIntervalMs ?? 0,
      metricsAddr: extra.metricsAddr,
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

    const base = `http://127.0.0.1:${a.metricsPort}`;
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^weft_agent_controller_connected 1$/m);
    assert.match(metrics, /^weft_agent_peers\{network="blue"\} 1$/m);
    assert.match(metrics, new RegExp(`^weft_agent_applied_revision ${a.appliedRevision}$`, "m"));
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
    const a2 = agent(A, [`127.0.0.1:${port}`]);
    await a2.start();
    await waitFor("restored route", async () => (await peerEntries(A, { ip: B.ip, subnet: bSubnet, mac: macB })).route);
    await waitFor("restore apply done", () => a2.idle && a2.lastApplied !== undefined);
    assert.deepEqual(await peerEntries(A, { ip: B.ip, subnet: bSubnet, mac: macB }), { neigh: true, fdb: true, route: true });
    assert.equal(await deviceMac(A), macA);
    assert.equal(a2.ready, false, "not ready: no controller has confirmed this config");

    // The device lost with a reboot comes back with the persisted MAC (flannel#1795).
    await ip(A.netns, "link", "del", DEV);
    a2.resync();
    await waitFor("device recreated", async () => (await deviceMac(A)) !== undefined && a2.idle);
    assert.equal(await deviceMac(A), macA);

    c = await controller(port);
    await waitFor("agents back and converged", async () => a2.ready && a2.controller !== undefined && (await converged(a2, b)));
    assert.equal(c.model.nodes.get("host-a")?.vtepMacs.blue, macA);
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

  it("--cleanup removes the device, its entries and the agent's state", async () => {
    const c = controllers[0] ?? (await controller());
    const a = agent(A, [`127.0.0.1:${c.port}`]);
    await a.start();
    await waitFor("a ready", () => a.ready);
    await stopAgent(a);
    assert.ok(fs.existsSync(statePath(path.join(A.dir, "state"))));
    await cleanupNode({ stateDir: path.join(A.dir, "state"), cniConfDir: path.join(A.dir, "net.d"), netns: A.netns, log: silentLogger() });
    assert.equal(await deviceMac(A), undefined);
    const links = await json<{ ifname: string }>("ip", A.netns, "link", "show");
    assert.deepEqual(links.filter((l) => l.ifname.startsWith("weft")), []);
    const routes = await json<{ dst: string }>("ip", A.netns, "route", "show");
    assert.deepEqual(routes.filter((r) => r.dst.startsWith("10.231.")), []);
    assert.equal(fs.existsSync(statePath(path.join(A.dir, "state"))), false);
  });
});
