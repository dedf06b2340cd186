// Mocha helper: a Weft cluster in network namespaces (pkg/lab/cluster.ts, the
// same code as `make lab`) for one describe block, always torn down.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Cluster, type Host, type Pod } from "../../pkg/lab/cluster.js";

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

export interface ClusterSetup {
  hosts: number;
  podsPerHost: number;
  /** Network spec fields (YAML-able), merged over a default network "e2e". */
  network?: Record<string, unknown>;
  agentArgs?: string[];
  controllerArgs?: string[];
  /** Start a second controller and give agents both addresses. */
  twoControllers?: boolean;
}

export interface ClusterHandle {
  readonly cluster: Cluster;
  readonly hosts: Host[];
  readonly pods: Pod[];
}

export const E2E_NETWORK = { name: "e2e", cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24, default: true };

export function useCluster(setup: ClusterSetup): ClusterHandle {
  let cluster: Cluster | undefined;
  const hosts: Host[] = [];
  const pods: Pod[] = [];
  before(async function () {
    this.timeout(180_000);
    const id = crypto.randomBytes(3).toString("hex");
    cluster = await Cluster.create({ prefix: `weft-e2e-${id}`, runDir: fs.mkdtempSync(path.join(os.tmpdir(), `weft-e2e-${id}-`)), repoRoot: REPO_ROOT });
    try {
      cluster.startEtcd();
      await cluster.waitEtcd();
      const spec = { ...E2E_NETWORK, ...(setup.network ?? {}) };
      const yaml = Object.entries(spec).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("\n") + "\n";
      const res = await cluster.execIn(cluster.controlNs, ["node", cluster.bin("weftctl"), "--etcd-endpoints", cluster.etcdEndpoint, "network", "apply", "-f", "-"], yaml);
      if (!res.ok) throw new Error(res.stderr);
      cluster.startController(0, setup.controllerArgs ?? []);
      if (setup.twoControllers) cluster.startController(1, setup.controllerArgs ?? []);
      await cluster.waitController(0);
      if (setup.twoControllers) await cluster.waitController(1);
      const controllers = setup.twoControllers ? [cluster.controllerAddress(0), cluster.controllerAddress(1)] : [cluster.controllerAddress(0)];
      for (let i = 0; i < setup.hosts; i++) hosts.push(await cluster.addHost());
      for (const h of hosts) cluster.startAgent(h, setup.agentArgs ?? [], controllers);
      await Promise.all(hosts.map((h) => cluster!.waitAgent(h, 60_000)));
      for (const h of hosts) for (let i = 0; i < setup.podsPerHost; i++) pods.push(await cluster.addPod(h));
    } catch (err) {
      const logs = [...cluster.hosts.map((h) => h.agent), ...cluster.controllers].filter(Boolean).map((p) => `--- ${p!.name}\n${p!.tail(8)}`).join("\n");
      throw new Error(`${(err as Error).message}\n${logs}`);
    }
  });
  afterEach(function () {
    // A failed test shows what the processes said: the namespaces are gone afterwards.
    if (this.currentTest?.state !== "failed" || !cluster) return;
    for (const p of [...cluster.hosts.map((h) => h.agent), ...cluster.controllers]) {
      if (p) process.stderr.write(`--- ${p.name} (last lines of ${p.logFile})\n${p.tail(Number(process.env.WEFT_E2E_LOG_LINES ?? 6))}\n`);
    }
  });
  after(async function () {
    this.timeout(60_000);
    await cluster?.teardown({ keepLogs: !!process.env.WEFT_E2E_KEEP_LOGS });
  });
  return {
    get cluster() {
      if (!cluster) throw new Error("cluster not built yet");
      return cluster;
    },
    hosts,
    pods,
  };
}

/** A metric's value from Prometheus text (first sample matching name and label substring). */
export function metricValue(text: string, name: string, labels = ""): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{") && line.includes(labels)) return Number(line.split(" ").pop());
  }
  return undefined;
}

export async function json<T>(cluster: Cluster, netns: string, cmd: "ip" | "bridge", ...args: string[]): Promise<T[]> {
  const res = await cluster.execIn(netns, [cmd, "-json", ...args]);
  return res.stdout.trim() ? (JSON.parse(res.stdout) as T[]) : [];
}

/** A 50 pps ping from `from` to `to` while each host's agent restarts in turn (SIGTERM for the first, SIGKILL for the rest); counts every packet. */
export async function pingAcrossAgentRestarts(cluster: Cluster, from: Pod, to: Pod, hosts: Host[]): Promise<{ sent: number; received: number; loss: number }> {
  const ping = cluster.startPing(from.netns, to.ip, 0.02);
  await new Promise((r) => setTimeout(r, 300));
  for (const [i, h] of hosts.entries()) {
    await h.agent!.stop(i === 0 ? "SIGTERM" : "SIGKILL");
    h.agent!.start();
    await cluster.waitAgent(h);
  }
  await new Promise((r) => setTimeout(r, 300));
  return ping.stop();
}
