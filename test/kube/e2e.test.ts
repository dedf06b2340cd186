// Weft on Kubernetes end to end: a real kube-apiserver with deploy/ applied,
// the controller process in Kubernetes mode (its ServiceAccount's token, only
// deploy/'s RBAC), agents in host namespaces on the real kernel, and Node
// objects created by the test (no kubelet runs). OverlayNetworks are the only
// source of networks: nothing is written with weftctl.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CONFLIST_NAME } from "../../pkg/cni/index.js";
import { Cluster, CONTROL_IP, CONTROLLER_PORT, type Host, type Pod } from "../../pkg/lab/cluster.js";
import { waitFor } from "../../pkg/lab/ports.js";
import type { OverlayNetwork } from "../../pkg/kube/index.js";
import { json, metricValue, REPO_ROOT } from "../harness/cluster.js";
import { useKubeApiServer } from "../harness/kube.js";
import { NetnsBridge } from "../harness/netns-bridge.js";

const VNI = 42; // deploy/examples/overlaynetwork.yaml
const DEV = `weft.${VNI}`;
const ZONE_VNI = 77;

interface NodeJson {
  metadata: { name: string; labels?: Record<string, string> };
  status?: { conditions?: Array<{ type: string; status: string; reason?: string }> };
}

describe("e2e on Kubernetes: OverlayNetwork -> controller (Kubernetes mode) -> agents -> pods", function () {
  this.timeout(180_000);
  const kube = useKubeApiServer();
  let cluster: Cluster;
  let bridge: NetnsBridge | undefined;
  const hosts: Host[] = [];
  const pods: Pod[] = [];

  const onet = async (name: string) => JSON.parse((await kube.api.kubectl(["get", "onet", name, "-o", "json"])).stdout) as OverlayNetwork;
  const node = async (name: string) => JSON.parse((await kube.api.kubectl(["get", "node", name, "-o", "json"])).stdout) as NodeJson;
  const fdbDsts = async (h: Host) => (await json<{ mac: string; dst?: string }>(cluster, h.netns, "bridge", "fdb", "show", "dev", DEV)).map((e) => e.dst).filter(Boolean);
  const routes = async (h: Host) => (await json<{ dst: string; dev?: string }>(cluster, h.netns, "ip", "route", "show", "dev", DEV)).map((r) => r.dst);

  before(async function () {
    this.timeout(300_000);
    const id = crypto.randomBytes(3).toString("hex");
    cluster = await Cluster.create({ prefix: `weft-e2e-${id}`, runDir: fs.mkdtempSync(path.join(os.tmpdir(), `weft-kube-e2e-${id}-`)), repoRoot: REPO_ROOT });
    try {
      await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
      await kube.api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
      cluster.startEtcd();
      await cluster.waitEtcd();
      for (let i = 0; i < 3; i++) hosts.push(await cluster.addHost());
      for (const h of hosts) {
        await kube.api.kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: h.name, labels: { "kubernetes.io/hostname": h.name } } }) });
      }
      // The controller runs in the control host; the API server listens on the root namespace's loopback.
      bridge = await NetnsBridge.open(cluster.controlNs, kube.api.port, cluster.opts.runDir);
      const sa = await kube.api.serviceAccountUser("weft-system", "weft-controller");
      cluster.startController(0, ["--kubeconfig", sa.kubeconfig, "--lease-ttl", "30s"]);
      await cluster.waitController(0);
      // The node name comes from WEFT_NODE_NAME, as the DaemonSet's downward API sets it.
      for (const h of hosts) cluster.startAgent(h, ["--resync-interval", "2s"], undefined, { nodeNameFromEnv: true });
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${cluster.controllers.map((p) => `--- ${p.name}\n${p.tail(20)}`).join("\n")}`);
    }
  });

  afterEach(function () {
    if (this.currentTest?.state !== "failed") return;
    for (const p of [...hosts.map((h) => h.agent), ...cluster.controllers]) if (p) process.stderr.write(`--- ${p.name}\n${p.tail(12)}\n`);
  });

  after(async function () {
    this.timeout(60_000);
    await cluster?.teardown({ keepLogs: !!process.env.WEFT_E2E_KEEP_LOGS });
    await bridge?.close();
  });

  it("serves no network before an OverlayNetwork exists: agents apply an empty config and write no CNI config", async () => {
    await waitFor("every agent ready (first snapshot applied)", async () => {
      for (const h of hosts) if (!(await cluster.agentReady(h))) return false;
      return true;
    }, 60_000, 200);
    for (const h of hosts) {
      assert.equal(fs.existsSync(path.join(h.cniConfDir, CONFLIST_NAME)), false, `${h.name} wrote a CNI config before any network was declared`);
      assert.equal((await cluster.execIn(h.netns, ["ip", "link", "show", DEV])).ok, false, `${h.name} has ${DEV} before any network was declared`);
    }
  });

  it("kubectl apply -f deploy/examples/overlaynetwork.yaml: every host gets a subnet and pods on different hosts reach each other", async () => {
    await kube.api.kubectl(["apply", "-f", "deploy/examples/overlaynetwork.yaml"]);
    await Promise.all(hosts.map((h) => cluster.waitAgent(h, 60_000)));
    for (const h of hosts) pods.push(await cluster.addPod(h));
    const failures: string[] = [];
    for (const a of pods) {
      for (const b of pods) {
        if (a === b) continue;
        const r = await cluster.ping(a.netns, b.ip, 2, 0.2, 1);
        if (r.received === 0) failures.push(`${a.name} -> ${b.name} (${b.ip})`);
      }
    }
    assert.deepEqual(failures, []);
    const subnets = new Set(pods.map((p) => p.ip.split(".").slice(0, 3).join(".")));
    assert.equal(subnets.size, 3, `one /24 per host: ${pods.map((p) => p.ip).join(", ")}`);
  });

  it("kubectl get onet shows CIDR, VNI, MODE, NODES, READY and AGE with real values; status lists the member nodes", async () => {
    await waitFor("allocated=3", async () => (await onet("pods")).status?.allocated === 3, 30_000, 200);
    const table = (await kube.api.kubectl(["get", "onet"])).stdout;
    assert.match(table, /^NAME\s+CIDR\s+VNI\s+MODE\s+NODES\s+READY\s+AGE$/m);
    assert.match(table, /^pods\s+10\.244\.0\.0\/16\s+42\s+routed\s+3\s+True\s+\d+s$/m, table);
    const status = (await onet("pods")).status!;
    assert.deepEqual([...(status.nodes ?? [])].sort(), hosts.map((h) => h.name).sort());
    assert.equal(status.capacity, 256);
    assert.equal(status.observedGeneration, 1);
  });

  it("sets NetworkUnavailable=False (WeftIsUp) on every Node whose agent has applied its config", async () => {
    for (const h of hosts) {
      await waitFor(`NetworkUnavailable=False on ${h.name}`, async () => {
        const c = (await node(h.name)).status?.conditions?.find((x) => x.type === "NetworkUnavailable");
        return c?.status === "False" && c.reason === "WeftIsUp";
      }, 30_000, 200);
    }
  });

  it("exports Kubernetes-mode metrics: informers synced, networks served, status and Node writes", async () => {
    const res = await cluster.execIn(cluster.controlNs, ["curl", "-sf", "--max-time", "2", `http://${CONTROL_IP}:${CONTROLLER_PORT + 1}/metrics`]);
    assert.ok(res.ok, res.stderr);
    assert.equal(metricValue(res.stdout, "weft_controller_kube_synced"), 1);
    assert.equal(metricValue(res.stdout, "weft_controller_kube_networks", 'state="served"'), 1);
    assert.equal(metricValue(res.stdout, "weft_controller_kube_networks", 'state="invalid"'), 0);
    assert.ok((metricValue(res.stdout, "weft_controller_kube_writes_total", 'kind="network_status",result="ok"') ?? 0) >= 1);
    assert.equal(metricValue(res.stdout, "weft_controller_kube_writes_total", 'kind="node_condition",result="ok"'), hosts.length);
  });

  it("Node labels feed nodeSelector: a network for zone=b reaches only the labelled host, and leaves when the label goes", async () => {
    const [h1, h2] = hosts;
    await kube.api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: "zone-b" }, spec: { cidr: "10.250.0.0/16", vni: ZONE_VNI, nodePrefixLength: 24, nodeSelector: { "weft.dev/zone": "b" } } }),
    });
    await kube.api.kubectl(["label", "node", h2.name, "weft.dev/zone=b"]);
    const hasDevice = async (h: Host) => (await cluster.execIn(h.netns, ["ip", "link", "show", `weft.${ZONE_VNI}`])).ok;
    await waitFor(`weft.${ZONE_VNI} on ${h2.name}`, () => hasDevice(h2), 30_000, 200);
    await waitFor("zone-b Ready with one node", async () => {
      const s = (await onet("zone-b")).status;
      return s?.allocated === 1 && s.conditions?.find((c) => c.type === "Ready")?.status === "True";
    }, 30_000, 200);
    assert.equal(await hasDevice(h1), false, `${h1.name} has no zone=b label but got the zone-b network`);
    await kube.api.kubectl(["label", "node", h2.name, "weft.dev/zone-"]);
    await waitFor(`weft.${ZONE_VNI} gone from ${h2.name}`, async () => !(await hasDevice(h2)), 30_000, 200);
    await kube.api.kubectl(["delete", "onet", "zone-b"]);
  });

  it("an invalid OverlayNetwork (VNI taken) gets Invalid=True, is not served, and the agents keep their pod network", async () => {
    await kube.api.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: "clash" }, spec: { cidr: "10.251.0.0/16", vni: VNI, nodePrefixLength: 24 } }),
    });
    await waitFor("Invalid=True on clash", async () => (await onet("clash")).status?.conditions?.find((c) => c.type === "Invalid")?.status === "True", 30_000, 200);
    const invalid = (await onet("clash")).status!.conditions!.find((c) => c.type === "Invalid")!;
    assert.equal(invalid.reason, "VNIConflict");
    assert.match(invalid.message, /spec\.vni/);
    const r = await cluster.ping(pods[0].netns, pods[1].ip, 2, 0.2, 1);
    assert.equal(r.received, 2);
    for (const h of hosts) assert.ok(!(await routes(h)).some((d) => d.startsWith("10.251.")), `${h.name} got a route of the invalid network`);
    await kube.api.kubectl(["delete", "onet", "clash"]);
  });

  it("deleting a Node releases its lease and removes its FDB entries and routes from every other host", async () => {
    const [h1, h2, h3] = hosts;
    const h3Subnet = `${pods.find((p) => p.host === h3)!.ip.split(".").slice(0, 3).join(".")}.0/24`;
    for (const h of [h1, h2]) {
      assert.ok((await fdbDsts(h)).includes(h3.ip), `${h.name} has no FDB entry for ${h3.name} before the delete`);
      assert.ok((await routes(h)).includes(h3Subnet), `${h.name} has no route to ${h3Subnet} before the delete`);
    }
    await kube.api.kubectl(["delete", "node", h3.name]);
    for (const h of [h1, h2]) {
      await waitFor(`${h.name} to drop ${h3.name}`, async () => !(await fdbDsts(h)).includes(h3.ip) && !(await routes(h)).includes(h3Subnet), 30_000, 200);
    }
    await waitFor("allocated=2", async () => (await onet("pods")).status?.allocated === 2, 30_000, 200);
    assert.ok(!(await onet("pods")).status!.nodes!.includes(h3.name));
    // The surviving hosts still reach each other.
    const p1 = pods.find((p) => p.host === h1)!;
    const p2 = pods.find((p) => p.host === h2)!;
    assert.equal((await cluster.ping(p1.netns, p2.ip, 2, 0.2, 1)).received, 2);
  });
});
