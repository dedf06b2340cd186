// A switched network end to end: real etcd, controller and agents as
// processes, three hosts with two pods each attached through the agent's
// conflist (bridge + host-local over the node's lease in the CIDR + portmap +
// the weft plugin that reports the endpoint). The endpoints travel plugin ->
// agent -> controller -> etcd -> every member's agent -> FDB and neighbour
// entries; pods reach each other at L2, and an agent restart loses nothing.
import assert from "node:assert/strict";
import { waitFor } from "../../pkg/lab/ports.js";
import { json, pingAcrossAgentRestarts, useCluster } from "../harness/cluster.js";

const VNI = 47;
const BR = `weftbr${VNI}`;
const DEV = `weft.${VNI}`;

describe("e2e: switched network, three hosts, two pods each (full stack)", function () {
  this.timeout(240_000);
  const c = useCluster({ hosts: 3, podsPerHost: 2, network: { mode: "switched", cidr: "10.247.0.0/16", vni: VNI }, agentArgs: ["--resync-interval", "5s"] });

  async function unreachable(): Promise<string[]> {
    const failures: string[] = [];
    const pairs = c.pods.flatMap((a) => c.pods.filter((b) => b !== a).map((b) => [a, b] as const));
    await Promise.all(pairs.map(async ([a, b]) => {
      if ((await c.cluster.ping(a.netns, b.ip, 2, 0.2, 1)).received === 0) failures.push(`${a.name} -> ${b.name} (${b.ip})`);
    }));
    return failures;
  }

  it("every pod reaches every other; a pod's neighbour entry for a pod on another host is that pod's own MAC", async () => {
    let last: string[] = [];
    try {
      await waitFor("every pod to reach every other", async () => (last = await unreachable()).length === 0, 60_000, 500);
    } catch {
      assert.fail(`unreachable: ${last.join(", ")}`);
    }
    const [h1, h2] = c.hosts;
    const a = c.pods.find((p) => p.host === h1)!;
    const b = c.pods.find((p) => p.host === h2)!;
    const [bLink] = await json<{ address: string }>(c.cluster, b.netns, "ip", "link", "show", "dev", "eth0");
    const [n] = await json<{ lladdr?: string }>(c.cluster, a.netns, "ip", "neigh", "show", b.ip, "dev", "eth0");
    assert.equal(n?.lladdr, bLink.address);
    // h1 holds b's endpoint as a static FDB entry to h2 and a permanent neighbour on the bridge.
    const fdb = await json<{ mac: string; dst?: string }>(c.cluster, h1.netns, "bridge", "fdb", "show", "dev", DEV);
    assert.ok(fdb.some((e) => e.mac === bLink.address && e.dst === h2.ip), JSON.stringify(fdb));
    const neigh = await json<{ dst: string; lladdr?: string }>(c.cluster, h1.netns, "ip", "neigh", "show", "dev", BR, "nud", "permanent");
    assert.ok(neigh.some((e) => e.dst === b.ip && e.lladdr === bLink.address), JSON.stringify(neigh));
  });

  it("loses no packet while agents restart (SIGTERM, then SIGKILL) under a 50 pps ping between hosts", async () => {
    const [h1, h2] = c.hosts;
    const from = c.pods.find((p) => p.host === h1)!;
    const to = c.pods.find((p) => p.host === h2)!;
    const result = await pingAcrossAgentRestarts(c.cluster, from, to, [h1, h2]);
    console.log(`      ${result.sent} sent, ${result.received} received across two agent restarts`);
    assert.ok(result.sent > 20, `only ${result.sent} packets sent`);
    assert.equal(result.loss, 0, `lost ${result.loss} of ${result.sent}`);
  });

  it("loses no packet across an agent restart with the controller down (endpoints come from the state dir)", async () => {
    const controller = c.cluster.controllers[0];
    const [, h2, h3] = c.hosts;
    const from = c.pods.find((p) => p.host === h2)!;
    const to = c.pods.find((p) => p.host === h3)!;
    await controller.stop();
    try {
      const ping = c.cluster.startPing(from.netns, to.ip, 0.02);
      await new Promise((r) => setTimeout(r, 300));
      await h3.agent!.stop();
      h3.agent!.start();
      await waitFor("h3's agent to come back", async () => (await c.cluster.agentMetrics(h3)).includes("weft_agent_last_apply_success_timestamp_seconds "), 20_000, 200);
      await new Promise((r) => setTimeout(r, 1000));
      const result = await ping.stop();
      assert.ok(result.sent > 20, `only ${result.sent} packets sent`);
      assert.equal(result.loss, 0, `lost ${result.loss} of ${result.sent}`);
      assert.deepEqual(await unreachable(), [], "every pair with the controller down");
    } finally {
      controller.start();
    }
    await c.cluster.waitController(0);
  });
});
