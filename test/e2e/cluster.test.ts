// Weft end to end on the real kernel: three hosts (namespaces on one underlay
// switch) with real etcd, controller and agents as processes, two pods per
// host attached by the real CNI plugins through the conflist the agent wrote.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CONFLIST_NAME } from "../../pkg/cni/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { json, metricValue, pingAcrossAgentRestarts, useCluster } from "../harness/cluster.js";
import { startTcpdump } from "../harness/tcpdump.js";

const VNI = 42;
const DEV = `weft.${VNI}`;
const PORT = 8472;

describe("e2e: three hosts, two pods each (routed VXLAN)", function () {
  this.timeout(180_000);
  const c = useCluster({ hosts: 3, podsPerHost: 2, network: { vni: VNI, port: PORT }, agentArgs: ["--resync-interval", "2s"] });

  async function leases() {
    return JSON.parse(await c.cluster.weftctl("lease", "list", "-o", "json")) as { node: string; subnet: string; vtepMac: string; vtepIP: string }[];
  }

  async function allPairsReach(): Promise<string[]> {
    const failures: string[] = [];
    const pairs = c.pods.flatMap((a) => c.pods.filter((b) => b !== a).map((b) => [a, b] as const));
    await Promise.all(pairs.map(async ([a, b]) => {
      const r = await c.cluster.ping(a.netns, b.ip, 2, 0.2, 1);
      if (r.received === 0) failures.push(`${a.name} -> ${b.name} (${b.ip})`);
    }));
    return failures;
  }

  it("every pod reaches every other pod, and the underlay carries VXLAN on the configured port", async () => {
    assert.deepEqual(await allPairsReach(), []);
    const [h1, h2] = c.hosts;
    const from = c.pods.find((p) => p.host === h1)!;
    const to = c.pods.find((p) => p.host === h2)!;
    const capture = await startTcpdump(c.cluster.switchNs, 10, ["-T", "vxlan", "-i", `h${h1.index}`, "-c", "2", `udp dst port ${PORT}`]);
    await c.cluster.ping(from.netns, to.ip, 3, 0.2, 1);
    const out = await capture.output();
    assert.match(out, new RegExp(`${h1.ip.replaceAll(".", "\\.")}\\.\\d+ > ${h2.ip.replaceAll(".", "\\.")}\\.${PORT}: VXLAN.*vni ${VNI}`), out);
    assert.match(out, new RegExp(`${from.ip.replaceAll(".", "\\.")} > ${to.ip.replaceAll(".", "\\.")}: ICMP echo request`), out);
  });

  it("masquerades pod traffic leaving the overlay to the host's underlay IP, but not pod-to-pod traffic", async () => {
    const [h1, h2] = c.hosts;
    const pod1 = c.pods.find((p) => p.host === h1)!;
    const pod2 = c.pods.find((p) => p.host === h2)!;
    assert.equal(await c.cluster.sourceSeenOutside(pod1.netns), h1.ip);
    assert.equal(await c.cluster.sourceSeenBy(pod2.netns, pod2.ip, pod1.netns), pod1.ip);
  });

  it("wrote the conflist with the bridge, host-local over the node's subnet, the weft plugin (the agent's socket), and portmap", async () => {
    const ls = await leases();
    for (const h of c.hosts) {
      const conf = JSON.parse(fs.readFileSync(path.join(h.cniConfDir, CONFLIST_NAME), "utf8"));
      assert.deepEqual(conf.plugins.map((p: { type: string }) => p.type), ["bridge", "weft", "portmap"]);
      assert.deepEqual(conf.plugins[1], { type: "weft", network: "e2e", socket: path.join(h.stateDir, "cni.sock") });
      assert.equal(conf.plugins[0].bridge, `weftbr${VNI}`);
      assert.equal(conf.plugins[0].mtu, 1450);
      assert.equal(conf.plugins[0].ipam.ranges[0][0].subnet, ls.find((l) => l.node === h.name)!.subnet);
    }
  });

  it("loses no packet while agents restart (one after SIGTERM, one after SIGKILL) under a continuous ping", async () => {
    const [h1, h2] = c.hosts;
    const from = c.pods.find((p) => p.host === h1)!;
    const to = c.pods.find((p) => p.host === h2)!;
    const result = await pingAcrossAgentRestarts(c.cluster, from, to, [h1, h2]);
    assert.ok(result.sent > 20, `only ${result.sent} packets sent`);
    assert.equal(result.loss, 0, `lost ${result.loss} of ${result.sent}`);
  });

  it("keeps pods connected with the controller down, also across an agent restart, and converges when it returns", async () => {
    const controller = c.cluster.controllers[0];
    await controller.stop();
    try {
      assert.deepEqual(await allPairsReach(), [], "controller stopped");
      const h3 = c.hosts[2];
      await h3.agent!.stop();
      h3.agent!.start();
      // It restores its last applied config from the state dir: wait for that apply.
      await waitFor("h3's agent to restore its state", async () => (metricValue(await c.cluster.agentMetrics(h3), "weft_agent_last_apply_success_timestamp_seconds") ?? 0) > 0, 20_000, 200);
      assert.equal(metricValue(await c.cluster.agentMetrics(h3), "weft_agent_controller_connected"), 0);
      assert.deepEqual(await allPairsReach(), [], "agent restarted while the controller is down");
    } finally {
      controller.start();
    }
    await c.cluster.waitController(0);
    for (const h of c.hosts) {
      await waitFor(`${h.name} to reconnect`, async () => metricValue(await c.cluster.agentMetrics(h), "weft_agent_controller_connected") === 1, 30_000, 200);
    }
    assert.deepEqual(await allPairsReach(), []);
  });

  it("restores an FDB entry deleted by hand within a resync interval, counting the repair", async () => {
    const [h1, h2] = c.hosts;
    const peer = (await leases()).find((l) => l.node === h2.name)!;
    const before = metricValue(await c.cluster.agentMetrics(h1), "weft_agent_drift_repairs_total", 'kind="fdb"') ?? 0;
    const del = await c.cluster.execIn(h1.netns, ["bridge", "fdb", "del", peer.vtepMac, "dev", DEV, "dst", peer.vtepIP, "self"]);
    assert.ok(del.ok, del.stderr);
    const has = async () => (await json<{ mac: string; dst?: string }>(c.cluster, h1.netns, "bridge", "fdb", "show", "dev", DEV)).some((f) => f.mac === peer.vtepMac && f.dst === peer.vtepIP);
    assert.equal(await has(), false);
    await waitFor("the FDB entry to come back", has, 10_000, 100);
    const after = metricValue(await c.cluster.agentMetrics(h1), "weft_agent_drift_repairs_total", 'kind="fdb"') ?? 0;
    assert.ok(after >= before + 1, `drift repairs ${before} -> ${after}`);
  });

  it("removes a node removed with weftctl from every other host's FDB, neighbours and routes", async () => {
    const h3 = c.hosts[2];
    const gone = (await leases()).find((l) => l.node === h3.name)!;
    const gw = gone.subnet.replace(/\.0\/\d+$/, ".0");
    await h3.agent!.stop(); // for good: a running agent would join again
    await c.cluster.weftctl("node", "remove", h3.name);
    for (const h of c.hosts.slice(0, 2)) {
      await waitFor(`${h.name} to drop ${h3.name}`, async () => {
        const fdb = await json<{ mac: string }>(c.cluster, h.netns, "bridge", "fdb", "show", "dev", DEV);
        const neigh = await json<{ dst: string }>(c.cluster, h.netns, "ip", "neigh", "show", "dev", DEV);
        const routes = await json<{ dst: string }>(c.cluster, h.netns, "ip", "route", "show", "dev", DEV);
        return !fdb.some((f) => f.mac === gone.vtepMac) && !neigh.some((n) => n.dst === gw) && !routes.some((r) => r.dst === gone.subnet);
      }, 15_000, 200);
    }
  });

  it("weft-agent --cleanup leaves no Weft device, route, rule or file on the host", async () => {
    const h3 = c.hosts[2];
    for (const p of c.pods.filter((x) => x.host === h3)) await c.cluster.removePod(p);
    // Cleanup is for a node whose agent is gone: a running one keeps journaling the
    // controller's deltas (now also the endpoint removals just made) into its state dir.
    await h3.agent?.stop();
    const res = await c.cluster.execIn(h3.netns, ["node", c.cluster.bin("weft-agent"), "--cleanup", "--state-dir", h3.stateDir, "--cni-conf-dir", h3.cniConfDir]);
    assert.ok(res.ok, res.stderr);
    const links = await json<{ ifname: string }>(c.cluster, h3.netns, "ip", "link", "show");
    assert.deepEqual(links.map((l) => l.ifname).filter((n) => n.startsWith("weft")), []);
    const routes = await json<{ dst: string; dev: string }>(c.cluster, h3.netns, "ip", "route", "show");
    assert.deepEqual(routes.filter((r) => r.dev.startsWith("weft") || r.dst.startsWith("10.244.")), []);
    const save = (await c.cluster.execIn(h3.netns, ["iptables-save"])).stdout;
    assert.doesNotMatch(save, /WEFT/);
    assert.equal(fs.existsSync(path.join(h3.cniConfDir, CONFLIST_NAME)), false);
    assert.equal(fs.existsSync(h3.stateDir), false);
  });
});
