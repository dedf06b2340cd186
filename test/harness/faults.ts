// The fault suite's tools: a weft-controller as a real child process (signals,
// metrics, logs), simulated agents that reconnect like the real one, etcd
// inspection (raw values, invariants, revision history), and the table of
// fault -> outcome the suite prints and writes to docs/reliability.md.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { IKeyValue } from "etcd3";
import { freePort, waitFor } from "../../pkg/lab/ports.js";
import type { Store } from "../../pkg/store/index.js";
import { commandArgv, REPO } from "./cli.js";
import { SimAgent } from "./sim-agent.js";
import * as grpc from "@grpc/grpc-js";
import { ControllerClient, type JoinRequest } from "../../pkg/api/index.js";

/** One weft-controller process on fixed loopback ports (so a restart keeps the address agents dial). */
export class ControllerProcess {
  child?: ChildProcess;
  private exited: Promise<void> = Promise.resolve();
  /** Structured log lines (pino JSON) of every run of this controller. */
  readonly logs: Record<string, unknown>[] = [];
  private partial = "";

  private constructor(
    readonly name: string,
    readonly etcd: string,
    readonly prefix: string,
    readonly port: number,
    readonly metricsPort: number,
    readonly extraArgs: string[],
  ) {}

  static async create(name: string, etcd: string, prefix: string, extraArgs: string[] = []): Promise<ControllerProcess> {
    return new ControllerProcess(name, etcd, prefix, await freePort(), await freePort(), extraArgs);
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    const args = [
      ...commandArgv("weft-controller"),
      "--etcd-endpoints", this.etcd,
      "--etcd-prefix", this.prefix,
      "--listen", this.address,
      "--metrics-addr", `127.0.0.1:${this.metricsPort}`,
      "--identity", this.name,
      "--log-level", "info",
      ...this.extraArgs,
    ];
    const child = spawn(process.execPath, args, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const take = (chunk: Buffer) => {
      const text = this.partial + chunk.toString();
      const lines = text.split("\n");
      this.partial = lines.pop() ?? "";
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          this.logs.push({ ...JSON.parse(line), at: Date.now() });
        } catch {
          this.logs.push({ msg: line, at: Date.now() });
        }
      }
    };
    child.stdout!.on("data", take);
    child.stderr!.on("data", take);
  }

  async fetch(path: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`http://127.0.0.1:${this.metricsPort}${path}`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.text() };
  }

  async ready(): Promise<boolean> {
    try {
      return (await this.fetch("/readyz")).status === 200;
    } catch {
      return false;
    }
  }

  async waitReady(timeoutMs = 30_000): Promise<void> {
    await waitFor(`${this.name} /readyz`, () => {
      if (!this.running) throw new Error(`${this.name} exited (${this.child?.exitCode ?? this.child?.signalCode}): ${this.tail()}`);
      return this.ready();
    }, timeoutMs, 50);
  }

  /** A metric's value (sum over series whose labels contain `labels`); 0 when absent. */
  async metric(name: string, labels = ""): Promise<number> {
    const { body } = await this.fetch("/metrics");
    let sum = 0;
    for (const line of body.split("\n")) {
      if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{") && line.includes(labels)) sum += Number(line.split(" ").pop());
    }
    return sum;
  }

  signal(sig: NodeJS.Signals): void {
    this.child?.kill(sig);
  }

  async kill(sig: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.running) return;
    this.child!.kill("SIGCONT"); // a stopped process does not act on SIGTERM
    this.child!.kill(sig);
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Log lines with this message, optionally only those logged after `since` (ms since epoch, as seen by the test). */
  logged(msg: string, since = 0): Record<string, unknown>[] {
    return this.logs.filter((l) => l.msg === msg && (l.at as number) >= since);
  }

  tail(n = 8): string {
    return this.logs.slice(-n).map((l) => JSON.stringify(l)).join("\n");
  }
}

/** A simulated agent that keeps its stream up the way weft-agent does: on any end it joins again after a short jittered delay. */
export class ReconnectingAgent {
  readonly sim: SimAgent;
  private stopped = false;
  private loop?: Promise<void>;
  joins = 0;

  private readonly client: ControllerClient;

  constructor(address: string, request: JoinRequest) {
    // weft-agent retries on its own schedule; grpc-js' channel backoff (1 s growing to 120 s) must not add to it.
    this.client = new ControllerClient(address, grpc.credentials.createInsecure(), {
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.min_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 500,
    });
    this.sim = new SimAgent(address, request, { client: this.client });
  }

  get name(): string {
    return this.sim.request.nodeName;
  }

  start(): this {
    this.loop = (async () => {
      while (!this.stopped) {
        try {
          await this.sim.connect(20_000);
          this.joins++;
          await waitFor("stream end", () => this.stopped || this.sim.ended, 24 * 3600_000, 20);
        } catch {
          // refused, reset or no snapshot in time: try again
        }
        if (!this.stopped) await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      }
    })();
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sim.close();
    await this.loop;
    this.client.close();
  }
}

/** Raw values under the prefix, decoded as plain JSON where possible (what a human with etcdctl would see). */
export async function rawRecords(store: Store, sub: string): Promise<{ key: string; json: unknown; kv: IKeyValue }[]> {
  const prefix = store.keys.prefix + sub;
  const kvs = await store.client.getAll().prefix(prefix).exec();
  return kvs.kvs.map((kv) => {
    let json: unknown;
    try {
      json = JSON.parse(kv.value.toString());
    } catch {
      json = undefined;
    }
    return { key: kv.key.toString(), json, kv };
  });
}

export interface Invariants {
  duplicateSubnets: number;
  orphanLeases: number;
  nodesWithoutUnderlay: number;
  leases: number;
  nodes: number;
}

/** The lease/node invariants, read straight from etcd: each subnet held once, each lease backed by its node's record, every node with an underlay IP. */
export async function invariants(store: Store): Promise<Invariants> {
  const nodes = await rawRecords(store, "nodes/");
  const leases = await rawRecords(store, "leases/");
  const byName = new Map(nodes.map((n) => [(n.json as { name?: string })?.name, n.json as { underlayIP?: string; subnets?: Record<string, string> }]));
  const seen = new Set<string>();
  let duplicateSubnets = 0;
  let orphanLeases = 0;
  const perNodeNet = new Set<string>();
  for (const l of leases) {
    const rec = l.json as { network: string; subnet: string; node: string };
    const id = `${rec.network}/${rec.subnet}`;
    if (seen.has(id)) duplicateSubnets++;
    seen.add(id);
    if (perNodeNet.has(`${rec.node}/${rec.network}`)) duplicateSubnets++;
    perNodeNet.add(`${rec.node}/${rec.network}`);
    const node = byName.get(rec.node);
    if (!node || node.subnets?.[rec.network] !== rec.subnet) orphanLeases++;
  }
  const nodesWithoutUnderlay = nodes.filter((n) => !(n.json as { underlayIP?: string })?.underlayIP).length;
  return { duplicateSubnets, orphanLeases, nodesWithoutUnderlay, leases: leases.length, nodes: nodes.length };
}

/** Every event under `prefix` between two revisions (inclusive), from etcd's history. */
export async function history(store: Store, fromRevision: number, toRevision: number): Promise<{ type: "put" | "delete"; key: string; lease: string; revision: number }[]> {
  const out: { type: "put" | "delete"; key: string; lease: string; revision: number }[] = [];
  const watcher = await store.client.watch().prefix(store.keys.prefix).startRevision(String(fromRevision)).create();
  try {
    let last = fromRevision - 1;
    watcher.on("data", (res) => {
      for (const ev of res.events) {
        const revision = Number(ev.kv.mod_revision);
        if (revision > toRevision) continue;
        out.push({ type: ev.type === "Delete" ? "delete" : "put", key: ev.kv.key.toString(), lease: String(ev.kv.lease ?? "0"), revision });
      }
      last = Math.max(last, Number(res.header.revision));
    });
    await waitFor("history to be replayed", () => last >= toRevision, 10_000, 20);
  } finally {
    await watcher.cancel();
  }
  return out;
}

export async function currentRevision(store: Store): Promise<number> {
  const res = await store.client.kv.range({ key: Buffer.from(store.keys.prefix), limit: 1 });
  return Number(res.header.revision);
}

export interface FaultRow {
  fault: string;
  guarantee: string;
  outcome: string;
}

/** Rows of the fault table, in the order the suite ran them. */
export const faultTable: FaultRow[] = [];

export function renderFaultTable(rows: FaultRow[]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return ["| fault | what Weft guarantees | what the test saw |", "| --- | --- | --- |", ...rows.map((r) => `| ${esc(r.fault)} | ${esc(r.guarantee)} | ${esc(r.outcome)} |`)].join("\n");
}

const BEGIN = "<!-- fault-table:begin (written by test/integration/faults.test.ts with WEFT_WRITE_FAULT_TABLE=1) -->";
const END = "<!-- fault-table:end -->";

/** Replaces the table between the markers in docs/reliability.md. */
export function writeFaultTable(rows: FaultRow[], note: string): void {
  const file = path.join(REPO, "docs/reliability.md");
  const doc = fs.readFileSync(file, "utf8");
  const i = doc.indexOf(BEGIN);
  const j = doc.indexOf(END);
  if (i < 0 || j < 0) throw new Error(`${file}: fault-table markers missing`);
  fs.writeFileSync(file, `${doc.slice(0, i + BEGIN.length)}\n${note}\n\n${renderFaultTable(rows)}\n${doc.slice(j)}`);
}

export function quantiles(xs: number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0], median: s[Math.floor((s.length - 1) / 2)], max: s[s.length - 1] };
}
