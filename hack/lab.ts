// `make lab` / `make lab-down`: a whole Weft cluster in network namespaces on
// this machine (see pkg/lab/cluster.ts), checked end to end, left running.
import fs from "node:fs";
import path from "node:path";
import { Command, envOption, parsePositiveInt, runMain } from "../pkg/cli/index.js";
import { Cluster, OUTSIDE_IP, removeNamespaces, AGENT_METRICS_PORT, type Host, type Pod } from "../pkg/lab/cluster.js";
import { killRecorded, LabProcess } from "../pkg/lab/process.js";
import { waitFor } from "../pkg/lab/ports.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const RUN_DIR = path.join(ROOT, ".lab");
const PREFIX = "weft-lab";
/** A second network, so a pod can show attaching to several by name. */
const SECOND = { name: "db", cidr: "10.245.0.0/16" };
const PUBLISHED = { hostPort: 8080, containerPort: 80, protocol: "tcp" as const };

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

  step(`networks "lab" (${o.cidr}, VNI ${o.vni}, default) and "${SECOND.name}" (${SECOND.cidr}, VNI ${o.vni + 1}), a /24 per host, DNS on both`);
  const specs = [
    `name: lab\ncidr: ${o.cidr}\nvni: ${o.vni}\nnodePrefixLength: 24\ndefault: true\ndns: true\n`,
    `name: ${SECOND.name}\ncidr: ${SECOND.cidr}\nvni: ${o.vni + 1}\nnodePrefixLength: 24\ndns: true\n`,
  ];
  for (const spec of specs) {
    const res = await cluster.execIn(cluster.controlNs, ["node", cluster.bin("weftctl"), "--etcd-endpoints", cluster.etcdEndpoint, "network", "apply", "-f", "-"], spec);
    if (!res.ok) throw new Error(`weftctl network apply: ${res.stderr.trim()}`);
  }
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

  step(`${o.pods} pods per host on "lab" (the first publishes ${PUBLISHED.hostPort}->${PUBLISHED.containerPort}), one more on "lab" and "${SECOND.name}" at once, attached by the CNI plugins in /usr/lib/cni and Weft's weft plugin through the agents' conflists`);
  await waitFor(`every host's weft-${SECOND.name}.conflist`, () => hosts.every((h) => fs.existsSync(path.join(h.cniConfDir, `weft-${SECOND.name}.conflist`))), 30_000, 100);
  const pods: Pod[] = [];
  for (const h of hosts) for (let i = 0; i < o.pods; i++) pods.push(await cluster.addPodWith(h, pods.length === 0 ? { portMappings: [PUBLISHED] } : {}));
  const both = await cluster.addPodWith(hosts[hosts.length - 1], { networks: ["lab", SECOND.name], suffix: SECOND.name, aliases: [SECOND.name] });
  const web = pods[0];
  const server = new LabProcess("web-server", web.netns, [process.execPath, "-e", `require("http").createServer((q,s)=>s.end("hello from ${web.name}\\n")).listen(${PUBLISHED.containerPort})`], RUN_DIR);
  server.start();
  done(`${pods.length + 1} pods`);

  step("what each host holds");
  const leases = (JSON.parse(await cluster.weftctl("lease", "list", "-o", "json")) as { node: string; network: string; subnet: string; vtepMac: string }[]).filter((l) => l.network === "lab");
  const rows: string[][] = [];
  for (const h of hosts) {
    const lease = leases.find((l) => l.node === h.name);
    rows.push([h.name, h.ip, lease?.subnet ?? "-", lease?.vtepMac ?? "-", (await cluster.agentReady(h)) ? "yes" : "NO"]);
  }
  process.stdout.write("\n" + table(["HOST", "UNDERLAY IP", "SUBNET", "VTEP MAC", "AGENT READY"], rows) + "\n");
  // What the weft plugin registered (weftctl endpoint list): each pod's endpoint as etcd holds it.
  // The plugin's report reaches etcd through the agent and the controller a moment after ADD returns: wait a little for the last ones.
  let endpoints: { name: string; node: string; ips: string[]; mac: string }[] = [];
  const find = (p: Pod) => endpoints.find((e) => e.node === p.host.name && e.ips.includes(p.ip));
  await waitFor("every pod's endpoint", async () => {
    endpoints = JSON.parse(await cluster!.weftctl("endpoint", "list", "-o", "json"));
    return [...pods, both].every((p) => find(p));
  }, 10_000, 200).catch(() => undefined);
  const registered = (p: Pod) => { const e = find(p); return e ? `${e.name} ${e.mac}` : red("NO"); };
  const podRows = [...pods, both].map((p) => [p.name, p.host.name, (p.attachments ?? []).map((a) => `${a.ifName} ${a.network} ${a.ip}`).join(", "), p.attachments?.find((a) => a.dns)?.dns?.nameservers.join(",") ?? "-", registered(p)]);
  process.stdout.write(table(["POD", "HOST", "INTERFACES", "RESOLVER", "ENDPOINT: NAME MAC (weftctl endpoint list)"], podRows) + "\n");

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

  const other = hosts[1] ?? hosts[0];
  step(`published port: ${web.name} serves :${PUBLISHED.containerPort}, asked at ${hosts[0].ip}:${PUBLISHED.hostPort} from ${other.name} and from the outside world`);
  const url = `http://${hosts[0].ip}:${PUBLISHED.hostPort}/`;
  const fetchFrom = async (netns: string) => (await cluster!.execIn(netns, ["curl", "-s", "--max-time", "2", url])).stdout.trim();
  await waitFor("the pod's web server", async () => (await cluster!.execIn(hosts[0].netns, ["curl", "-s", "--max-time", "1", `http://${web.ip}:${PUBLISHED.containerPort}/`])).ok, 10_000, 100).catch(() => undefined);
  const fromHost = await fetchFrom(other.netns);
  const fromOutside = await fetchFrom(cluster.outsideNs);
  const portOk = fromHost === `hello from ${web.name}` && fromOutside === fromHost;
  process.stdout.write(`    from ${other.name}: ${fromHost || red("nothing")}; from the outside world: ${fromOutside || red("nothing")}\n`);
  done(portOk ? green("published port reachable") : red("published port FAILED"));

  const asker = pods.find((p) => p.host !== web.host) ?? pods[pods.length - 1];
  const webName = web.name.slice(PREFIX.length + 1);
  step(`DNS: ${asker.name} resolves "${webName}" and "${SECOND.name}.lab.weft.internal" through the resolver in its resolv.conf (from the CNI result)`);
  const resolve = async (name: string) => (await cluster!.execIn(asker.netns, ["dig", "+short", "+tries=1", "+time=2", name])).stdout.trim().split("\n").filter((l) => /^[\d.]+$/.test(l));
  let answers: string[] = [];
  let alias: string[] = [];
  await waitFor("the names", async () => {
    answers = await resolve(webName);
    alias = await resolve(`${SECOND.name}.lab.weft.internal`);
    return answers[0] === web.ip && alias[0] === both.ip;
  }, 5000, 200).catch(() => undefined);
  const dnsOk = answers[0] === web.ip && alias[0] === both.ip;
  process.stdout.write(`    ${webName} -> ${answers.join(",") || red("no answer")} (expected ${web.ip}); ${SECOND.name}.lab.weft.internal -> ${alias.join(",") || red("no answer")} (expected ${both.ip})\n`);
  done(dnsOk ? green("names resolve across hosts") : red("DNS FAILED"));

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
    [`ip netns exec ${asker.netns} dig ${webName}`, "a pod's name, from the resolver in its resolv.conf"],
    [`ip netns exec ${both.netns} ip -br addr`, `a pod on two networks (lab, ${SECOND.name})`],
    [`ip netns exec ${cluster.outsideNs} curl ${url}`, "the published port, from the outside world"],
    [`ip netns exec ${cluster.switchNs} tcpdump -ni h1 udp port 4789`, "the VXLAN traffic on the underlay"],
    [`ip netns exec ${cluster.controlNs} node dist/cmd/weftctl/main.js --etcd-endpoints ${cluster.etcdEndpoint} lease list`, "subnets leased"],
    [`ip netns exec ${h1.netns} curl -s localhost:${AGENT_METRICS_PORT}/metrics | grep ^weft_agent`, "agent metrics"],
    [`ip netns exec ${cluster.controlNs} curl -s ${cluster.controllerAddress(0).replace(/:\d+$/, ":9401")}/metrics | grep ^weft_controller`, "controller metrics"],
  ];
  const width = Math.min(72, Math.max(...explore.map(([cmd]) => cmd.length)));
  process.stdout.write(`\n${bold("Explore")} (as root; the lab stays up until ${bold("make lab-down")}):\n`);
  for (const [cmd, what] of explore) process.stdout.write(`  ${cmd.padEnd(width)}   # ${what}\n`);
  process.stdout.write(`  logs: ${RUN_DIR}/logs/\n`);
  const ok = failures === 0 && natOk && portOk && dnsOk;
  process.stdout.write(`\n${ok ? green("lab is up and every check passed") : red("lab is up but checks FAILED")} in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (!ok) process.exitCode = 1;
}

const program = new Command("lab").description("A whole Weft cluster in network namespaces on this machine (run as root).");
program
  .command("up")
  .description("create (or replace) the lab, check pod-to-pod connectivity, NAT, a published port and DNS, leave it running")
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
