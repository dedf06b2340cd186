// The OverlayNetwork and Node informers against a real kube-apiserver: they
// see creates, updates and deletes, and carry on across an API server restart
// (re-list after the error, no change lost).
import assert from "node:assert/strict";
import { waitFor } from "../../pkg/lab/ports.js";
import { Watch } from "@kubernetes/client-node";
import { loadKubeConfig, watchNodes, watchOverlayNetworks, type KubeNode, type NetworkObject, type WatchFn } from "../../pkg/kube/index.js";
import { useKubeApiServer } from "../harness/kube.js";

function onet(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name }, spec });
}

function node(name: string, labels: Record<string, string> = {}): string {
  return JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name, labels } });
}

describe("pkg/kube informers on a real kube-apiserver", function () {
  this.timeout(120_000);
  const kube = useKubeApiServer();

  before(async () => {
    await kube.api.kubectl(["apply", "--server-side", "-f", "deploy/crd/overlaynetwork.yaml"]);
    await kube.api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
  });

  it("sees OverlayNetworks created, updated and deleted, with the full set each time", async () => {
    let latest: NetworkObject[] | undefined;
    let calls = 0;
    await kube.api.kubectl(["create", "-f", "-"], { input: onet("before", { cidr: "10.70.0.0/16", vni: 70, nodePrefixLength: 24 }) });
    const informer = watchOverlayNetworks(loadKubeConfig({ kubeconfig: kube.api.kubeconfig }), {
      onNetworks: (list) => {
        latest = list;
        calls++;
      },
    });
    const names = () => (latest ?? []).map((n) => n.name).sort();
    try {
      await waitFor("the initial list", () => names().join() === "before");
      const first = latest!.find((n) => n.name === "before")!;
      assert.equal(first.generation, 1);
      assert.match(first.creationTimestamp, /^\d{4}-\d\d-\d\dT/);
      assert.deepEqual(first.spec, { cidr: "10.70.0.0/16", vni: 70, nodePrefixLength: 24, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, default: false, flood: false, dns: false });

      await kube.api.kubectl(["create", "-f", "-"], { input: onet("added", { cidr: "10.71.0.0/16", vni: 71, nodePrefixLength: 24 }) });
      await waitFor("the create", () => names().join() === "added,before");

      await kube.api.kubectl(["patch", "onet", "added", "--type=merge", "-p", '{"spec":{"mtu":1400}}']);
      await waitFor("the update", () => (latest!.find((n) => n.name === "added")?.spec as { mtu?: number }).mtu === 1400);
      assert.equal(latest!.find((n) => n.name === "added")!.generation, 2);

      await kube.api.kubectl(["patch", "onet", "added", "--subresource=status", "--type=merge", "-p", '{"status":{"allocated":3,"capacity":256}}']);
      await waitFor("the status update", () => latest!.find((n) => n.name === "added")?.status?.allocated === 3);

      await kube.api.kubectl(["delete", "onet", "before"]);
      await waitFor("the delete", () => names().join() === "added");
      assert.ok(calls >= 5, `expected a callback per change, got ${calls}`);
    } finally {
      await informer.stop();
      await kube.api.kubectl(["delete", "onet", "--all"]);
    }
  });

  it("sees Nodes come and go and their labels change, and reports deletions by name", async () => {
    let latest: KubeNode[] | undefined;
    const deleted: string[] = [];
    const informer = watchNodes(loadKubeConfig({ kubeconfig: kube.api.kubeconfig }), { onNodes: (l) => (latest = l), onNodeDeleted: (n) => deleted.push(n) });
    const find = (name: string) => latest?.find((n) => n.name === name);
    try {
      await waitFor("the initial list", () => latest !== undefined);
      await kube.api.kubectl(["create", "-f", "-"], { input: node("node-a", { zone: "a" }) });
      await kube.api.kubectl(["create", "-f", "-"], { input: node("node-b") });
      await waitFor("both nodes", () => !!find("node-a") && !!find("node-b"));
      assert.deepEqual(find("node-a"), { name: "node-a", labels: { zone: "a" }, weftUp: false });

      await kube.api.kubectl(["label", "node", "node-b", "weft.dev/pool=blue"]);
      await waitFor("the label", () => find("node-b")?.labels["weft.dev/pool"] === "blue");

      await kube.api.kubectl(["delete", "node", "node-a"]);
      await waitFor("the delete", () => !find("node-a"));
      assert.deepEqual(deleted, ["node-a"]);
    } finally {
      await informer.stop();
      await kube.api.kubectl(["delete", "node", "--all"]);
    }
  });

  it("survives an API server restart: re-lists and sees changes made after it", async () => {
    let nets: NetworkObject[] | undefined;
    let nodes: KubeNode[] | undefined;
    const deleted: string[] = [];
    let errors = 0;
    const kc = loadKubeConfig({ kubeconfig: kube.api.kubeconfig });
    const opts = { backoffBaseMs: 100, backoffCapMs: 1000, onError: () => errors++ };
    await kube.api.kubectl(["create", "-f", "-"], { input: onet("survivor", { cidr: "10.80.0.0/16", vni: 80, nodePrefixLength: 24 }) });
    await kube.api.kubectl(["create", "-f", "-"], { input: node("node-old") });
    const netInformer = watchOverlayNetworks(kc, { onNetworks: (l) => (nets = l) }, opts);
    const nodeInformer = watchNodes(kc, { onNodes: (l) => (nodes = l), onNodeDeleted: (n) => deleted.push(n) }, opts);
    try {
      await waitFor("the initial lists", () => nets?.length === 1 && nodes?.some((n) => n.name === "node-old") === true);
      const listsBefore = netInformer.lists + nodeInformer.lists;

      await kube.api.restart();

      await kube.api.kubectl(["create", "-f", "-"], { input: onet("after-restart", { cidr: "10.81.0.0/16", vni: 81, nodePrefixLength: 24 }) });
      await kube.api.kubectl(["delete", "onet", "survivor"]);
      await kube.api.kubectl(["create", "-f", "-"], { input: node("node-new") });
      await kube.api.kubectl(["delete", "node", "node-old"]);

      await waitFor("networks after the restart", () => nets?.map((n) => n.name).join() === "after-restart", 60_000);
      await waitFor("nodes after the restart", () => nodes?.map((n) => n.name).join() === "node-new", 60_000);
      assert.deepEqual(deleted, ["node-old"]);
      assert.ok(errors > 0, "the informers never noticed the API server going away");
      assert.ok(netInformer.lists + nodeInformer.lists > listsBefore, "no re-list after the restart");
    } finally {
      await netInformer.stop();
      await nodeInformer.stop();
    }
  });

  it("re-lists when the API server answers a watch with 410 Gone (expired resourceVersion)", async () => {
    const kc = loadKubeConfig({ kubeconfig: kube.api.kubeconfig });
    await kube.api.kubectl(["create", "-f", "-"], { input: onet("gone", { cidr: "10.90.0.0/16", vni: 90, nodePrefixLength: 24 }) });
    // The first watch asks for a version older than anything the API server keeps; the server, not the test, says 410.
    let watches = 0;
    const watch: WatchFn = (p, query, onEvent, done) => new Watch(kc).watch(p, { ...query, resourceVersion: watches++ === 0 ? "1" : query.resourceVersion }, onEvent, done);
    let nets: NetworkObject[] | undefined;
    const informer = watchOverlayNetworks(kc, { onNetworks: (l) => (nets = l) }, { watch, backoffBaseMs: 50, backoffCapMs: 500 });
    try {
      await waitFor("the re-list after 410", () => informer.expired === 1 && informer.lists === 2);
      await kube.api.kubectl(["patch", "onet", "gone", "--type=merge", "-p", '{"spec":{"mtu":1300}}']);
      await waitFor("a change seen by the resumed watch", () => (nets?.find((n) => n.name === "gone")?.spec as { mtu?: number } | undefined)?.mtu === 1300);
      assert.equal(informer.expired, 1);
    } finally {
      await informer.stop();
      await kube.api.kubectl(["delete", "onet", "gone"]);
    }
  });
});
