// Two controller replicas in Kubernetes mode on one etcd and one real API
// server: only the elected one writes statuses and Node conditions; when it
// stops, the other takes over the writing; and the periodic resync repairs a
// status somebody else overwrote (no watch event would make it); an API
// server restart does not stop the reconciling.
import assert from "node:assert/strict";
import { startController, type KubePort, type RunningController } from "../../pkg/controller/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { KubeClient, type OverlayNetwork, type OverlayNetworkStatus } from "../../pkg/kube/index.js";
import { useKubeApiServer } from "../harness/kube.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

/** The real client, with every write it makes counted. */
class CountingKube implements KubePort {
  statusWrites = 0;
  nodeWrites = 0;
  constructor(private readonly client: KubeClient) {}
  watchNetworks(...args: Parameters<KubeClient["watchNetworks"]>) {
    return this.client.watchNetworks(...args);
  }
  watchNodes(...args: Parameters<KubeClient["watchNodes"]>) {
    return this.client.watchNodes(...args);
  }
  patchNetworkStatus(name: string, status: OverlayNetworkStatus) {
    this.statusWrites++;
    return this.client.patchNetworkStatus(name, status);
  }
  setNodeNetworkAvailable(node: string) {
    this.nodeWrites++;
    return this.client.setNodeNetworkAvailable(node);
  }
}

describe("Kubernetes mode with two controller replicas", function () {
  this.timeout(120_000);
  const kube = useKubeApiServer();
  const replicas: Array<{ controller: RunningController; kube: CountingKube }> = [];
  const agents: SimAgent[] = [];

  const onet = async (name: string) => JSON.parse((await kube.api.kubectl(["get", "onet", name, "-o", "json"])).stdout) as OverlayNetwork;
  const ready = (o: OverlayNetwork) => o.status?.conditions?.find((c) => c.type === "Ready")?.status;

  before(async () => {
    await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
    await kube.api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
    for (const n of ["node-a", "node-b"]) await kube.api.kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: n } }) });
    const sa = await kube.api.serviceAccountUser("weft-system", "weft-controller");
    for (const identity of ["replica-1", "replica-2"]) {
      const counting = new CountingKube(KubeClient.fromOptions({ kubeconfig: sa.kubeconfig }, { log: silentLogger(), backoffBaseMs: 200, backoffCapMs: 2000 }));
      const controller = await startController({
        etcdEndpoints: [kube.api.etcd.endpoint],
        etcdPrefix: "/weft-leader-test/",
        listen: "127.0.0.1:0",
        kube: counting,
        kubeResyncMs: 1000,
        identity,
        leaderTtlSeconds: 3,
        log: silentLogger(),
      });
      replicas.push({ controller, kube: counting });
    }
    await waitFor("a leader", () => replicas.some((r) => r.controller.isLeader()), 30_000);
  });

  after(async () => {
    for (const a of agents) a.close();
    for (const r of replicas) await r.controller.stop().catch(() => undefined);
  });

  it("only the elected replica writes the OverlayNetwork status and the Node condition", async () => {
    await kube.api.kubectl(["apply", "-f", "deploy/examples/overlaynetwork.yaml"]);
    const leader = replicas.find((r) => r.controller.isLeader())!;
    const follower = replicas.find((r) => r !== leader)!;
    // The agent talks to the follower: its join lands in etcd, the leader writes about it.
    const agent = new SimAgent(`127.0.0.1:${follower.controller.port}`, simJoinRequest("node-a", 1, ["pods"]));
    agents.push(agent);
    await waitFor("the network to reach the follower's view", () => follower.controller.model.networks.has("pods"), 30_000, 100);
    await agent.connect();
    await waitFor("allocated=1 and Ready", async () => {
      const o = await onet("pods");
      return o.status?.allocated === 1 && ready(o) === "True";
    }, 30_000, 200);
    await waitFor("node-a NetworkUnavailable=False", async () => {
      const node = JSON.parse((await kube.api.kubectl(["get", "node", "node-a", "-o", "json"])).stdout) as { status?: { conditions?: Array<{ type: string; reason?: string }> } };
      return node.status?.conditions?.some((c) => c.type === "NetworkUnavailable" && c.reason === "WeftIsUp") ?? false;
    }, 30_000, 200);
    assert.ok(leader.kube.statusWrites > 0 && leader.kube.nodeWrites >= 1, `leader wrote ${leader.kube.statusWrites} statuses, ${leader.kube.nodeWrites} node conditions`);
    assert.equal(follower.kube.statusWrites, 0, "the follower wrote a status");
    assert.equal(follower.kube.nodeWrites, 0, "the follower wrote a Node condition");
  });

  it("the resync puts back a status somebody else overwrote", async () => {
    // The patch's own answer shows the overwrite landed; a separate read can race the 1 s resync.
    const patched = JSON.parse((await kube.api.kubectl(["patch", "onet", "pods", "--subresource=status", "--type=merge", "-o", "json", "-p", JSON.stringify({ status: { allocated: 99, nodes: ["intruder"] } })])).stdout) as { status?: { allocated?: number } };
    assert.equal(patched.status?.allocated, 99);
    await waitFor("allocated back to 1", async () => (await onet("pods")).status?.allocated === 1, 15_000, 200);
    assert.deepEqual((await onet("pods")).status?.nodes, ["node-a"]);
  });

  it("when the leader stops, the other replica takes over the writing", async () => {
    const leader = replicas.find((r) => r.controller.isLeader())!;
    const other = replicas.find((r) => r !== leader)!;
    await leader.controller.stop();
    replicas.splice(replicas.indexOf(leader), 1);
    await waitFor("the other replica elected", () => other.controller.isLeader(), 30_000, 100);
    const before = other.kube.statusWrites;
    const agent = new SimAgent(`127.0.0.1:${other.controller.port}`, simJoinRequest("node-b", 2, ["pods"]));
    agents.push(agent);
    await agent.connect();
    await waitFor("allocated=2", async () => (await onet("pods")).status?.allocated === 2, 30_000, 200);
    assert.ok(other.kube.statusWrites > before, "the new leader wrote no status");
    assert.equal(other.kube.nodeWrites > 0, true, "the new leader set no Node condition");
  });

  it("keeps reconciling across an API server restart: a network created afterwards gets its status", async () => {
    await kube.api.restart();
    await kube.api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: "after-restart" }, spec: { cidr: "10.77.0.0/16", vni: 77, nodePrefixLength: 24 } }),
    });
    await waitFor("Ready on after-restart", async () => ready(await onet("after-restart")) === "True", 60_000, 250);
    const leader = replicas.find((r) => r.controller.isLeader())!;
    await waitFor("the leader to serve it from etcd", () => leader.controller.model.networks.has("after-restart"), 30_000, 100);
  });
});
