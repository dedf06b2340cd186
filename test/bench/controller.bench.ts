// Controller benchmarks: allocation rate and convergence, with a real etcd and
// N simulated agents (real gRPC clients, no kernel) in this process.
import * as grpc from "@grpc/grpc-js";
import { ControllerClient, type ConfigUpdate } from "../../pkg/api/index.js";
import { startController } from "../../pkg/controller/index.js";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store } from "../../pkg/store/index.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";
import { percentile, publish } from "./table.js";

const CHANNELS = 8;

async function withController<T>(fn: (port: number, store: Store) => Promise<T>): Promise<T> {
  const etcd = await EtcdProcess.start();
  const store = Store.connect({ endpoints: [etcd.endpoint] });
  const controller = await startController({ etcdEndpoints: [etcd.endpoint], listen: "127.0.0.1:0", log: silentLogger() });
  try {
    await store.saveNetwork(netSpec("bench", "10.0.0.0/8", 100), () => {});
    return await fn(controller.port, store);
  } finally {
    await controller.stop();
    await store.close();
    await etcd.stop();
  }
}

function channels(port: number): ControllerClient[] {
  return Array.from({ length: CHANNELS }, () => new ControllerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }));
}

/** Joins `count` agents with at most `concurrency` joins in flight. */
async function joinAll(agents: SimAgent[], concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < agents.length) await agents[next++].connect(120_000);
    }),
  );
}

async function allocationRate(nodes: number): Promise<(string | number)[]> {
  return withController(async (port, store) => {
    const clients = channels(port);
    const agents = Array.from({ length: nodes }, (_, i) => new SimAgent("", simJoinRequest(`node-${i}`, i + 1, ["bench"]), { client: clients[i % CHANNELS] }));
    const t0 = performance.now();
    await joinAll(agents, 64);
    const seconds = (performance.now() - t0) / 1000;
    const leases = (await store.listLeases("bench")).length;
    agents.forEach((a) => a.close());
    clients.forEach((c) => c.close());
    if (leases !== nodes) throw new Error(`expected ${nodes} leases, found ${leases}`);
    return [nodes, 64, seconds, nodes / seconds];
  });
}

/**
 * N agents connected; then, one at a time, a new node joins and we time how
 * long until each of the N agents has received the update carrying it.
 */
async function convergence(n: number, samples: number): Promise<(string | number)[]> {
  return withController(async (port) => {
    const clients = channels(port);
    let expecting: { node: string; t0: number; got: number[] } | undefined;
    const onUpdate = (u: ConfigUpdate, at: number) => {
      if (expecting && u.peerUpdates.some((p) => p.peer?.nodeName === expecting!.node && !p.removed)) expecting.got.push(at - expecting.t0);
    };
    const agents = Array.from({ length: n }, (_, i) => new SimAgent("", simJoinRequest(`node-${i}`, i + 1, ["bench"]), { client: clients[i % CHANNELS], onUpdate }));
    await joinAll(agents, 64);
    // Measure from steady state: the join storm's backlog must have drained first.
    const settled = () => agents.every((a) => (a.desired.networks.get("bench")?.peers.size ?? 0) === n - 1);
    const deadline = Date.now() + 120_000;
    while (!settled() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (!settled()) throw new Error(`the ${n} agents did not all learn about each other`);
    const all: number[] = [];
    const lastArrivals: number[] = [];
    for (let s = 0; s < samples; s++) {
      const name = `joiner-${s}`;
      const joiner = new SimAgent("", simJoinRequest(name, n + 100 + s, ["bench"]), { client: clients[s % CHANNELS] });
      expecting = { node: name, t0: performance.now(), got: [] };
      await joiner.connect();
      const deadline = Date.now() + 30_000;
      while (expecting.got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      if (expecting.got.length < n) throw new Error(`only ${expecting.got.length}/${n} agents heard about ${name}`);
      all.push(...expecting.got);
      lastArrivals.push(Math.max(...expecting.got));
      agents.push(joiner);
    }
    agents.forEach((a) => a.close());
    clients.forEach((c) => c.close());
    all.sort((a, b) => a - b);
    lastArrivals.sort((a, b) => a - b);
    return [n, samples, percentile(all, 50), percentile(all, 99), percentile(lastArrivals, 50), lastArrivals[lastArrivals.length - 1]];
  });
}

export async function run(): Promise<void> {
  const machine = `node ${process.version}, etcd 3.4 on loopback, controller and simulated agents in one process on this 2-core machine`;
  publish({
    id: "controller-allocation",
    title: "Controller: subnet allocation rate (nodes joining, 64 joins in flight)",
    columns: ["nodes", "concurrency", "seconds", "leases/s"],
    rows: [await allocationRate(1000)],
    notes: [machine, "each join: register node (etcd txn) + create-if-absent lease txn + snapshot sent"],
  });
  const rows = [];
  for (const n of [100, 500, 1000]) rows.push(await convergence(n, n >= 1000 ? 10 : 20));
  publish({
    id: "controller-convergence",
    title: "Controller: convergence after a node joins (ms until each of N connected agents has the new peer)",
    columns: ["N agents", "joins", "p50 ms", "p99 ms", "all-received p50 ms", "all-received max ms"],
    rows,
    notes: [machine, "target: p99 < 1000 ms at N = 1000"],
  });
}
