// `make lab` / `make lab-down`: a whole Weft cluster in network namespaces on
// this machine (see pkg/lab/cluster.ts), checked end to end, left running.
import fs from "node:fs";
import path from "node:path";
import { Command, envOption, parsePositiveInt, runMain } from "../pkg/cli/index.js";
import { Cluster, OUTSIDE_IP, removeNamespaces, AGENT_METRICS_PORT, type Host, type Pod } from "../pkg/lab/cluster.js";
import { killRecorded } from "../pkg/lab/process.js";
import { waitFor } from "../pkg/lab/ports.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const RUN_DIR = path.join(ROOT, ".lab");
const PREFIX = "weft-lab";

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const green = (s: string) => (process.stdout.isTTY ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s: string) => (process.stdout.isTTY ? `\x1b[31m${s}\x1b[0m` : s);

let stepStart = Date.now();
const t0 = Date.now();
function step(msg: string): void {
  stepStart = Date.now();
  process.stdout.write(`${bold("==>")} ${msg}\n`);
}
function done(detail = ""): void {
  process.stdout.write(`    ok (${((Date.now() - stepStart) / 1000).toFixed(1)}s)${detail ? ` ${detail}` : ""}\n`);
}

function table(headers: string[], rows: string[][]): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => c.padEnd(w[i])).join("   ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

async function down(): Promise<void> {
  const killed = await killRecorded(RUN_DIR);
  const removed = await removeNamespaces(PREFIX);
  fs.rmSync(RUN_DIR, { recursive: true, force: true });
  process.stdout.write(`lab removed: ${removed} namespaces, ${killed} processes, ${RUN_DIR}\n`);
}

async function up(o: { nodes: number; pods: number; cidr: string; vni: number }): Promise<void> {
  if (o.nodes < 1 || o.nodes > 50) throw new Error("--nodes: 1 to 50");
  if (o.pods < 1 || o.pods > 20) throw new Error("--pods: 1 to 20");
  let cluster: Cluster | undefined;
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    process.stdout.write("\ninterrupted: removing everything the lab created\n");
    await cluster?.teardown().catch(() => undefined);
    await down().catch(() => undefined);
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  step(`underlay switch, outside world and control host (namespaces ${PREFIX}-*)`);
  cluster = await Cluster.create({ prefix: PREFIX, runDir: RUN_DIR, repoRoot: ROOT, progress: (m) => process.stdout.write(`    ${m}\n`) });
  done();

  step("etcd on the control host");
  cluster.startEtcd();
  await cluster.waitEtcd();
  done(cluster.etcdEndpoint);

  step(`network "lab": ${o.cidr}, VNI ${o.vni}, a /24 per host`);
  const spec = `name: lab\ncidr: ${o.cidr}\nvni: ${o.vni}\nnodePrefixLength: 24\ndefault: true\n`;
  const res = await cluster.execIn(cluster.controlNs, ["node", cluster.bin("weftctl"), "--etcd-endpoints", cluster.etcdEndpoint, "network", "apply", "-f", "-"], spec);
  if (!res.ok) throw new Error(`weftctl network apply: ${res.stderr.trim()}`);
  done();

  step("weft-controller on the control host");
  cluster.startController(0);
  await cluster.waitController(0);
  done(cluster.controllerAddress(0));

  step(`${o.nodes} hosts, each with a weft-agent`);
  const hosts: Host[] = [];
  for (let i = 0; i < o.nodes; i++) hosts.push(await cluster.addHost());
  for (const h of hosts) cluster.startAgent(h);
  await Promise.all(hosts.map((h) => cluster!.waitAgent(h, 60_000)));
  done(hosts.map((h) => h.name).join(", "));

  step(`${o.pods} pods per host, attached by the CNI plugins in /usr/lib/cni and Weft's weft plugin through each agent's 10-weft.conflist`);
  const pods: Pod[] = [];
  for (const h of hosts) for (let i = 0; i < o.pods; i++) pods.push(await cluster.addPod(h));
  done(`${pods.length} pods`);

  step("what each host holds");
  const leases = JSON.parse(await cluster.weftctl("lease", "list", "-o", "json")) as { node: string; subnet: string; vtepMac: string }[];
  const rows: string[][] = [];
  for (const h of hosts) {
    const lease = leases.find((l) => l.node === h.name);
    rows.push([h.name, h.ip, lease?.subnet ?? "-", lease?.vtepMac ?? "-", (await cluster.agentReady(h)) ? "yes" : "NO"]);
  }
  process.stdout.write("\n" + table(["HOST", "UNDERLAY IP", "SUBNET", "VTEP MAC", "AGENT READY"], rows) + "\n");
  // What the weft plugin registered (weftctl endpoint list): each pod's endpoint as etcd holds it.
  // The plugin's report reaches etcd through the agent and the controller a moment after ADD returns: wait a little for the last ones.
  let endpoints: { name: string; node: string; ips: string[]; mac: string }[] = [];
  const find = (p: Pod) => endpoints.find((e) => e.name === p.name && e.node === p.host.name && e.ips.includes(p.ip));
  await waitFor("every pod's endpoint", async () => {
    endpoints = JSON.parse(await cluster!.weftctl("endpoint", "list", "-o", "json"));
    return pods.every((p) => find(p));
  }, 10_000, 200).catch(() => undefined);
  const registered = (p: Pod) => find(p)?.mac ?? red("NO");
  process.stdout.write(table(["POD", "HOST", "IP", "ENDPOINT MAC (weftctl endpoint list)"], pods.map((p) => [p.name, p.host.name, p.ip, registered(p)])) + "\n");

  step(`pod-to-pod connectivity (${pods.length}×${pods.length}, 2 pings each)`);
  const results = new Map<string, string>();
  let failures = 0;
  const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
  for (let i = 0; i < pairs.length; i += 8) {
    await Promise.all(pairs.slice(i, i + 8).map(async ([a, b]) => {
      const r = await cluster!.ping(a.netns, b.ip, 2, 0.2, 1);
      if (r.received === 0) failures++;
      results.set(`${a.name}>${b.name}`, r.received > 0 ? `${(r.avgRttMs ?? 0).toFixed(2)}ms` : red("FAIL"));
    }));
  }
  const short = (p: Pod) => p.name.slice(PREFIX.length + 1);
  const matrix = pods.map((a) => [short(a), ...pods.map((b) => (a === b ? "-" : results.get(`${a.name}>${b.name}`)!))]);
  process.stdout.write("\n" + table(["from \\ to", ...pods.map(short)], matrix) + "\n");
  done(failures === 0 ? green(`all ${pairs.length} pairs reach each other`) : red(`${failures} of ${pairs.length} pairs FAILED`));

  step(`outbound NAT: a pod on ${hosts[0].name} connects to ${OUTSIDE_IP} (the outside world)`);
  const seen = await cluster.sourceSeenOutside(pods[0].netns);
  const natOk = seen === hosts[0].ip;
  process.stdout.write(`    the outside world saw the connection come from ${seen || "(nothing)"}; ${natOk ? green(`masqueraded to ${hosts[0].name}'s underlay IP`) : red(`expected ${hosts[0].ip}`)}\n`);

  const h1 = hosts[0];
  const p1 = pods[0];
  const remote = pods.find((p) => p.host !== h1) ?? pods[pods.length - 1];
  const explore: [string, string][] = [
    [`ip netns exec ${h1.netns} ip -d link show weft.${o.vni}`, "the VXLAN device"],
    [`ip netns exec ${h1.netns} bridge fdb show dev weft.${o.vni}`, "one static entry per peer"],
    [`ip netns exec ${h1.netns} ip neigh show dev weft.${o.vni}`, "one permanent neighbour per peer"],
    [`ip netns exec ${h1.netns} ip route`, "one onlink route per peer subnet"],
    [`ip netns exec ${h1.netns} iptables -t nat -S WEFT-POSTRTG`, "outbound NAT"],
    [`ip netns exec ${p1.netns} ping ${remote.ip}`, "pod to pod across hosts"],
    [`ip netns exec ${cluster.switchNs} tcpdump -ni h1 udp port 4789`, "the VXLAN traffic on the underlay"],
    [`ip netns exec ${cluster.controlNs} node dist/cmd/weftctl/main.js --etcd-endpoints ${cluster.etcdEndpoint} lease list`, "subnets leased"],
    [`ip netns exec ${h1.netns} curl -s localhost:${AGENT_METRICS_PORT}/metrics | grep ^weft_agent`, "agent metrics"],
    [`ip netns exec ${cluster.controlNs} curl -s ${cluster.controllerAddress(0).replace(/:\d+$/, ":9401")}/metrics | grep ^weft_controller`, "controller metrics"],
  ];
  const width = Math.min(72, Math.max(...explore.map(([cmd]) => cmd.length)));
  process.stdout.write(`\n${bold("Explore")} (as root; the lab stays up until ${bold("make lab-down")}):\n`);
  for (const [cmd, what] of explore) process.stdout.write(`  ${cmd.padEnd(width)}   # ${what}\n`);
  process.stdout.write(`  logs: ${RUN_DIR}/logs/\n`);
  const ok = failures === 0 && natOk;
  process.stdout.write(`\n${ok ? green("lab is up and every check passed") : red("lab is up but checks FAILED")} in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (!ok) process.exitCode = 1;
}

const program = new Command("lab").description("A whole Weft cluster in network namespaces on this machine (run as root).");
program
  .command("up")
  .description("create (or replace) the lab, check pod-to-pod connectivity and NAT, leave it running")
  .addOption(envOption("--nodes <n>", "number of hosts", 3).argParser(parsePositiveInt))
  .addOption(envOption("--pods <n>", "pods per host", 2).argParser(parsePositiveInt))
  .addOption(envOption("--cidr <cidr>", "the network's CIDR", "10.244.0.0/16"))
  .addOption(envOption("--vni <vni>", "the network's VNI", 42).argParser(parsePositiveInt))
  .action(async (o) => {
    try {
      await up(o);
    } catch (err) {
      // A lab that failed half-way is removed; its logs stay for the post-mortem.
      await removeNamespaces(PREFIX).catch(() => undefined);
      await killRecorded(RUN_DIR).catch(() => undefined);
      throw new Error(`${(err as Error).message}\n(the lab was removed; logs are in ${path.join(RUN_DIR, "logs")})`);
    }
  });
program.command("down").description("remove every namespace, process and file the lab created").action(down);

await runMain(async () => {
  await program.parseAsync();
});
