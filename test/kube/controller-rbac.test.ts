// The controller in Kubernetes mode, authenticated as its own ServiceAccount
// with only the RBAC in deploy/: it reconciles OverlayNetworks (status written)
// and marks Nodes up. Removing any one rule of its ClusterRole makes the
// operation that needs it fail with 403, so the test can fail.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { startController, type KubePort, type RunningController } from "../../pkg/controller/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { KubeClient, loadKubeConfig, patchOverlayNetworkStatus, setNodeNetworkAvailable, tokenReviewer, watchNodes, watchOverlayNetworks, type OverlayNetwork, type Stoppable } from "../../pkg/kube/index.js";
import { useKubeApiServer, type KubeApiServer } from "../harness/kube.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

function deployedRules(): Rule[] {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(ROOT, "deploy/rbac/controller.yaml"), "utf8")).map((d) => d.toJSON());
  return (docs.find((d) => d.kind === "ClusterRole") as { rules: Rule[] }).rules;
}

async function getOnet(api: KubeApiServer, name: string): Promise<OverlayNetwork> {
  return JSON.parse((await api.kubectl(["get", "onet", name, "-o", "json"])).stdout) as OverlayNetwork;
}

function condition(obj: OverlayNetwork, type: string) {
  return obj.status?.conditions?.find((c) => c.type === type);
}

/** "ok", or the HTTP status the first failure carried. */
async function outcome(op: () => Promise<unknown>): Promise<"ok" | number> {
  try {
    await op();
    return "ok";
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

/** Whether an informer's first list succeeds ("ok") or fails (its status code). */
function informerOutcome(start: (ok: () => void, fail: (err: unknown) => void) => Stoppable): Promise<"ok" | number> {
  return new Promise((resolve) => {
    let informer: Stoppable | undefined;
    let done = false;
    const finish = (r: "ok" | number) => {
      if (done) return;
      done = true;
      // Stopped after this tick: the informer may still be inside its start().
      setImmediate(() => void informer?.stop());
      resolve(r);
    };
    informer = start(() => finish("ok"), (err) => finish((err as { code?: number }).code ?? -1));
    if (done) void informer.stop();
  });
}

describe("weft-controller in Kubernetes mode under deploy/'s RBAC", function () {
  this.timeout(120_000);
  const kube = useKubeApiServer();
  let controller: RunningController | undefined;
  let agent: SimAgent | undefined;

  before(async function () {
    await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
    await kube.api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
    for (const n of ["node-a", "node-b"]) {
      await kube.api.kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: n, labels: { "kubernetes.io/hostname": n } } }) });
    }
    const sa = await kube.api.serviceAccountUser("weft-system", "weft-controller");
    const client = KubeClient.fromOptions({ kubeconfig: sa.kubeconfig }, { log: silentLogger(), backoffBaseMs: 200, backoffCapMs: 2000 });
    const port: KubePort = client; // pkg/kube satisfies what the controller asks of it
    controller = await startController({
      etcdEndpoints: [kube.api.etcd.endpoint],
      etcdPrefix: "/weft-kube-test/",
      listen: "127.0.0.1:0",
      kube: port,
      log: silentLogger(),
      leaderTtlSeconds: 5,
    });
    await waitFor("the controller to be elected", () => controller!.isLeader(), 30_000);
  });

  after(async () => {
    agent?.close();
    await controller?.stop();
  });

  it("writes Ready status for a valid OverlayNetwork (kubectl apply -f deploy/examples/...)", async () => {
    await kube.api.kubectl(["apply", "-f", "deploy/examples/overlaynetwork.yaml"]);
    await waitFor("Ready=True on pods", async () => condition(await getOnet(kube.api, "pods"), "Ready")?.status === "True", 30_000, 200);
    const obj = await getOnet(kube.api, "pods");
    assert.equal(obj.status?.observedGeneration, 1);
    assert.equal(obj.status?.capacity, 256);
    assert.equal(condition(obj, "Invalid")?.status, "False");
  });

  it("sets NetworkUnavailable=False (WeftIsUp) on a Node once its agent applied its config, and counts it in status", async () => {
    agent = new SimAgent(`127.0.0.1:${controller!.port}`, simJoinRequest("node-a", 1, ["pods"]));
    await agent.connect();
    assert.match(agent.subnet("pods") ?? "", /^10\.244\.\d+\.0\/24$/);
    await waitFor("the Node condition", async () => {
      const node = JSON.parse((await kube.api.kubectl(["get", "node", "node-a", "-o", "json"])).stdout) as { status?: { conditions?: Array<{ type: string; status: string; reason: string }> } };
      const c = node.status?.conditions?.find((x) => x.type === "NetworkUnavailable");
      return c?.status === "False" && c.reason === "WeftIsUp";
    }, 30_000, 200);
    await waitFor("allocated=1", async () => (await getOnet(kube.api, "pods")).status?.allocated === 1, 30_000, 200);
    const table = (await kube.api.kubectl(["get", "onet", "pods"])).stdout;
    assert.match(table, /^pods\s+10\.244\.0\.0\/16\s+42\s+routed\s+1\s+True\s+\S+$/m);
  });

  it("marks an overlapping network Invalid (Overlap), and Ready once the older one is deleted", async () => {
    await kube.api.kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: "overlap" }, spec: { cidr: "10.244.128.0/17", vni: 43, nodePrefixLength: 24 } }) });
    await waitFor("Invalid=True on overlap", async () => condition(await getOnet(kube.api, "overlap"), "Invalid")?.status === "True", 30_000, 200);
    const invalid = condition(await getOnet(kube.api, "overlap"), "Invalid")!;
    assert.equal(invalid.reason, "Overlap");
    assert.match(invalid.message, /spec\.cidr/);
    await kube.api.kubectl(["delete", "onet", "pods"]);
    await waitFor("Ready=True on overlap", async () => condition(await getOnet(kube.api, "overlap"), "Ready")?.status === "True", 30_000, 200);
  });

  it("forgets a deleted Node: its agent is disconnected and its record leaves etcd", async () => {
    assert.ok(controller!.model.nodes.has("node-a"));
    await kube.api.kubectl(["delete", "node", "node-a"]);
    await waitFor("node-a to leave the controller's view", () => !controller!.model.nodes.has("node-a"), 30_000, 100);
    await agent!.waitEnded(30_000);
  });

  describe("with one rule removed from the ClusterRole", () => {
    const rules = deployedRules();
    const ops = {
      "list/watch overlaynetworks": (kc: ReturnType<typeof loadKubeConfig>) => informerOutcome((ok, fail) => watchOverlayNetworks(kc, { onNetworks: ok }, { onError: fail, log: silentLogger() })),
      "patch overlaynetworks/status": (kc: ReturnType<typeof loadKubeConfig>) => outcome(() => patchOverlayNetworkStatus(kc, "overlap", { observedGeneration: 1 })),
      "list/watch nodes": (kc: ReturnType<typeof loadKubeConfig>) => informerOutcome((ok, fail) => watchNodes(kc, { onNodes: ok }, { onError: fail, log: silentLogger() })),
      "patch nodes/status": (kc: ReturnType<typeof loadKubeConfig>) => outcome(() => setNodeNetworkAvailable(kc, "node-b")),
      // Agents' identity (--agent-token-audience): a review of a token that is not one answers authenticated=false, not 403.
      "create tokenreviews": (kc: ReturnType<typeof loadKubeConfig>) => outcome(() => tokenReviewer(kc)("not-a-token", "weft-controller")),
    };
    const needs: Record<keyof typeof ops, (r: Rule) => boolean> = {
      "list/watch overlaynetworks": (r) => r.resources.includes("overlaynetworks"),
      "patch overlaynetworks/status": (r) => r.resources.includes("overlaynetworks/status"),
      "list/watch nodes": (r) => r.resources.includes("nodes"),
      "patch nodes/status": (r) => r.resources.includes("nodes/status"),
      "create tokenreviews": (r) => r.resources.includes("tokenreviews"),
    };

    it("the full role allows every operation the controller performs", async () => {
      const sa = await kube.api.serviceAccountUser("weft-system", "weft-controller");
      const kc = loadKubeConfig({ kubeconfig: sa.kubeconfig });
      for (const [name, op] of Object.entries(ops)) assert.equal(await op(kc), "ok", name);
    });

    for (const [i, removed] of rules.entries()) {
      const broken = (Object.keys(ops) as Array<keyof typeof ops>).filter((op) => needs[op](removed));
      it(`without ${removed.resources.join(",")} [${removed.verbs.join(",")}]: ${broken.join(", ")} forbidden, the rest allowed`, async () => {
        assert.ok(broken.length > 0, `rule ${i} is not needed by any operation: not least privilege`);
        const name = `weft-controller-minus-${i}`;
        const manifest = [
          { apiVersion: "v1", kind: "ServiceAccount", metadata: { name, namespace: "weft-system" } },
          { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name }, rules: rules.filter((_, j) => j !== i) },
          { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name }, roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name }, subjects: [{ kind: "ServiceAccount", name, namespace: "weft-system" }] },
        ];
        await kube.api.kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: manifest }) });
        const sa = await kube.api.serviceAccountUser("weft-system", name);
        const kc = loadKubeConfig({ kubeconfig: sa.kubeconfig });
        // The allowed operations first: once they pass, the binding is in force, so a 403 below is the missing rule's.
        for (const op of Object.keys(ops) as Array<keyof typeof ops>) {
          if (!broken.includes(op)) await waitFor(`${op} allowed`, async () => (await ops[op](kc)) === "ok", 10_000, 200);
        }
        for (const op of broken) assert.equal(await ops[op](kc), 403, op);
      });
    }
  });
});
