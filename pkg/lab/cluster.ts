// A whole Weft cluster in network namespaces on one machine: an underlay
// switch, a control host (etcd + controllers), N hosts with agents, pods
// attached by the real CNI plugins, and an "outside world". `make lab` and the
// e2e tests build their topology with this same code. Nothing is created
// outside namespaces named `<prefix>-…`.
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { cniAdd, cniDel, CONFLIST_NAME, DEFAULT_CNI_BIN_DIR, type CniDns, type PortMapping } from "../cni/index.js";
import { LabProcess, killRecorded } from "./process.js";
import { waitFor } from "./ports.js";

export const UNDERLAY_PREFIX = "192.168.77";
export const OUTSIDE_GATEWAY = `${UNDERLAY_PREFIX}.1`;
export const CONTROL_IP = `${UNDERLAY_PREFIX}.2`;
/** Stands for an address on the internet; lives on the outside namespace's loopback. */
export const OUTSIDE_IP = "203.0.113.10";
export const ETCD_PORT = 2379;
export const CONTROLLER_PORT = 9400;
export const AGENT_METRICS_PORT = 9402;

export interface ClusterOptions {
  /** Namespace name prefix: "weft-lab", or "weft-e2e-<random>" for tests. */
  prefix: string;
  /** Logs, PID files, state and CNI dirs. */
  runDir: string;
  /** Repository root: binaries are run from dist/. */
  repoRoot: string;
  /** Progress messages. */
  progress?: (msg: string) => void;
}

export interface Host {
  name: string;
  netns: string;
  ip: string;
  index: number;
  stateDir: string;
  cniConfDir: string;
  agent?: LabProcess;
  agentArgs: string[];
}

export interface Pod {
  name: string;
  netns: string;
  host: Host;
  ip: string;
  /** The CNI conflist it was attached with. */
  conflist: string;
  /** Every interface, in attachment order (addPodWith); eth0's is `ip`/`conflist`. */
  attachments?: PodAttachment[];
  /** Published ports of eth0: a runtime passes the same runtime config to DEL, or portmap leaves its rules. */
  portMappings?: PortMapping[];
}

export interface PodAttachment {
  network: string;
  ifName: string;
  ip: string;
  conflist: string;
  /** The CNI result's `dns` (networks with dns on). */
  dns?: CniDns;
}

export interface PodOptions {
  /** Weft networks by name, attached in order as eth0, eth1, …; default: the host's default network. */
  networks?: string[];
  /** The endpoint's name (the weft plugin's args.weft.name); default: the pod's name without the cluster prefix. */
  dnsName?: string;
  aliases?: string[];
  /** Published ports, on the first interface (`-p 8080:80`). */
  portMappings?: PortMapping[];
  suffix?: string;
}

/** The runtime config for interface `ifName`: published ports live on eth0, and DEL gets the same as ADD. */
function publishedOn(ifName: string, portMappings: PortMapping[] | undefined): { portMappings?: PortMapping[] } {
  return ifName === "eth0" && portMappings ? { portMappings } : {};
}

/** Where `ip netns exec NAME` finds the namespace's own resolv.conf (bind-mounted over /etc/resolv.conf). */
export const NETNS_ETC = "/etc/netns";

/** resolv.conf text for a CNI result's `dns`. */
export function resolvConfText(dns: CniDns): string {
  return [...dns.nameservers.map((n) => `nameserver ${n}`), ...(dns.search.length ? [`search ${dns.search.join(" ")}`] : []), "options ndots:1", ""].join("\n");
}

export interface PingResult {
  sent: number;
  received: number;
  loss: number;
  avgRttMs?: number;
}

async function sh(cmd: string, args: string[], opts: { input?: string; reject?: boolean } = {}) {
  return execa(cmd, args, { reject: opts.reject ?? true, input: opts.input });
}

async function ipIn(netns: string, ...args: string[]): Promise<void> {
  await sh("ip", ["-n", netns, ...args]);
}

export async function listNamespaces(prefix: string): Promise<string[]> {
  const { stdout } = await sh("ip", ["netns", "list"]);
  return stdout
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n === prefix || n.startsWith(`${prefix}-`));
}

/** Kills every process inside the namespaces and deletes them. Idempotent. */
export async function removeNamespaces(prefix: string): Promise<number> {
  const names = await listNamespaces(prefix);
  for (const ns of names) {
    const { stdout } = await sh("ip", ["netns", "pids", ns], { reject: false });
    for (const pid of stdout.split("\n").filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        /* gone */
      }
    }
  }
  for (const ns of names) await sh("ip", ["netns", "del", ns], { reject: false });
  // Pods' resolv.conf files (written from their CNI results): only ours, by prefix.
  for (const d of fs.existsSync(NETNS_ETC) ? fs.readdirSync(NETNS_ETC) : []) {
    if (d === prefix || d.startsWith(`${prefix}-`)) fs.rmSync(path.join(NETNS_ETC, d), { recursive: true, force: true });
  }
  return names.length;
}

/**
 * A CNI bin dir as a runtime's CNI_PATH: the system's plugins linked in, plus
 * `weft` (the plugin every Weft conflist chains) as a wrapper running
 * `node <weftArgv>`, so it comes from this checkout.
 */
export function makeCniBinDir(dir: string, weftArgv: string[], system = DEFAULT_CNI_BIN_DIR): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const name of fs.readdirSync(system)) {
    const link = path.join(dir, name);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join(system, name), link);
  }
  const argv = weftArgv.map((a) => `'${a}'`).join(" ");
  fs.writeFileSync(path.join(dir, "weft"), `#!/bin/sh\nexec '${process.execPath}' ${argv} "$@"\n`, { mode: 0o755 });
  return dir;
}

export class Cluster {
  readonly switchNs: string;
  readonly controlNs: string;
  readonly outsideNs: string;
  readonly hosts: Host[] = [];
  readonly pods: Pod[] = [];
  etcd?: LabProcess;
  readonly controllers: LabProcess[] = [];
  private nextHost = 1;
  /** CNI_PATH for the pods: the system's plugins and Weft's `weft` (makeCniBinDir). */
  readonly cniBinDir: string;

  private constructor(readonly opts: ClusterOptions) {
    this.switchNs = `${opts.prefix}-sw`;
    this.controlNs = `${opts.prefix}-ctl`;
    this.outsideNs = `${opts.prefix}-out`;
    this.cniBinDir = path.join(opts.runDir, "cni-bin");
  }

  /** Logs, PID files, state and CNI dirs of this cluster. */
  get runDir(): string {
    return this.opts.runDir;
  }

  get etcdEndpoint(): string {
    return `http://${CONTROL_IP}:${ETCD_PORT}`;
  }

  controllerAddress(i = 0): string {
    return `${CONTROL_IP}:${CONTROLLER_PORT + 10 * i}`;
  }

  private say(msg: string): void {
    this.opts.progress?.(msg);
  }

  bin(name: "weft-controller" | "weft-agent" | "weftctl" | "weft-cni"): string {
    return path.join(this.opts.repoRoot, "dist", "cmd", name, "main.js");
  }

  /** Builds the switch, the outside world and the control host; removes a stale topology of the same prefix first. */
  static async create(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    const stale = await removeNamespaces(opts.prefix);
    if (stale > 0) c.say(`removed ${stale} namespaces left from an earlier run`);
    await killRecorded(opts.runDir);
    // State of an earlier run (host-local allocations, agent state) would not match the new cluster.
    fs.rmSync(opts.runDir, { recursive: true, force: true });
    fs.mkdirSync(opts.runDir, { recursive: true });
    for (const b of ["weft-controller", "weft-agent", "weftctl", "weft-cni"] as const) {
      if (!fs.existsSync(c.bin(b))) throw new Error(`${c.bin(b)} is missing: run make build`);
    }
    makeCniBinDir(c.cniBinDir, [c.bin("weft-cni")]);
    await sh("ip", ["netns", "add", c.switchNs]);
    await ipIn(c.switchNs, "link", "add", "br0", "type", "bridge");
    await ipIn(c.switchNs, "link", "set", "br0", "up");
    await ipIn(c.switchNs, "link", "set", "lo", "up");
    await c.attach(c.outsideNs, "out", OUTSIDE_GATEWAY);
    await ipIn(c.outsideNs, "addr", "add", `${OUTSIDE_IP}/32`, "dev", "lo");
    await c.attach(c.controlNs, "ctl", CONTROL_IP);
    c.say(`underlay switch ${c.switchNs}, outside world ${c.outsideNs} (${OUTSIDE_IP}), control host ${c.controlNs} (${CONTROL_IP})`);
    return c;
  }

  /** A namespace with `eth0` on the switch, an underlay address and a default route via the outside world. */
  private async attach(netns: string, port: string, ip: string): Promise<void> {
    await sh("ip", ["netns", "add", netns]);
    // Both veth ends are created inside namespaces: the root namespace is never touched.
    await ipIn(this.switchNs, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns);
    await ipIn(this.switchNs, "link", "set", port, "master", "br0", "up");
    await ipIn(netns, "link", "set", "lo", "up");
    await ipIn(netns, "addr", "add", `${ip}/24`, "dev", "eth0");
    await ipIn(netns, "link", "set", "eth0", "up");
    if (ip !== OUTSIDE_GATEWAY) await ipIn(netns, "route", "add", "default", "via", OUTSIDE_GATEWAY);
  }

  startEtcd(): LabProcess {
    const dataDir = path.join(this.opts.runDir, "etcd");
    const url = this.etcdEndpoint;
    this.etcd = new LabProcess("etcd", this.controlNs, [
      "etcd", "--name", "weft-lab", "--data-dir", dataDir,
      "--listen-client-urls", `${url},http://127.0.0.1:${ETCD_PORT}`, "--advertise-client-urls", url,
      "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
      "--initial-cluster", "weft-lab=http://127.0.0.1:2380", "--log-level", "warn", "--logger", "zap",
    ], this.opts.runDir);
    this.etcd.start();
    return this.etcd;
  }

  async waitEtcd(timeoutMs = 30_000): Promise<void> {
    await waitFor("etcd to answer", async () => {
      if (this.etcd && !this.etcd.running) throw new Error(`etcd exited:\n${this.etcd.tail()}`);
      return (await this.execIn(this.controlNs, ["etcdctl", "--endpoints", this.etcdEndpoint, "--dial-timeout=1s", "endpoint", "health"])).ok;
    }, timeoutMs, 100);
  }

  /** Starts controller `i` (0, 1, …) in the control host. */
  startController(i = 0, extra: string[] = []): LabProcess {
    const p = new LabProcess(`controller-${i}`, this.controlNs, [
      "node", this.bin("weft-controller"), "--etcd-endpoints", this.etcdEndpoint,
      "--listen", this.controllerAddress(i), "--metrics-addr", `${CONTROL_IP}:${CONTROLLER_PORT + 10 * i + 1}`, ...extra,
    ], this.opts.runDir);
    p.start();
    this.controllers[i] = p;
    return p;
  }

  async waitController(i = 0, timeoutMs = 30_000): Promise<void> {
    const p = this.controllers[i];
    await waitFor(`controller ${i} to be ready`, async () => {
      if (!p.running) throw new Error(`controller ${i} exited:\n${p.tail()}`);
      return this.httpOk(this.controlNs, `http://${CONTROL_IP}:${CONTROLLER_PORT + 10 * i + 1}/readyz`);
    }, timeoutMs, 100);
  }

  /** weftctl against the cluster's etcd, run from the control host. */
  async weftctl(...args: string[]): Promise<string> {
    const res = await this.execIn(this.controlNs, ["node", this.bin("weftctl"), "--etcd-endpoints", this.etcdEndpoint, ...args]);
    if (!res.ok) throw new Error(`weftctl ${args.join(" ")}: ${res.stderr.trim()}`);
    return res.stdout;
  }

  /** Creates host namespace `<prefix>-h<N>` on the underlay. */
  async addHost(): Promise<Host> {
    const index = this.nextHost++;
    const name = `${this.opts.prefix}-h${index}`;
    const host: Host = {
      name,
      netns: name,
      ip: `${UNDERLAY_PREFIX}.${10 + index}`,
      index,
      stateDir: path.join(this.opts.runDir, `h${index}`, "state"),
      cniConfDir: path.join(this.opts.runDir, `h${index}`, "cni"),
      agentArgs: [],
    };
    await this.attach(host.netns, `h${index}`, host.ip);
    this.hosts.push(host);
    return host;
  }

  /** Starts the host's agent; `controllers` defaults to controller 0. `nodeNameFromEnv`: WEFT_NODE_NAME, as a DaemonSet's downward API sets it, instead of --node-name. */
  startAgent(host: Host, extra: string[] = [], controllers = [this.controllerAddress(0)], opts: { nodeNameFromEnv?: boolean } = {}): LabProcess {
    host.agentArgs = extra;
    const nodeName = opts.nodeNameFromEnv ? [] : ["--node-name", host.name];
    host.agent = new LabProcess(`agent-h${host.index}`, host.netns, [
      "node", this.bin("weft-agent"), ...nodeName, "--controller", controllers.join(","),
      "--uplink", "eth0", "--metrics-addr", `0.0.0.0:${AGENT_METRICS_PORT}`,
      "--cni-conf-dir", host.cniConfDir, "--state-dir", host.stateDir, ...extra,
    ], this.opts.runDir, opts.nodeNameFromEnv ? { WEFT_NODE_NAME: host.name } : {});
    host.agent.start();
    return host.agent;
  }

  agentReady(host: Host): Promise<boolean> {
    return this.httpOk(host.netns, `http://127.0.0.1:${AGENT_METRICS_PORT}/readyz`);
  }

  async waitAgent(host: Host, timeoutMs = 30_000): Promise<void> {
    await waitFor(`agent of ${host.name} to be ready`, async () => {
      if (host.agent && !host.agent.running) throw new Error(`agent of ${host.name} exited:\n${host.agent.tail()}`);
      return (await this.agentReady(host)) && fs.existsSync(path.join(host.cniConfDir, CONFLIST_NAME));
    }, timeoutMs, 100);
  }

  /** Metrics text of the host's agent. */
  async agentMetrics(host: Host): Promise<string> {
    const res = await this.execIn(host.netns, ["curl", "-s", "--max-time", "2", `http://127.0.0.1:${AGENT_METRICS_PORT}/metrics`]);
    return res.stdout;
  }

  /** Attaches pod namespace `<host>-p<N>` through the real CNI plugins and the given (default: the agent's) conflist. */
  async addPod(host: Host, conflist = path.join(host.cniConfDir, CONFLIST_NAME), suffix?: string): Promise<Pod> {
    const n = this.pods.filter((p) => p.host === host).length + 1;
    const name = `${host.name}-p${suffix ?? n}`;
    await sh("ip", ["netns", "add", name]);
    const res = await cniAdd({ conflistPath: conflist, netnsPath: `/var/run/netns/${name}`, containerId: name, ifName: "eth0", hostNetns: host.netns, binDir: this.cniBinDir, args: { weft: { name } } });
    const pod: Pod = { name, netns: name, host, ip: res.ip, conflist };
    this.pods.push(pod);
    return pod;
  }

  /** The conflist the host's agent wrote for `network` (10-weft.conflist for its default, weft-<network>.conflist otherwise). */
  conflistFor(host: Host, network: string): string {
    for (const f of fs.existsSync(host.cniConfDir) ? fs.readdirSync(host.cniConfDir).filter((x) => x.endsWith(".conflist")).sort() : []) {
      const file = path.join(host.cniConfDir, f);
      try {
        if ((JSON.parse(fs.readFileSync(file, "utf8")) as { name?: string }).name === `weft-${network}`) return file;
      } catch {
        /* being rewritten; the other files may still match */
      }
    }
    throw new Error(`${host.name} has no conflist for network ${network} (is the host a member, and its agent ready?)`);
  }

  /**
   * A pod on `host` attached to each of `opts.networks` by name (eth0, eth1, …),
   * named for DNS, optionally publishing ports. The first CNI result carrying
   * `dns` becomes the pod's /etc/netns/<pod>/resolv.conf, as a runtime writes
   * it from the result, so `ip netns exec <pod> dig name` uses the network's resolver.
   */
  async addPodWith(host: Host, opts: PodOptions = {}): Promise<Pod> {
    const n = this.pods.filter((p) => p.host === host).length + 1;
    const name = `${host.name}-p${opts.suffix ?? n}`;
    const networks = opts.networks?.length ? opts.networks : undefined;
    const conflists = networks ? networks.map((net) => ({ network: net, file: this.conflistFor(host, net) })) : [{ network: "", file: path.join(host.cniConfDir, CONFLIST_NAME) }];
    const args = { weft: { name: opts.dnsName ?? name.slice(this.opts.prefix.length + 1), aliases: opts.aliases ?? [] } };
    await sh("ip", ["netns", "add", name]);
    const attachments: PodAttachment[] = [];
    try {
      for (const [i, c] of conflists.entries()) {
        const ifName = `eth${i}`;
        const res = await cniAdd({ conflistPath: c.file, netnsPath: `/var/run/netns/${name}`, containerId: name, ifName, hostNetns: host.netns, binDir: this.cniBinDir, args, ...publishedOn(ifName, opts.portMappings) });
        const network = c.network || String((JSON.parse(fs.readFileSync(c.file, "utf8")) as { name: string }).name).replace(/^weft-/, "");
        // bridge passes an empty `dns: {}` on; only a resolver with nameservers counts.
        const dns = res.raw.dns as Partial<CniDns> | undefined;
        attachments.push({ network, ifName, ip: res.ip, conflist: c.file, ...(dns?.nameservers?.length ? { dns: { nameservers: dns.nameservers, search: dns.search ?? [] } } : {}) });
      }
    } catch (err) {
      for (const a of attachments.reverse()) await cniDel({ conflistPath: a.conflist, netnsPath: `/var/run/netns/${name}`, containerId: name, ifName: a.ifName, hostNetns: host.netns, binDir: this.cniBinDir, args, ...publishedOn(a.ifName, opts.portMappings) }).catch(() => undefined);
      await sh("ip", ["netns", "del", name], { reject: false });
      throw err;
    }
    const dns = attachments.find((a) => a.dns)?.dns;
    if (dns) {
      fs.mkdirSync(path.join(NETNS_ETC, name), { recursive: true });
      fs.writeFileSync(path.join(NETNS_ETC, name, "resolv.conf"), resolvConfText(dns));
    }
    const pod: Pod = { name, netns: name, host, ip: attachments[0].ip, conflist: attachments[0].conflist, attachments, ...(opts.portMappings ? { portMappings: opts.portMappings } : {}) };
    this.pods.push(pod);
    return pod;
  }

  async removePod(pod: Pod): Promise<void> {
    for (const a of [...(pod.attachments ?? [{ conflist: pod.conflist, ifName: "eth0" }])].reverse()) {
      await cniDel({ conflistPath: a.conflist, netnsPath: `/var/run/netns/${pod.netns}`, containerId: pod.name, ifName: a.ifName, hostNetns: pod.host.netns, binDir: this.cniBinDir, ...publishedOn(a.ifName, pod.portMappings) }).catch(() => undefined);
    }
    fs.rmSync(path.join(NETNS_ETC, pod.netns), { recursive: true, force: true });
    await sh("ip", ["netns", "del", pod.netns], { reject: false });
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  /** ping from a namespace: `count` packets `intervalS` apart. */
  async ping(netns: string, target: string, count = 3, intervalS = 0.2, timeoutS = 1): Promise<PingResult> {
    const res = await this.execIn(netns, ["ping", "-n", "-q", "-c", String(count), "-i", String(intervalS), "-W", String(timeoutS), target]);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(res.stdout);
    const rtt = /= [\d.]+\/([\d.]+)\//.exec(res.stdout);
    const sent = m ? Number(m[1]) : count;
    const received = m ? Number(m[2]) : 0;
    return { sent, received, loss: sent - received, avgRttMs: rtt ? Number(rtt[1]) : undefined };
  }

  /** Starts a ping that runs until stopped; the result counts every packet. */
  startPing(netns: string, target: string, intervalS = 0.05): { stop: () => Promise<PingResult> } {
    const child = execa("ip", ["netns", "exec", netns, "ping", "-n", "-i", String(intervalS), "-W", "1", target], { reject: false });
    return {
      stop: async () => {
        child.kill("SIGINT");
        const res = await child;
        const m = /(\d+) packets transmitted, (\d+) received/.exec(String(res.stdout));
        const sent = m ? Number(m[1]) : 0;
        const received = m ? Number(m[2]) : 0;
        return { sent, received, loss: sent - received };
      },
    };
  }

  /** The source address the outside world sees for a TCP connection from `netns`. */
  sourceSeenOutside(netns: string, port = 8080): Promise<string> {
    return this.sourceSeenBy(this.outsideNs, OUTSIDE_IP, netns, port);
  }

  /** The source address a TCP server at `serverIp` in `serverNs` sees for a connection from `clientNs`. */
  async sourceSeenBy(serverNs: string, serverIp: string, clientNs: string, port = 8080): Promise<string> {
    const server = execa("ip", ["netns", "exec", serverNs, "node", "-e",
      `const s=require("net").createServer(c=>{console.log(c.remoteAddress);c.end();s.close()});s.listen(${port},"${serverIp}",()=>console.log("listening"));setTimeout(()=>process.exit(2),10000).unref()`], { reject: false, buffer: true });
    await new Promise<void>((resolve, reject) => {
      server.stdout?.on("data", (d: Buffer) => d.toString().includes("listening") && resolve());
      server.catch(reject);
    });
    await this.execIn(clientNs, ["bash", "-c", `exec 3<>/dev/tcp/${serverIp}/${port}; cat <&3 >/dev/null`]);
    const res = await server;
    return String(res.stdout).split("\n").filter((l) => l && l !== "listening")[0] ?? "";
  }

  /** Runs a command in a namespace; never throws. */
  async execIn(netns: string, argv: string[], input?: string): Promise<{ ok: boolean; stdout: string; stderr: string }> {
    const res = await execa("ip", ["netns", "exec", netns, ...argv], { reject: false, input, timeout: 30_000 });
    return { ok: res.exitCode === 0, stdout: String(res.stdout), stderr: String(res.stderr) };
  }

  async httpOk(netns: string, url: string): Promise<boolean> {
    return (await this.execIn(netns, ["curl", "-sf", "--max-time", "1", "-o", "/dev/null", url])).ok;
  }

  /** Removes a host: stops its agent, deletes its pods and namespace. */
  async removeHost(host: Host): Promise<void> {
    await host.agent?.stop();
    for (const p of this.pods.filter((x) => x.host === host)) await this.removePod(p);
    await sh("ip", ["netns", "del", host.netns], { reject: false });
    this.hosts.splice(this.hosts.indexOf(host), 1);
  }

  /** Stops every process this cluster started and deletes every namespace and file. Idempotent. */
  async teardown(opts: { keepLogs?: boolean } = {}): Promise<void> {
    const procs = [...this.hosts.map((h) => h.agent), ...this.controllers, this.etcd].filter((p): p is LabProcess => !!p);
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 3000).catch(() => undefined)));
    await killRecorded(this.opts.runDir);
    await removeNamespaces(this.opts.prefix);
    if (!opts.keepLogs) fs.rmSync(this.opts.runDir, { recursive: true, force: true });
    else for (const e of fs.readdirSync(this.opts.runDir)) if (e !== "logs") fs.rmSync(path.join(this.opts.runDir, e), { recursive: true, force: true });
  }
}
