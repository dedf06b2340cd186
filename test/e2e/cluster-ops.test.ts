// Operating a running cluster: hosts joining, etcd restarts, controller
// failover, lease expiry, and isolated networks side by side. Real processes
// in network namespaces, built with the same code as `make lab`.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { Host, Pod } from "../../pkg/lab/cluster.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { json, metricValue, useCluster } from "../harness/cluster.js";

const TTL_S = 8;

describe("e2e: operating a running cluster (two controllers, short lease TTL)", function () {
  this.timeout(240_000);
  const c = useCluster({ hosts: 3, podsPerHost: 1, twoControllers: true, controllerArgs: ["--lease-ttl", `${TTL_S}s`], agentArgs: ["--resync-interval", "5s"] });

  async function leases() {
    return JSON.parse(await c.cluster.weftctl("lease", "list", "-o", "json")) as { network: string; node: string; subnet: string; vtepMac: string }[];
  }

  async function unreachable(pairs: [Pod, Pod][]): Promise<string[]> {
    const out: string[] = [];
    await Promise.all(pairs.map(async ([a, b]) => {
      if ((await c.cluster.ping(a.netns, b.ip, 2, 0.2, 1)).received === 0) out.push(`${a.name} -> ${b.name}`);
    }));
    return out;
  }

  const defaultPods = () => c.pods.filter((p) => !p.name.endsWith("-pb"));
  const allPairs = (pods: Pod[]) => pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as [Pod, Pod]));

  async function waitReachable(pods: Pod[], timeoutMs = 30_000): Promise<void> {
    let last: string[] = [];
    try {
      await waitFor("every pod to reach every other", async () => (last = await unreachable(allPairs(pods))).length === 0, timeoutMs, 200);
    } catch {
      assert.fail(`unreachable: ${last.join(", ")}`);
    }
  }

  async function connectedTo(i: number): Promise<number> {
    const res = await c.cluster.execIn(c.cluster.controlNs, ["curl", "-s", "--max-time", "2", `http://${c.cluster.controllerAddress(i).replace(/:\d+$/, "")}:${9400 + 10 * i + 1}/metrics`]);
    return metricValue(res.stdout, "weft_controller_connected_agents") ?? -1;
  }

  it("a host added to the running cluster is reachable from every existing pod", async () => {
    const host = await c.cluster.addHost();
    const t0 = performance.now();
    c.cluster.startAgent(host, ["--resync-interval", "5s"], [c.cluster.controllerAddress(0), c.cluster.controllerAddress(1)]);
    await c.cluster.waitAgent(host);
    const pod = await c.cluster.addPod(host);
    const others = defaultPods().filter((p) => p !== pod);
    await waitFor("every existing pod to reach the new one", async () => (await unreachable(others.map((o) => [o, pod]))).length === 0, 30_000, 50);
    const ms = performance.now() - t0;
    process.stdout.write(`      new host reachable from all ${others.length} existing pods ${(ms / 1000).toFixed(2)} s after its agent started (incl. pod attach)\n`);
    assert.deepEqual(await unreachable(others.map((o) => [pod, o])), []);
  });

  it("isolated networks on the same hosts: pods reach their own network everywhere and never the other", async () => {
    await c.cluster.weftctl("network", "create", "blue", "--cidr", "10.245.0.0/16", "--vni", "43", "--node-prefix-length", "24");
    const hosts = c.cluster.hosts;
    await waitFor("blue leases for the hosts", async () => {
      const l = await leases();
      return hosts.every((h) => l.some((x) => x.network === "blue" && x.node === h.name));
    }, 20_000, 200);
    const l = await leases();
    const blue: Pod[] = [];
    for (const h of hosts) {
      // Every network is attachable: the agent writes weft-blue.conflist next to the default's 10-weft.conflist.
      const file = path.join(h.cniConfDir, "weft-blue.conflist");
      await waitFor(`${h.name} to write weft-blue.conflist`, async () => fs.existsSync(file), 20_000, 100);
      const subnet = l.find((x) => x.network === "blue" && x.node === h.name)!.subnet;
      assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")).plugins[0].ipam.ranges[0][0].subnet, subnet);
      blue.push(await c.cluster.addPod(h, file, "b"));
    }
    await waitReachable(blue);
    const red = hosts.map((h) => defaultPods().find((p) => p.host === h)!);
    const crossings: [Pod, Pod][] = [[blue[0], red[1]], [red[1], blue[0]], [blue[0], red[0]], [red[0], blue[1]]];
    assert.deepEqual((await unreachable(crossings)).sort(), crossings.map(([a, b]) => `${a.name} -> ${b.name}`).sort(), "traffic between networks must be dropped");
    await waitReachable(defaultPods());
  });

  it("loses no pod-to-pod packet while etcd restarts, and agents converge afterwards", async () => {
    const [a, b] = defaultPods();
    const ping = c.cluster.startPing(a.netns, b.ip, 0.02);
    await new Promise((r) => setTimeout(r, 300));
    await c.cluster.etcd!.stop();
    await new Promise((r) => setTimeout(r, 2000));
    c.cluster.etcd!.start();
    await c.cluster.waitEtcd();
    await new Promise((r) => setTimeout(r, 1000));
    const result = await ping.stop();
    assert.ok(result.sent > 50);
    assert.equal(result.loss, 0, `lost ${result.loss} of ${result.sent}`);
    // Converged: a change made after the restart reaches every agent.
    await c.cluster.weftctl("network", "delete", "blue", "--force");
    for (const h of c.cluster.hosts) {
      await waitFor(`${h.name} to drop network blue`, async () => (await json(c.cluster, h.netns, "ip", "link", "show", "dev", "weft.43")).length === 0, 30_000, 200);
      // Written in the same apply, after the device: allow that apply to finish.
      await waitFor(`${h.name} to remove weft-blue.conflist with the network`, async () => !fs.existsSync(path.join(h.cniConfDir, "weft-blue.conflist")), 5_000, 50);
      assert.ok(fs.existsSync(path.join(h.cniConfDir, "10-weft.conflist")), "the default network's conflist stays");
    }
    await waitReachable(defaultPods());
  });

  it("moves agents to the other controller when theirs dies, and a host joining meanwhile gets a subnet and connectivity", async () => {
    await waitFor("agents on controller 0", async () => (await connectedTo(0)) === c.cluster.hosts.length, 20_000, 200);
    await c.cluster.controllers[0].kill9();
    const joiner: Host = await c.cluster.addHost();
    c.cluster.startAgent(joiner, ["--resync-interval", "5s"], [c.cluster.controllerAddress(0), c.cluster.controllerAddress(1)]);
    await waitFor("every agent on controller 1", async () => (await connectedTo(1)) === c.cluster.hosts.length, 30_000, 200);
    await c.cluster.waitAgent(joiner);
    assert.ok((await leases()).some((l) => l.node === joiner.name && l.network === "e2e"), "the joiner has a subnet");
    await c.cluster.addPod(joiner);
    await waitReachable(defaultPods());
    c.cluster.controllers[0].start();
    await c.cluster.waitController(0);
  });

  it(`reclaims the subnet of a host whose agent is gone for ${TTL_S}s (lease TTL), and gives it one back when it returns`, async () => {
    const gone = c.cluster.hosts[1];
    const lease = (await leases()).find((l) => l.node === gone.name && l.network === "e2e")!;
    await gone.agent!.stop();
    const t0 = Date.now();
    await waitFor("the lease to expire", async () => !(await leases()).some((l) => l.node === gone.name), (TTL_S + 20) * 1000, 500);
    const expiredAfter = (Date.now() - t0) / 1000;
    assert.ok(expiredAfter >= TTL_S - 3, `lease gone after only ${expiredAfter}s`);
    for (const h of c.cluster.hosts.filter((x) => x !== gone)) {
      await waitFor(`${h.name} to drop the expired host`, async () => {
        const fdb = await json<{ mac: string }>(c.cluster, h.netns, "bridge", "fdb", "show", "dev", "weft.42");
        const routes = await json<{ dst: string }>(c.cluster, h.netns, "ip", "route", "show", "dev", "weft.42");
        return !fdb.some((f) => f.mac === lease.vtepMac) && !routes.some((r) => r.dst === lease.subnet);
      }, 15_000, 200);
    }
    gone.agent!.start();
    await c.cluster.waitAgent(gone);
    assert.ok((await leases()).some((l) => l.node === gone.name && l.network === "e2e"), "a subnet again");
    await waitReachable(defaultPods());
  });
});
