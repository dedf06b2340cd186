// Kubernetes mode end to end in time: a real kube-apiserver (own etcd), the
// controller in Kubernetes mode, N simulated agents (real gRPC clients) whose
// Node objects exist. Measured:
//   - `OverlayNetwork` created -> every agent has the network, its subnet and all N-1 peers;
//   - the same -> status Ready with allocated = N (as an informer sees it);
//   - `Node` deleted -> every other agent has dropped that peer.
import * as grpc from "@grpc/grpc-js";
import { ControllerClient } from "../../pkg/api/index.js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { KubeClient, loadKubeConfig, watchOverlayNetworks, type NetworkObject } from "../../pkg/kube/index.js";
import { KubeApiServer } from "../harness/kube-apiserver.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { percentile, publish } from "./table.js";

const CHANNELS = 8;

/** Polls every 2 ms: the wait is what is being measured. */
const until = (what: string, cond: () => boolean, timeoutMs = 120_000) => waitFor(what, cond, timeoutMs, 2);

async function scenario(api: KubeApiServer, n: number, samples: number): Promise<(string | number)[]> {
  const etcd = await EtcdProcess.start();
  let controller: RunningController | undefined;
  const clients: ControllerClient[] = [];
  const agents: SimAgent[] = [];
  const networks = new Map<string, NetworkObject>();
  const informer = watchOverlayNetworks(loadKubeConfig({ kubeconfig: api.kubeconfig }), { onNetworks: (list) => list.forEach((o) => networks.set(o.name, o)) });
  const names = Array.from({ length: n + samples }, (_, i) => `bench-${n}-${i}`);
  try {
    await api.kubectl(["apply", "--server-side", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "List", items: names.map((name) => ({ apiVersion: "v1", kind: "Node", metadata: { name } })) }),
    });
    controller = await startController({
      etcdEndpoints: [etcd.endpoint],
      listen: "127.0.0.1:0",
      kube: KubeClient.fromOptions({ kubeconfig: api.kubeconfig }, { log: silentLogger() }),
      log: silentLogger(),
      leaderTtlSeconds: 5,
    });
    await until("leadership and the Node list", () => controller!.isLeader() && controller!.ready(), 30_000);
    for (let c = 0; c < CHANNELS; c++) clients.push(new ControllerClient(`127.0.0.1:${controller.port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }));
    // The agents join before any network exists (with a VTEP MAC ready for each, as a real
    // agent reports one once it made the device); each sample's network then reaches all of them.
    const nets = Array.from({ length: samples }, (_, s) => `net-${s}`);
    for (let i = 0; i < n; i++) agents.push(new SimAgent("", simJoinRequest(names[i], i + 1, nets), { client: clients[i % CHANNELS] }));
    for (let i = 0; i < n; i += 64) await Promise.all(agents.slice(i, i + 64).map((a) => a.connect(120_000)));

    const toAgents: number[] = [];
    const toReady: number[] = [];
    const nodeGone: number[] = [];
    for (let s = 0; s < samples; s++) {
      const net = `net-${s}`;
      const t0 = performance.now();
      await api.kubectl(["create", "-f", "-"], {
        input: JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: net }, spec: { cidr: `10.${100 + s}.0.0/16`, vni: 1000 + s, nodePrefixLength: 26 } }),
      });
      await until(`${net} at every agent with every peer`, () => agents.every((a) => a.subnet(net) !== undefined && a.peers(net).length === n - 1));
      toAgents.push(performance.now() - t0);
      await until(`${net} Ready with ${n} nodes`, () => {
        const st = networks.get(net)?.status;
        return st?.allocated === n && st.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
      });
      toReady.push(performance.now() - t0);
    }
    // From steady state: every agent knows every other before a Node goes.
    await until("net-0 peers complete", () => agents.every((a) => a.peers("net-0").length === n - 1));
    for (let s = 0; s < samples; s++) {
      const victim = agents[s];
      const name = names[s];
      const rest = agents.filter((a) => a !== victim && !a.ended);
      if (!rest.every((a) => a.peers("net-0").includes(name))) throw new Error(`${name} is not a peer of every agent before its Node is deleted`);
      const t0 = performance.now();
      await api.kubectl(["delete", "node", name, "--wait=false"]);
      await until(`${name} gone from every peer`, () => rest.every((a) => !a.peers("net-0").includes(name)));
      nodeGone.push(performance.now() - t0);
    }
    const p = (xs: number[], q: number) => percentile([...xs].sort((a, b) => a - b), q);
    return [n, samples, p(toAgents, 50), Math.max(...toAgents), p(toReady, 50), Math.max(...toReady), p(nodeGone, 50), Math.max(...nodeGone)];
  } finally {
    await informer.stop();
    agents.forEach((a) => a.close());
    clients.forEach((c) => c.close());
    await controller?.stop();
    await etcd.stop();
    await api.kubectl(["delete", "onet", "--all", "--wait=false"], { reject: false });
    await api.kubectl(["delete", "nodes", "--all", "--wait=false"], { reject: false });
  }
}

export async function run(): Promise<void> {
  const api = await KubeApiServer.start();
  try {
    await api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
    await api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
    const rows = [];
    for (const n of [100, 500]) rows.push(await scenario(api, n, 5));
    publish({
      id: "kube-convergence",
      title: "Kubernetes mode: from kubectl to every agent (ms, wall clock incl. the kubectl process)",
      columns: ["N agents", "samples", "onet -> all agents have all peers p50", "max", "onet -> Ready(allocated=N) p50", "max", "Node delete -> peers dropped p50", "max"],
      rows,
      notes: [
        `node ${process.version}, kube-apiserver built by hack/build-kube-apiserver.sh with its own etcd, Weft's etcd, controller and N simulated agents in one process on this 2-core machine`,
        "each sample times from starting `kubectl create`/`kubectl delete` (about 100-200 ms of that is kubectl itself) to the last agent seeing the change",
      ],
    });
  } finally {
    await api.stop();
  }
}
