// The fault suite: a real etcd, weft-controller as real processes (signals:
// SIGSTOP/SIGCONT/SIGKILL), simulated agents speaking the real Join protocol
// and reconnecting like weft-agent. Each fault adds a row to the table of
// fault -> outcome, printed at the end (and written to docs/reliability.md
// when WEFT_WRITE_FAULT_TABLE=1). No timing assertions: the recovery times
// are measured and reported, the assertions are about state.
import assert from "node:assert/strict";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { Store } from "../../pkg/store/index.js";
import { ControllerProcess, ReconnectingAgent, currentRevision, faultTable, history, invariants, quantiles, rawRecords, renderFaultTable, writeFaultTable } from "../harness/faults.js";
import { simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const row = (fault: string, guarantee: string, outcome: string) => faultTable.push({ fault, guarantee, outcome });
const RECOVERY_ROUNDS = Number(process.env.WEFT_RECOVERY_ROUNDS ?? 2);

describe("fault suite (real etcd, weft-controller processes, reconnecting agents)", function () {
  this.timeout(240_000);
  let etcd: EtcdProcess;
  const controllers: ControllerProcess[] = [];
  const agents: ReconnectingAgent[] = [];
  const stores: Store[] = [];
  let prefixSeq = 0;

  before(async function () {
    this.timeout(60_000);
    etcd = await EtcdProcess.start();
  });
  afterEach(async function () {
    if (this.currentTest?.state === "failed") for (const c of controllers) process.stderr.write(`--- ${c.name}\n${c.tail(12)}\n`);
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await Promise.all(controllers.splice(0).map((c) => c.kill()));
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });
  after(async function () {
    this.timeout(30_000);
    await etcd?.stop();
    if (faultTable.length > 0) {
      process.stdout.write(`\nfault suite: fault -> outcome\n${renderFaultTable(faultTable)}\n\n`);
      if (process.env.WEFT_WRITE_FAULT_TABLE === "1") writeFaultTable(faultTable, `Measured ${new Date().toISOString().slice(0, 10)} on the 2-core development VM while other builds ran (timings are noisy).`);
    }
  });

  async function setup(networks: [string, string, number][], controllerArgs: string[] = [], replicas = 1) {
    const prefix = `/weft-faults-${++prefixSeq}/`;
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix });
    stores.push(store);
    for (const [name, cidr, vni] of networks) await store.saveNetwork(netSpec(name, cidr, vni), () => {});
    const cs: ControllerProcess[] = [];
    for (let i = 0; i < replicas; i++) {
      const c = await ControllerProcess.create(`controller-${prefixSeq}-${i}`, etcd.endpoint, prefix, controllerArgs);
      controllers.push(c);
      cs.push(c);
      c.start();
    }
    await Promise.all(cs.map((c) => c.waitReady()));
    return { store, prefix, controllers: cs };
  }

  function startAgents(address: string, count: number, networks: string[], from = 1): ReconnectingAgent[] {
    const out: ReconnectingAgent[] = [];
    for (let i = from; i < from + count; i++) out.push(new ReconnectingAgent(address, simJoinRequest(`node-${i}`, i, networks)).start());
    agents.push(...out);
    return out;
  }

  const converged = (as: ReconnectingAgent[], network: string, peers = as.length - 1) =>
    as.every((a) => !!a.sim.subnet(network) && a.sim.peers(network).length === peers);

  it("malformed values under networks/, nodes/, leases/: the controller stays up, serves the rest, counts them; a restart with them present becomes ready", async () => {
    const { store, prefix, controllers: [c] } = await setup([["blue", "10.90.0.0/16", 90], ["green", "10.91.0.0/16", 91]]);
    const as = startAgents(c.address, 3, ["blue", "green", "red"]);
    await waitFor("agents to converge", () => converged(as, "blue") && converged(as, "green"), 30_000);
    const huge = JSON.stringify({ ...netSpec("huge", "10.99.0.0/16", 99), pad: "x".repeat(200_000) });
    const bad: [string, string][] = [
      ["networks/notjson", "not json"],
      ["networks/types", JSON.stringify({ ...netSpec("types", "10.92.0.0/16", 92), vni: "ninety-two", nodeSelector: [] })],
      ["networks/missing", JSON.stringify({ name: "missing" })],
      ["networks/huge", huge],
      ["networks/unknown", JSON.stringify({ ...netSpec("unknown", "10.93.0.0/16", 93), encrypt: true })],
      ["networks/null", "null"],
      ["nodes/notjson", "{"],
      ["nodes/types", JSON.stringify({ name: "types", underlayIP: 7, labels: "x" })],
      ["nodes/missing", JSON.stringify({ name: "missing" })],
      ["leases/blue/10.90.200.0-24", "not json"],
      ["leases/green/10.91.200.0-24", JSON.stringify({ network: "green", subnet: "10.91.200.0/24", node: 5, vtepIP: [], vtepMac: {} })],
      ["leases/blue/10.90.201.0-24", JSON.stringify({ network: "blue", subnet: "10.90.9.0/24", node: "node-1", vtepIP: "172.20.0.1", vtepMac: "" })],
    ];
    for (const [k, v] of bad) await store.client.put(prefix + k).value(v);
    // The service goes on: a new network is served to every agent after the bad writes.
    await store.saveNetwork(netSpec("red", "10.94.0.0/16", 94), () => {});
    await waitFor("agents to get the network created after the bad values", () => converged(as, "red"), 30_000);
    assert.equal(c.running, true, "controller still running");
    assert.equal((await c.fetch("/healthz")).status, 200);
    const counted = { network: await c.metric("weft_controller_invalid_records", 'kind="network"'), node: await c.metric("weft_controller_invalid_records", 'kind="node"'), lease: await c.metric("weft_controller_invalid_records", 'kind="lease"') };
    assert.ok(counted.network >= 6 && counted.node >= 3 && counted.lease >= 3, `counted by kind: ${JSON.stringify(counted)}`);
    assert.equal(converged(as, "blue") && converged(as, "green"), true, "other networks still served with every peer");
    // Nothing was deleted because of them (GC leaves leases it cannot judge; nothing else touched them).
    for (const [k] of bad) assert.ok((await store.client.get(prefix + k).buffer()) !== null, `${k} left as it was`);

    await c.kill("SIGTERM");
    c.start();
    await c.waitReady();
    await waitFor("agents to resync after the restart", () => as.every((a) => a.joins >= 2) && converged(as, "blue") && converged(as, "green") && converged(as, "red"), 30_000);
    const afterRestart = await c.metric("weft_controller_invalid_records");
    assert.ok(afterRestart >= bad.length, `counted again at start-up (${afterRestart})`);
    row(
      "malformed values under networks/, nodes/, leases/ (not JSON, wrong types, missing fields, 200 KB value, unknown field, null, key/value mismatch)",
      "logged with its key, counted in weft_controller_invalid_records{kind}, left out of the view, nothing deleted; other networks served; a restart with them present becomes ready",
      `controller up, /healthz 200; counted network=${counted.network} node=${counted.node} lease=${counted.lease}; a network created afterwards reached all 3 agents; restart: ready, ${afterRestart} counted at load, all agents resynced`,
    );
  });

  it("compaction gap: controller SIGSTOPped while etcd restarts, a network is created, a node removed and history compacted; on SIGCONT it re-lists", async () => {
    const { store, controllers: [c] } = await setup([["blue", "10.95.0.0/16", 95]]);
    const as = startAgents(c.address, 4, ["blue", "green"]);
    await waitFor("agents to converge", () => converged(as, "blue"), 30_000);
    const gone = as.pop()!;
    await gone.stop();
    agents.splice(agents.indexOf(gone), 1);
    const restartsBefore = await c.metric("weft_controller_watch_restarts_total");
    c.signal("SIGSTOP");
    await etcd.restart(); // the controller's watch connection breaks while it cannot notice
    await store.saveNetwork(netSpec("green", "10.96.0.0/16", 96), () => {});
    assert.equal(await store.removeNode(gone.name), true);
    const rev = await currentRevision(store);
    await store.client.kv.compact({ revision: String(rev), physical: true });
    c.signal("SIGCONT");
    await waitFor("the new network served and the removed node dropped everywhere", () => converged(as, "green") && as.every((a) => !a.sim.peers("blue").includes(gone.name)), 30_000);
    const restarts = await c.metric("weft_controller_watch_restarts_total");
    assert.ok(restarts > restartsBefore, "the watch was lost and the view re-listed");
    assert.equal(converged(as, "blue"), true);
    row(
      "compaction gap: controller SIGSTOP; etcd restarted; network created, node removed, history compacted past both; SIGCONT",
      "the watch from a compacted revision is fenced (old watcher closed first) and the view re-listed at the current revision, then watched from there",
      `watch restarts ${restartsBefore} -> ${restarts}; the new network reached all 3 agents, the removed node left every agent's peers`,
    );
  });

  it("etcd restarted in the middle of 200 concurrent joins: no duplicate subnet, every agent converges", async () => {
    const { store, controllers: [c] } = await setup([["blue", "10.100.0.0/16", 100]]);
    const as = startAgents(c.address, 200, ["blue"]);
    await waitFor("joins under way", async () => (await rawRecords(store, "leases/")).length >= 40, 60_000, 20);
    const atRestart = (await rawRecords(store, "leases/")).length;
    const t0 = performance.now();
    await etcd.restart();
    await waitFor("all 200 agents to hold a subnet and 199 peers", () => converged(as, "blue"), 120_000, 100);
    const seconds = (performance.now() - t0) / 1000;
    const inv = await invariants(store);
    assert.deepEqual([inv.duplicateSubnets, inv.orphanLeases, inv.nodesWithoutUnderlay, inv.leases, inv.nodes], [0, 0, 0, 200, 200]);
    const subnets = new Set(as.map((a) => a.sim.subnet("blue")));
    assert.equal(subnets.size, 200, "agents were told 200 distinct subnets");
    row(
      "etcd restarted in the middle of 200 concurrent joins",
      "no subnet leased twice; every agent converges (subnet + all peers)",
      `restart at ${atRestart}/200 leases; all 200 converged ${seconds.toFixed(1)} s after the restart began; 0 duplicate subnets, 0 orphan leases, 0 nodes without underlay IP`,
    );
  });

  it("controller SIGKILLed at random moments during joins, 20 times: 0 duplicate subnets, 0 orphan leases, 0 nodes without underlay IP", async () => {
    const { store, controllers: [c] } = await setup([["blue", "10.101.0.0/16", 101], ["green", "10.102.0.0/16", 102]]);
    await c.kill();
    const kills = 20;
    const perRound = 4;
    const as: ReconnectingAgent[] = [];
    const worst = { duplicateSubnets: 0, orphanLeases: 0, nodesWithoutUnderlay: 0 };
    const leasesAtKills: number[] = [];
    for (let i = 0; i < kills; i++) {
      // New nodes join in every round, so each kill can land in the middle of registrations and allocations.
      as.push(...startAgents(c.address, perRound, ["blue", "green"], 1 + i * perRound));
      const roundStart = Date.now();
      c.start();
      // Kill while joins are being handled: after the first subnet of this round is leased, at a random moment.
      await waitFor("a join to be under way", () => c.logged("subnet leased", roundStart).length > 0, 20_000, 10).catch(() => undefined);
      await sleep(Math.random() * 300);
      await c.kill("SIGKILL");
      const inv = await invariants(store);
      leasesAtKills.push(inv.leases);
      worst.duplicateSubnets = Math.max(worst.duplicateSubnets, inv.duplicateSubnets);
      worst.orphanLeases = Math.max(worst.orphanLeases, inv.orphanLeases);
      worst.nodesWithoutUnderlay = Math.max(worst.nodesWithoutUnderlay, inv.nodesWithoutUnderlay);
    }
    c.start();
    await c.waitReady();
    const total = kills * perRound;
    await waitFor(`all ${total} agents to converge on both networks`, () => converged(as, "blue") && converged(as, "green"), 90_000, 100);
    const inv = await invariants(store);
    assert.deepEqual(worst, { duplicateSubnets: 0, orphanLeases: 0, nodesWithoutUnderlay: 0 }, "after every kill");
    assert.deepEqual([inv.duplicateSubnets, inv.orphanLeases, inv.nodesWithoutUnderlay, inv.leases], [0, 0, 0, 2 * total]);
    for (const a of as) {
      const rec = (await rawRecords(store, `nodes/${a.name}`))[0]?.json as { underlayIP: string; vtepMacs: Record<string, string> };
      assert.equal(rec.underlayIP, a.sim.request.underlayIp);
      assert.equal(rec.vtepMacs.blue, a.sim.request.vtepMacs.blue);
    }
    const mid = leasesAtKills.filter((n, i) => n < 2 * perRound * (i + 1)).length;
    row(
      `controller SIGKILLed ${kills} times at random moments during joins (0-300 ms after the round's first lease) while ${perRound} more agents join 2 networks each round`,
      "no duplicate subnet, no orphan lease, no node without its underlay IP at any moment; the next controller finishes the job",
      `checked after each kill: 0 / 0 / 0; ${mid} of ${kills} kills left allocations unfinished (leases per kill: ${leasesAtKills.join(", ")}); finally ${2 * total} leases, all ${total} agents converged, node records carry the declared IP and MACs`,
    );
  });

  it("deposed leader: SIGSTOP past its election TTL, the other replica takes over, SIGCONT: the old leader writes nothing leader-only", async () => {
    const { store, prefix, controllers: [c0, c1] } = await setup([["blue", "10.103.0.0/16", 103]], ["--leader-ttl", "2s", "--gc-interval", "200ms"], 2);
    await waitFor("a leader", async () => (await c0.metric("weft_controller_is_leader")) + (await c1.metric("weft_controller_is_leader")) === 1, 20_000, 100);
    const [leader, other] = (await c0.metric("weft_controller_is_leader")) === 1 ? [c0, c1] : [c1, c0];
    const leaderKv = await store.client.get(store.keys.leader()).exec();
    const oldLease = String(leaderKv.kvs[0].lease);
    // Garbage the leader must collect: leases of a node that does not exist, written all along.
    let n = 0;
    let writing = true;
    const garbage = (async () => {
      while (writing) {
        const subnet = `10.103.${++n % 250}.0/24`;
        await store.client.put(store.keys.lease("blue", subnet)).value(JSON.stringify({ network: "blue", subnet, node: "ghost", vtepIP: "", vtepMac: "", acquired: "", renewed: "" })).catch(() => undefined);
        await sleep(100);
      }
    })();
    await waitFor("the leader to collect garbage", () => leader.logged("garbage-collected lease").length > 0, 20_000, 50);
    leader.signal("SIGSTOP");
    await waitFor("the other replica to take over", async () => (await other.metric("weft_controller_is_leader")) === 1, 20_000, 100);
    await sleep(1_000);
    const resumedAt = Date.now();
    const fromRevision = (await currentRevision(store)) + 1;
    leader.signal("SIGCONT");
    await sleep(3_000);
    writing = false;
    await garbage;
    const toRevision = await currentRevision(store);
    const events = await history(store, fromRevision, toRevision);
    const leaderKeyWrites = events.filter((e) => e.key === store.keys.leader() && e.lease === oldLease);
    const gcDeletes = events.filter((e) => e.type === "delete" && e.key.startsWith(`${prefix}leases/`));
    const byOther = new Set(other.logged("garbage-collected lease").map((l) => l.key as string));
    const unexplained = gcDeletes.filter((e) => !byOther.has(e.key));
    const oldLeaderGc = leader.logged("garbage-collected lease", resumedAt);
    assert.equal(await leader.metric("weft_controller_is_leader"), 0, "the old leader knows it is deposed");
    assert.equal(leaderKeyWrites.length, 0, "no write of the leader key with the old leader's lease");
    assert.equal(oldLeaderGc.length, 0, "the old leader collected nothing after SIGCONT");
    assert.ok(gcDeletes.length > 0, "garbage was collected meanwhile (by the new leader)");
    assert.deepEqual(unexplained, [], "every lease deletion in etcd's history after SIGCONT is one the new leader made");
    row(
      "deposed leader: leader SIGSTOPped past its 2 s election TTL while garbage keeps appearing, the other replica takes over, SIGCONT",
      "a replica paused past its TTL stops counting as leader before acting (leadership valid 0.8 TTL after its last confirmation) and every leader-only etcd write compares the leader key",
      `etcd history rev ${fromRevision}-${toRevision}: ${gcDeletes.length} lease deletions, all made by the new leader; 0 by the old one; 0 leader-key writes with its lease; old leader reports is_leader 0`,
    );
  });

  it("lease expiry while the agent is away, then it returns: right underlay IP and MAC, peers correct", async () => {
    const { store, controllers: [c] } = await setup([["blue", "10.104.0.0/16", 104]], ["--lease-ttl", "5s"]);
    const as = startAgents(c.address, 3, ["blue"]);
    await waitFor("agents to converge", () => converged(as, "blue"), 30_000);
    const away = as[0];
    await away.stop();
    agents.splice(agents.indexOf(away), 1);
    await waitFor("the away node's records to expire", async () => (await rawRecords(store, `nodes/${away.name}`)).length === 0, 30_000, 200);
    await waitFor("peers to drop it", () => as.slice(1).every((a) => !a.sim.peers("blue").includes(away.name)), 20_000);
    const back = startAgents(c.address, 1, ["blue"], 1)[0];
    const all = [back, ...as.slice(1)];
    await waitFor("all to converge again", () => converged(all, "blue"), 30_000);
    const rec = (await rawRecords(store, `nodes/${back.name}`))[0].json as { underlayIP: string; vtepMacs: Record<string, string>; subnets: Record<string, string> };
    const lease = (await store.listLeases("blue")).find((l) => l.node === back.name)!;
    assert.equal(rec.underlayIP, back.sim.request.underlayIp);
    assert.equal(rec.vtepMacs.blue, back.sim.request.vtepMacs.blue);
    assert.equal(lease.vtepIP, back.sim.request.underlayIp);
    assert.equal(lease.vtepMac, back.sim.request.vtepMacs.blue);
    for (const a of as.slice(1)) {
      const p = a.sim.desired.networks.get("blue")!.peers.get(back.name)!;
      assert.deepEqual([p.underlayIp, p.vtepMac, p.subnet], [back.sim.request.underlayIp, back.sim.request.vtepMacs.blue, rec.subnets.blue]);
    }
    row(
      "node lease (5 s TTL) expires while its agent is away; the agent returns",
      "its records expire and peers drop it; on return the node record, its lease and every peer's entry carry its declared underlay IP and VTEP MAC",
      `expired and dropped by both peers; after return: node record, lease and both peers' entries = ${back.sim.request.underlayIp} / ${back.sim.request.vtepMacs.blue}`,
    );
  });

  it(`etcd down 10 s (${RECOVERY_ROUNDS}x): a change made right after etcd answers again reaches an agent`, async () => {
    const { store, controllers: [c] } = await setup([["blue", "10.105.0.0/16", 105]]);
    const networks = Array.from({ length: RECOVERY_ROUNDS }, (_, i) => `r${i}`);
    const [a] = startAgents(c.address, 1, ["blue", ...networks]);
    await waitFor("agent to converge", () => !!a.sim.subnet("blue"), 30_000);
    const times: number[] = [];
    const commits: number[] = [];
    for (const [i, name] of networks.entries()) {
      await etcd.restart(10_000, "SIGKILL");
      // etcd answers its health check again: the change is made at once, by another client (an operator's weftctl).
      const back = performance.now();
      await store.saveNetwork(netSpec(name, `10.${110 + i}.0.0/16`, 110 + i), () => {});
      const committed = performance.now();
      await waitFor(`network ${name} to reach the agent`, () => !!a.sim.subnet(name), 60_000, 5);
      commits.push((committed - back) / 1000);
      times.push((performance.now() - back) / 1000);
    }
    assert.equal(c.running, true);
    assert.equal((await c.fetch("/healthz")).status, 200, "healthy again once etcd is back");
    const q = quantiles(times);
    const qc = quantiles(commits);
    process.stdout.write(`      etcd back -> change at the agent (s): ${times.map((t) => t.toFixed(2)).join(", ")}; of which the change's own commit: ${commits.map((t) => t.toFixed(2)).join(", ")}\n`);
    row(
      `etcd down 10 s (SIGKILL, restarted), ${RECOVERY_ROUNDS} rounds: a network created right after etcd answers`,
      "reaches an agent (subnet leased, config pushed) within about 1 s of etcd's return: watch re-connect backoff ≤ 0.5 s, circuit breaker half-opens after 0.25 s, grpc reconnect backoff ≤ 0.5 s",
      `from etcd answering to the change at the agent: ${q.min.toFixed(2)} / ${q.median.toFixed(2)} / ${q.max.toFixed(2)} s (min/median/max), of which the writer's own commit ${qc.min.toFixed(2)} / ${qc.median.toFixed(2)} / ${qc.max.toFixed(2)} s`,
    );
  });
});
