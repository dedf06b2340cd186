// One kube-lab node: a network namespace on the lab's underlay, a private
// mount and UTS namespace (persisted as bind-mounted ns files in the node's
// directory), a cgroup per hierarchy under /<prefix>/<node>, and in them the
// node's own containerd, kubelet and kube-proxy. Teardown kills every process
// in the node's cgroups (containers and shims included), then removes the
// cgroups, the namespaces and the directory, so nothing outlives it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { waitFor } from "../../pkg/lab/ports.js";
import { pidAlive } from "../../pkg/lab/process.js";

const HERE = import.meta.dirname;
const CGROUP_ROOT = "/sys/fs/cgroup";

export async function sh(cmd: string, args: string[], opts: { reject?: boolean; input?: string; timeout?: number } = {}) {
  return execa(cmd, args, { reject: opts.reject ?? true, input: opts.input, timeout: opts.timeout ?? 120_000, stdin: opts.input === undefined ? "ignore" : undefined });
}

/** The mounted cgroup hierarchies (v1 controllers, name=systemd, the unified v2 one). */
export function cgroupHierarchies(): string[] {
  return fs
    .readdirSync(CGROUP_ROOT)
    .map((d) => path.join(CGROUP_ROOT, d))
    .filter((d) => fs.existsSync(path.join(d, "cgroup.procs")));
}

/** mkdir -p of a cgroup in every hierarchy; cpuset levels inherit their parent's cpus and mems (v1 starts them empty). */
export function createCgroup(rel: string): void {
  for (const h of cgroupHierarchies()) {
    let cur = h;
    for (const part of rel.split("/").filter(Boolean)) {
      const parent = cur;
      cur = path.join(cur, part);
      if (!fs.existsSync(cur)) fs.mkdirSync(cur);
      for (const f of ["cpuset.cpus", "cpuset.mems"]) {
        const pf = path.join(parent, f);
        if (fs.existsSync(pf) && fs.readFileSync(path.join(cur, f), "utf8").trim() === "") fs.writeFileSync(path.join(cur, f), fs.readFileSync(pf, "utf8"));
      }
    }
  }
}

function cgroupTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out = [dir];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...cgroupTree(path.join(dir, e.name)));
  return out;
}

/** Kills every process in the cgroup (all hierarchies, recursively) until none is left, then removes the cgroups bottom-up. */
export async function destroyCgroup(rel: string): Promise<number> {
  let killed = 0;
  const pids = () => {
    const s = new Set<number>();
    for (const h of cgroupHierarchies())
      for (const d of cgroupTree(path.join(h, rel)))
        for (const l of fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n")) if (l.trim()) s.add(Number(l));
    return s;
  };
  const deadline = Date.now() + 20_000;
  for (let left = pids(); left.size > 0; left = pids()) {
    if (Date.now() > deadline) throw new Error(`cgroup ${rel}: processes ${[...left].join(" ")} survive SIGKILL`);
    for (const pid of left) {
      try {
        process.kill(pid, "SIGKILL");
        killed++;
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const h of cgroupHierarchies()) {
    for (const d of cgroupTree(path.join(h, rel)).reverse()) {
      for (let i = 0; ; i++) {
        try {
          fs.rmdirSync(d);
          break;
        } catch (err) {
          // A just-killed process can hold its cgroup for a moment.
          if (i > 50) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
  return killed;
}

/** A daemon inside a node, detached, logged, its PID in the node's pids/ dir. */
export class NodeDaemon {
  pid?: number;
  constructor(
    readonly node: KubeNode,
    readonly name: string,
    readonly argv: string[],
  ) {}

  get logFile(): string {
    return path.join(this.node.dir, "logs", `${this.name}.log`);
  }

  start(): void {
    if (this.pid !== undefined && pidAlive(this.pid)) return;
    fs.mkdirSync(path.dirname(this.logFile), { recursive: true });
    const out = fs.openSync(this.logFile, "a");
    const child = spawn(path.join(HERE, "in-node.sh"), [this.node.cgroup, this.node.netnsFile, this.node.mountNs, this.node.utsNs, "--", ...this.argv], {
      stdio: ["ignore", out, out],
      detached: true,
    });
    fs.closeSync(out);
    child.unref();
    this.pid = child.pid;
    fs.mkdirSync(path.join(this.node.dir, "pids"), { recursive: true });
    fs.writeFileSync(path.join(this.node.dir, "pids", `${this.name}.pid`), `${child.pid}\n`);
  }

  async stop(graceMs = 10_000): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      /* gone */
    }
    try {
      await waitFor(`${this.node.name} ${this.name} to exit`, () => !pidAlive(pid), graceMs, 50);
    } catch {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    this.pid = undefined;
  }

  tail(lines = 20): string {
    try {
      return fs.readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }
}

export interface NodeSpec {
  prefix: string;
  name: string;
  ip: string;
  gateway: string;
  switchNs: string;
  /** Veth name on the switch side. */
  port: string;
  dir: string;
}

export class KubeNode {
  readonly daemons = new Map<string, NodeDaemon>();
  constructor(readonly spec: NodeSpec) {}

  get name(): string {
    return this.spec.name;
  }
  get ip(): string {
    return this.spec.ip;
  }
  get dir(): string {
    return this.spec.dir;
  }
  get netns(): string {
    return this.spec.name;
  }
  get netnsFile(): string {
    return `/run/netns/${this.netns}`;
  }
  get nsDir(): string {
    return path.join(this.dir, "ns");
  }
  get mountNs(): string {
    return path.join(this.nsDir, "mnt");
  }
  get utsNs(): string {
    return path.join(this.nsDir, "uts");
  }
  get cgroup(): string {
    return `${this.spec.prefix}/${this.spec.name}`;
  }

  /** Network namespace on the switch, private mount/UTS namespaces prepared by node-setup.sh, the node's cgroups. */
  async create(): Promise<void> {
    const { name, ip, gateway, switchNs, port } = this.spec;
    fs.mkdirSync(this.nsDir, { recursive: true });
    await sh("ip", ["netns", "add", name]);
    await sh("ip", ["-n", switchNs, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name]);
    await sh("ip", ["-n", switchNs, "link", "set", port, "master", "br0", "up"]);
    await sh("ip", ["-n", name, "link", "set", "lo", "up"]);
    await sh("ip", ["-n", name, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    await sh("ip", ["-n", name, "link", "set", "eth0", "up"]);
    await sh("ip", ["-n", name, "route", "add", "default", "via", gateway]);
    // ns files can only be bind-mounted below a private mount.
    await sh("mount", ["--bind", this.nsDir, this.nsDir]);
    await sh("mount", ["--make-private", this.nsDir]);
    fs.writeFileSync(this.mountNs, "");
    fs.writeFileSync(this.utsNs, "");
    await sh("unshare", [`--mount=${this.mountNs}`, `--uts=${this.utsNs}`, "--propagation", "private", "true"]);
    createCgroup(this.cgroup);
    await this.exec([path.join(HERE, "node-setup.sh"), name, this.dir]);
  }

  /** Runs a command in the node (its namespaces, its cgroup) and waits for it. */
  async exec(argv: string[], opts: { reject?: boolean; input?: string; timeout?: number } = {}) {
    return sh(path.join(HERE, "in-node.sh"), [this.cgroup, this.netnsFile, this.mountNs, this.utsNs, "--", ...argv], opts);
  }

  daemon(name: string, argv: string[]): NodeDaemon {
    const d = new NodeDaemon(this, name, argv);
    this.daemons.set(name, d);
    d.start();
    return d;
  }

  /** Everything of this node, whatever state it is in. Safe to call twice. */
  static async destroy(prefix: string, name: string, dir: string): Promise<number> {
    const killed = await destroyCgroup(`${prefix}/${name}`);
    const nsDir = path.join(dir, "ns");
    for (const f of ["mnt", "uts"]) await sh("umount", [path.join(nsDir, f)], { reject: false });
    await sh("umount", [nsDir], { reject: false });
    await sh("ip", ["netns", "del", name], { reject: false });
    fs.rmSync(dir, { recursive: true, force: true });
    return killed;
  }
}
