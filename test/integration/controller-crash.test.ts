import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { freePort, waitFor } from "../../pkg/lab/ports.js";
import { Store } from "../../pkg/store/index.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";

const repo = path.resolve(import.meta.dirname, "../..");

function startControllerProcess(etcd: string, prefix: string, port: number): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "cmd/weft-controller/main.ts", "--etcd-endpoints", etcd, "--etcd-prefix", prefix, "--listen", `127.0.0.1:${port}`, "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"], {
    cwd: repo,
    stdio: ["ignore", "ignore", "inherit"],
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

async function joinWithRetry(a: SimAgent): Promise<void> {
  for (;;) {
    try {
      return await a.connect(20_000);
    } catch {
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
}

describe("controller killed with SIGKILL in the middle of allocations", function () {
  this.timeout(180_000);
  const etcd = useEtcd();
  const procs: ChildProcess[] = [];
  const agents: SimAgent[] = [];
  after(() => {
    agents.forEach((a) => a.close());
    procs.forEach((p) => p.exitCode === null && p.kill("SIGKILL"));
  });

  it("leaves no orphaned or double leases, and a new controller finishes the job", async () => {
    const prefix = "/weft-crash/";
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix });
    try {
      await store.saveNetwork(netSpec("blue", "10.80.0.0/16", 80), () => {});
      await store.saveNetwork(netSpec("green", "10.81.0.0/16", 81), () => {});
      const port = await freePort();
      const first = startControllerProcess(etcd.endpoint, prefix, port);
      procs.push(first);
      await waitFor("controller to listen", () => listening(port), 30_000);

      const count = 150;
      for (let i = 0; i < count; i++) agents.push(new SimAgent(`127.0.0.1:${port}`, simJoinRequest(`node-${i}`, i + 1, ["blue", "green"])));
      const joined = Promise.all(agents.map(joinWithRetry));
      await waitFor("allocations to be under way", async () => (await store.listLeases()).length >= 40, 60_000, 20);
      first.kill("SIGKILL");
      const atKill = (await store.listLeases()).length;
      assert.ok(atKill < count * 2, `the kill happened before all allocations were done (${atKill})`);

      const second = startControllerProcess(etcd.endpoint, prefix, port);
      procs.push(second);
      await joined;

      const leases = await store.listLeases();
      const nodes = await store.listNodes();
      assert.equal(nodes.length, count);
      for (const network of ["blue", "green"]) {
        const mine = leases.filter((l) => l.network === network);
        assert.equal(mine.length, count, `${network}: one lease per node`);
        assert.equal(new Set(mine.map((l) => l.subnet)).size, count, `${network}: no subnet leased twice`);
        assert.equal(new Set(mine.map((l) => l.node)).size, count, `${network}: no node holds two subnets`);
      }
      const byName = new Map(nodes.map((n) => [n.name, n]));
      for (const l of leases) {
        const node = byName.get(l.node);
        assert.ok(node, `lease ${l.network}/${l.subnet} belongs to a registered node`);
        assert.equal(node.subnets[l.network], l.subnet, `node ${l.node}'s record agrees with its lease`);
      }
      for (const a of agents) {
        assert.equal(a.subnet("blue"), byName.get(a.request.nodeName)!.subnets.blue, "what the agent was told is what etcd holds");
      }
    } finally {
      await store.close();
    }
  });
});
