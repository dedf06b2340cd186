// Controller at scale: a real etcd, one real `weft-controller` process, and
// simulated agents in separate worker processes (sim-fleet.ts; never in the
// controller's process). Measures cold start, one more join, SIGKILL +
// restart, the controller's peak RSS, and its memory growth while 10 agents
// never read during 500 nodes of churn.
import { fork, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { freePort, waitFor } from "../../pkg/lab/ports.js";
import { Store } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";
import type { Command } from "./sim-fleet.js";
import { percentile, publish } from "./table.js";

const repo = path.resolve(import.meta.dirname, "../..");
const EPOCH = () => performance.timeOrigin + performance.now();
const SAMPLES = 10;
const SETTLE_MS = 1000;
const STALLED = 10;
const CHURN = 500;
/** A cold start that takes longer than this is reported as not finished. */
/** Joins in flight per fleet process during the cold start. */
const COLD_CONCURRENCY = Number(process.env.BENCH_COLD_CONCURRENCY ?? 32);
const COLD_LIMIT_MS = Number(process.env.BENCH_COLD_LIMIT_MS ?? 600_000);
let progressLine = "";

type Reply = { id: number; [k: string]: unknown };
type Ask = Command extends infer C ? (C extends { id: number } ? Omit<C, "id"> : never) : never;

class Fleet {
  private next = 1;
  private pending = new Map<number, (r: Reply) => void>();
  readonly proc: ChildProcess;

  constructor() {
    this.proc = fork(path.join(repo, "test/bench/sim-fleet.ts"), [], { execArgv: ["--import", "tsx", "--max-old-space-size=4096", ...(process.env.BENCH_FLEET_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_FLEET_PROF] : [])], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.proc.on("message", (m: Reply) => {
      if (m.id === undefined) return;
      this.pending.get(m.id)?.(m);
      this.pending.delete(m.id);
    });
  }

  async init(address: string, capacity: number, agentWindow = false): Promise<void> {
    const ready = new Promise<void>((resolve) => this.proc.once("message", () => resolve()));
    this.proc.send({ cmd: "init", address, network: "bench", capacity, agentWindow } satisfies Command);
    await ready;
  }

  ask<T extends Reply>(c: Ask, timeoutMs = 600_000): Promise<T> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fleet: ${c.cmd} timed out after ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r as T);
      });
      this.proc.send({ ...c, id } as Command);
    });
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

function procStatus(pid: number, field: "VmHWM" | "VmRSS"): number {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** User + system CPU seconds a process has used (clock ticks of 100 Hz). */
function procCpuS(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function startController(etcd: string, port: number, metricsPort: number, profileDir?: string): Promise<ChildProcess> {
  // BENCH_CPU_PROF=dir (cold start) or BENCH_CPU_PROF_RESTART=dir (the restarted process): a V8 CPU profile, for finding where the time goes
  // (BENCH_FLEET_PROF=dir as well: the simulated agents' processes, written when they exit).
  const prof = profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [];
  const p = spawn(process.execPath, [...prof, path.join(repo, "dist/bundle/weft-controller/main.js"), "--etcd-endpoints", etcd, "--listen", `127.0.0.1:${port}`, "--metrics-addr", `127.0.0.1:${metricsPort}`, "--log-level", "warn"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitFor("controller /readyz", async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.ok ?? false, 60_000, 20);
  return p;
}

async function metricValue(metricsPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return text.split("\n").filter((l) => l.startsWith(name + " ") || l.startsWith(name + "{")).reduce((s, l) => s + Number(l.split(" ").pop()), 0);
}

/** Mean of each phase of weft_controller_join_seconds, e.g. "register 12 ms, snapshot 3 ms". */
async function joinPhaseMeans(metricsPort: number): Promise<string> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const value = (name: string, phase: string) => Number(text.match(new RegExp(`^${name}\\{phase="${phase}"\\} (\\S+)$`, "m"))?.[1] ?? NaN);
  return ["register", "snapshot"].map((p) => `${p} ${((1000 * value("weft_controller_join_seconds_sum", p)) / value("weft_controller_join_seconds_count", p)).toFixed(0)} ms`).join(", ");
}

async function killed(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once("exit", r));
  p.kill("SIGKILL");
  await gone;
}

async function scenario(n: number): Promise<(string | number)[]> {
  const etcd = await EtcdProcess.start();
  const store = Store.connect({ endpoints: [etcd.endpoint] });
  const procs: ChildProcess[] = [];
  const fleets: Fleet[] = [];
  try {
    await store.saveNetwork(netSpec("bench", "10.0.0.0/8", 100), () => {});
    const port = await freePort();
    const metricsPort = await freePort();
    let ctl = await startController(etcd.endpoint, port, metricsPort, process.env.BENCH_CPU_PROF);
    procs.push(ctl);
    const capacity = n + SAMPLES + STALLED + 2 * CHURN + 10;
    const address = `127.0.0.1:${port}`;
    const workers = [new Fleet(), new Fleet()];
    fleets.push(...workers);
    await Promise.all(workers.map((w) => w.init(address, capacity)));

    // Cold start: N agents join (64 joins in flight) until every agent holds all N-1 peers.
    // CPU is reported for the cold start alone (each process's start-up before it excluded).
    const fleetCpuAtStart = (await Promise.all(workers.map((w) => w.ask<Reply & { cpuS: number }>({ cmd: "stats" })))).map((x) => x.cpuS);
    const ctlCpuAtStart = procCpuS(ctl.pid!);
    const etcdCpuAtStart = procCpuS(etcd.pid!);
    const t0 = EPOCH();
    const half = Math.floor(n / 2);
    // Progress every 10 s, so a run that does not finish still says how far it got.
    const progress = setInterval(() => {
      void Promise.all(workers.map((w) => w.ask<Reply & { agents: number; minPeers: number }>({ cmd: "stats" }, 30_000)))
        .then((st) => {
          progressLine = `${((EPOCH() - t0) / 1000).toFixed(0)} s: ${st.reduce((a, x) => a + x.agents, 0)} agents joined, fewest peers held ${Math.min(...st.map((x) => x.minPeers))}, controller RSS ${procStatus(ctl.pid!, "VmRSS").toFixed(0)} MB`;
          console.log(`n=${n} cold start, ${progressLine}`);
        })
        .catch(() => undefined);
    }, 10_000);
    try {
      await Promise.all([workers[0].ask({ cmd: "join", from: 0, to: half, concurrency: COLD_CONCURRENCY }, COLD_LIMIT_MS), workers[1].ask({ cmd: "join", from: half, to: n, concurrency: COLD_CONCURRENCY }, COLD_LIMIT_MS)]);
    } finally {
      clearInterval(progress);
    }
    const joinedS = (EPOCH() - t0) / 1000;
    const cold = await Promise.all(workers.map((w) => w.ask<Reply & { at: number }>({ cmd: "waitPeers", peers: n - 1 }, COLD_LIMIT_MS)));
    const coldS = (Math.max(...cold.map((r) => r.at)) - t0) / 1000;
    {
      // Where cold start time went: CPU seconds of the controller and of each fleet process, and join latency as the fleet saw it.
      const st = await Promise.all(workers.map((w) => w.ask<Reply & { cpuS: number; joinP50: number; joinP99: number; failedJoins: number }>({ cmd: "stats" })));
      console.log(
        `n=${n} cold start ${coldS.toFixed(2)} s (joins answered ${joinedS.toFixed(2)} s): controller's join phases (mean) ${await joinPhaseMeans(metricsPort)}, controller CPU ${(procCpuS(ctl.pid!) - ctlCpuAtStart).toFixed(1)} s, fleets CPU ${st.map((x, i) => (x.cpuS - fleetCpuAtStart[i]).toFixed(1)).join(" + ")} s, join→snapshot p50 ${st.map((x) => x.joinP50.toFixed(0)).join("/")} ms p99 ${st.map((x) => x.joinP99.toFixed(0)).join("/")} ms (${st.reduce((n, x) => n + x.failedJoins, 0)} join streams ended before their snapshot), etcd CPU ${(procCpuS(etcd.pid!) - etcdCpuAtStart).toFixed(1)} s, ${await metricValue(metricsPort, "weft_controller_updates_sent_total")} messages sent, load ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
      );
    }
    if (process.env.BENCH_CPU_PROF) {
      // Profiling the cold start only: a clean exit writes the profile.
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      console.log(text.split("\n").filter((l) => /etcd_operation_seconds_(sum|count)|join_seconds_(sum|count)|config_push_seconds_(sum|count)|updates_sent|update_bytes/.test(l)).join("\n"));
      const exited = new Promise((r) => ctl.once("exit", r));
      ctl.kill("SIGTERM");
      await exited;
      return [n, coldS, joinedS];
    }

    // One more join at a time, into the settled cluster (the cold start's storm pacing lasts until no peer changed for
    // 300 ms, and its last deltas were paced up to 250 ms behind its last change): until every agent has the new peer.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const allReceived: number[] = [];
    const phases: string[] = [];
    for (let s = 0; s < SAMPLES; s++) {
      const node = n + s;
      const expect = workers.map((w) => w.ask<Reply & { times: number[] }>({ cmd: "expect", node }));
      const j0 = EPOCH();
      await workers[s % 2].ask({ cmd: "join", from: node, to: node + 1, concurrency: 1 });
      const answered = EPOCH() - j0;
      const times = (await Promise.all(expect)).flatMap((r) => r.times);
      allReceived.push(Math.max(...times) - j0);
      // Where one join's time went: its own snapshot, then the first and the last agent to hear of it.
      phases.push(`${answered.toFixed(0)}/${(Math.min(...times) - j0).toFixed(0)}/${(Math.max(...times) - j0).toFixed(0)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    console.log(`n=${n} one more join, in order (ms; joined/first/last agent has it): ${phases.join(" ")}`);
    allReceived.sort((a, b) => a - b);
    const total = n + SAMPLES;
    const peakFirst = procStatus(ctl.pid!, "VmHWM");

    // SIGKILL + restart: until every agent has a snapshot from the new process with all peers.
    const fleetCpu = async () => (await Promise.all(workers.map((w) => w.ask<Reply & { cpuS: number }>({ cmd: "stats" })))).map((x) => x.cpuS);
    const fleetCpuBefore = await fleetCpu();
    const etcdCpuBefore = procCpuS(etcd.pid!);
    const k0 = EPOCH();
    await killed(ctl);
    ctl = await startController(etcd.endpoint, port, metricsPort, process.env.BENCH_CPU_PROF_RESTART);
    procs.push(ctl);
    const readyS = (EPOCH() - k0) / 1000;
    const restarted = await Promise.all(workers.map((w) => w.ask<Reply & { at: number }>({ cmd: "waitPeers", peers: total - 1, snapshotAfter: k0 })));
    const restartS = (Math.max(...restarted.map((r) => r.at)) - k0) / 1000;
    const peakRestart = procStatus(ctl.pid!, "VmHWM");
    console.log(`n=${n} restart ${restartS.toFixed(2)} s: new controller ready after ${readyS.toFixed(2)} s, its CPU ${procCpuS(ctl.pid!).toFixed(1)} s, fleets CPU ${(await fleetCpu()).map((c, i) => (c - fleetCpuBefore[i]).toFixed(1)).join(" + ")} s, etcd CPU ${(procCpuS(etcd.pid!) - etcdCpuBefore).toFixed(1)} s, load ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
    if (process.env.BENCH_CPU_PROF_RESTART) {
      const exited = new Promise((r) => ctl.once("exit", r));
      ctl.kill("SIGTERM");
      await exited;
      return [n, coldS, restartS];
    }

    // 10 agents that never read (their process is stopped) while 500 nodes join and are removed.
    const stalled = new Fleet();
    fleets.push(stalled);
    // Each of these agents has a channel of its own (index % 32) with a real agent's 64 KiB window: with the
    // fleet's 8 MiB windows the controller's HTTP/2 sessions would buffer up to 8 MiB for each stalled agent,
    // which no real agent lets it.
    await stalled.init(address, capacity, true);
    await stalled.ask({ cmd: "join", from: total, to: total + STALLED, concurrency: STALLED });
    await stalled.ask({ cmd: "waitPeers", peers: total + STALLED - 1 });
    // The same churn once with every agent reading first: the process's own high-water mark for a churn
    // (500 snapshots and their copies are garbage that malloc keeps) is then paid before the measurement,
    // which is left with what the stalled agents cost. Both growths are reported.
    const churn = async (from: number) => {
      await workers[0].ask({ cmd: "join", from, to: from + CHURN, concurrency: 32 });
      let removeNext = from;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (removeNext < from + CHURN) await store.removeNode(`node-${removeNext++}`);
        }),
      );
      await workers[0].ask({ cmd: "leave", from, to: from + CHURN });
      await new Promise((r) => setTimeout(r, 2000));
    };
    const rssWarm = procStatus(ctl.pid!, "VmRSS");
    await churn(total + STALLED);
    const warmGrowth = procStatus(ctl.pid!, "VmRSS") - rssWarm;
    stalled.proc.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, 1000));
    const rssBefore = procStatus(ctl.pid!, "VmRSS");
    const resyncsBefore = await metricValue(metricsPort, "weft_controller_stream_resyncs_total");
    await churn(total + STALLED + CHURN);
    const rssAfter = procStatus(ctl.pid!, "VmRSS");
    const heldMax = await metricValue(metricsPort, "weft_controller_stream_buffered_bytes_max");
    const resyncs = (await metricValue(metricsPort, "weft_controller_stream_resyncs_total")) - resyncsBefore;
    stalled.proc.kill("SIGCONT");
    const s0 = EPOCH();
    await stalled.ask({ cmd: "waitPeers", peers: total + STALLED - 1, snapshotAfter: s0 - 60_000 }, 120_000);
    const stalledResyncS = (EPOCH() - s0) / 1000;
    const peak = Math.max(peakFirst, peakRestart, procStatus(ctl.pid!, "VmHWM"));

    console.log(`n=${n}: every join answered after ${joinedS.toFixed(2)} s`);
    return [n, coldS, percentile(allReceived, 50), percentile(allReceived, 99), restartS, peak, warmGrowth, rssAfter - rssBefore, resyncs, heldMax / 1024, stalledResyncS];
  } finally {
    // Profiling the fleets: a clean exit (on disconnect) writes their profiles.
    if (process.env.BENCH_FLEET_PROF) await Promise.all(fleets.map((f) => new Promise((r) => (f.proc.once("exit", r), f.proc.disconnect()))));
    fleets.forEach((f) => {
      f.proc.kill("SIGCONT");
      f.kill();
    });
    for (const p of procs) await killed(p);
    await store.close();
    await etcd.stop();
  }
}

export async function run(): Promise<void> {
  const sizes = (process.env.BENCH_NODES ?? "1000,5000").split(",").map(Number);
  const rows = [];
  for (const n of sizes) {
    progressLine = "";
    try {
      rows.push(await scenario(n));
    } catch (err) {
      // Publish what was measured: a size that does not finish is a result too.
      rows.push([n, `did not finish: ${(err as Error).message}${progressLine ? ` (last progress: ${progressLine})` : ""}`]);
    }
  }
  // A profiling run is not a result to publish.
  if (process.env.BENCH_CPU_PROF || process.env.BENCH_CPU_PROF_RESTART) return;
  publish({
    id: "controller-scale",
    title: "Controller at scale: one weft-controller process, simulated agents in 2 worker processes (real gRPC streams, every update acked)",
    columns: [
      "nodes",
      "cold start: all hold all peers (s)",
      "one more join, all have it p50 (ms)",
      "p99 (ms)",
      "SIGKILL + restart: all resynced (s)",
      "controller peak RSS (MB)",
      `RSS growth, ${CHURN} nodes churn, all agents reading (MB)`,
      `RSS growth, the same churn again, ${STALLED} agents never reading (MB)`,
      "stalled streams switched to resync",
      "max bytes held for one stream (KiB)",
      "stalled agents resynced after SIGCONT (s)",
    ],
    rows,
    notes: [
      `node ${process.version}, etcd 3.4 on loopback, 2-core machine shared with other builds and tests (noisy)`,
      `agents: ${CHANNELS_NOTE}; cold start = ${2 * COLD_CONCURRENCY} joins in flight from t0 until every agent holds N-1 peers; one more join = ${SAMPLES} joins ${SETTLE_MS} ms after the cold start and 200 ms apart, each timed until every agent has it (p99 of ${SAMPLES} = the max)`,
      "restart: from SIGKILL until every agent holds a snapshot from the new process with all peers (agents reconnect on the agent's own ReconnectPolicy: 125-250 ms, then doubling, with jitter)",
      `churn: ${CHURN} nodes join and are removed (weftctl node remove path), first with every agent reading, then again while the ${STALLED} stalled agents' process is SIGSTOPped (those ${STALLED} have a channel each with a real agent's 64 KiB window); RSS is read 2 s after each churn`,
      "the controller is dist/bundle/weft-controller (what the image runs); deltas in a storm are paced by change rate and by stream count (at most ~4000 deltas/s in all)",
      "targets: N=1000 cold <= 2 s, join p99 <= 100 ms, restart <= 2 s; N=5000 cold <= 20 s, join p99 <= 250 ms, restart <= 20 s, peak RSS <= 1 GB; stalled agents <= 50 MB growth",
    ],
  });
}

const CHANNELS_NOTE = "each worker process opens 32 HTTP/2 connections (8 MiB receive window each, see sim-fleet.ts) and one gRPC Join stream per agent, spoken over node:http2 (grpc-h2.ts) rather than grpc-js, whose per-stream cost the simulated agents took from the controller";
