// Makes one node's kernel match what the agent wants, in Felix's shape: the
// desired state is held here (network specs, and per network a PeerTable —
// routed — or a SwitchedTable — switched — of desired and known-kernel
// entries), setters only mark keys pending, and a
// flush writes the commands for the pending keys. The kernel is read back and
// everything diffed only at start, on a resync, after any failure and when a
// network's spec changes (rare; devices, rules and the conflist hang off it).
import fs from "node:fs/promises";
import path from "node:path";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { buildConflist, cniDns, conflistName, syncConflists } from "../cni/index.js";
import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import { CommandError, Runner } from "./exec.js";
import { detectIptablesBackend, type BackendDetection, type IptablesBackendChoice } from "./iptables-backend.js";
import { parseSave, readOwnRules, removalScript, renderRules, restoreScript, rulesMatch } from "./iptables.js";
import { PeerTable } from "./peers.js";
import { effectiveMtu, isWeftLink, kernelPeersFor, kernelSwitchedFor, mergePlans, partialPeerCleanup, planDevices, planSize, switchedTableFor, vxlanName, type Plan } from "./plan.js";
import { readKernel } from "./read.js";
import type { EntryPlan, SwitchedTable } from "./switched.js";
import type { ApplyReason, ApplyReport, DataplanePort, EndpointProblem, EndpointSpec, NetworkSpec, NodeDesired, NodeSpec, PeerProblem, PeerSpec } from "./types.js";

export interface DataplaneOptions {
  log: Logger;
  /** Registers the weft_agent_* kernel metrics here when given. */
  registry?: Registry;
  /** Run every command in this named network namespace (tests, lab, benchmarks); absent: the current one. */
  netns?: string;
  /** Where 10-weft.conflist goes. */
  cniConfDir: string;
  /** host-local IPAM data goes under `${stateDir}/cni`. */
  stateDir: string;
  /** flannel#1279: turn off tx checksum offload on VXLAN devices (old kernels with --random-fully). */
  disableTxChecksumOffload?: boolean;
  /** Attempts per full apply before giving up (netlink can fail transiently, e.g. ENOBUFS). */
  attempts?: number;
  /** Runs the commands; tests inject failures by wrapping it. Default: a Runner for `netns`. */
  runner?: Runner;
  /** iptables backend: "auto" (default) detects the one holding the host's rules. */
  iptablesBackend?: IptablesBackendChoice;
  /** Timeout of every kernel command (default 10 s). */
  commandTimeoutMs?: number;
  /** The agent's --dns-domain: the search path conflists of dns networks hand to pods (absent: conflists carry no dns). */
  dnsDomain?: string;
}

interface Metrics {
  entries: Gauge;
  duration: Histogram;
  failures: Counter;
  repairs: Counter;
  lastSuccess: Gauge;
  backend: Gauge;
  timeouts: Counter;
}

function registerMetrics(registry: Registry, liveTimeouts: () => void): Metrics {
  return {
    entries: new Gauge({ name: "weft_agent_kernel_entries", help: "Kernel objects Weft holds on this node, by kind", labelNames: ["kind"], registers: [registry] }),
    duration: new Histogram({ name: "weft_agent_apply_duration_seconds", help: "Time to program the kernel, by reason (update: pending changes only; resync: read back and diff)", labelNames: ["reason"], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] }),
    failures: new Counter({ name: "weft_agent_apply_failures_total", help: "Applies that failed after retries", registers: [registry] }),
    repairs: new Counter({ name: "weft_agent_drift_repairs_total", help: "Kernel entries restored or removed by a periodic resync (drift), by kind", labelNames: ["kind"], registers: [registry] }),
    lastSuccess: new Gauge({ name: "weft_agent_last_apply_success_timestamp_seconds", help: "Unix time of the last successful apply", registers: [registry] }),
    backend: new Gauge({ name: "weft_agent_iptables_backend", help: "1 for the iptables backend Weft writes to (legacy or nft) and whether --random-fully is used", labelNames: ["backend", "random_fully"], registers: [registry] }),
    // Brought up to date on every scrape: a hung command must show while the apply is still stuck.
    timeouts: new Counter({ name: "weft_agent_kernel_command_timeouts_total", help: "Kernel commands killed after the command timeout", registers: [registry], collect: liveTimeouts }),
  };
}

const NOTHING: Omit<ApplyReport, "durationMs" | "full"> = { changes: 0, byKind: {} };

export class Dataplane implements DataplanePort {
  private readonly run: Runner;
  private readonly log: Logger;
  private readonly metrics?: Metrics;
  private node?: NodeSpec;
  private networks: NetworkSpec[] = [];
  private specKey = "";
  /** Per routed network's name. */
  private readonly tables = new Map<string, PeerTable>();
  /** Per switched network's name. */
  private readonly switched = new Map<string, SwitchedTable>();
  /** Start, any failure, a changed network spec: the next flush reads the kernel and diffs everything. */
  private needFull = true;
  private specsChanged = true;
  private forwardingChecked = false;
  private backend?: BackendDetection & { randomFully: boolean };
  private queue: Promise<unknown> = Promise.resolve();
  private offloadWarned = false;
  private timeoutsSeen = 0;
  /** Full applies done (start, resyncs, after failures); tests and benchmarks read it. */
  fullApplies = 0;

  constructor(private readonly opts: DataplaneOptions) {
    this.run = opts.runner ?? new Runner(opts.netns, { timeoutMs: opts.commandTimeoutMs });
    this.log = opts.log;
    this.metrics = opts.registry ? registerMetrics(opts.registry, () => this.updateTimeouts()) : undefined;
  }

  /** Interface holding the default route. */
  static async defaultUplink(netns?: string): Promise<string> {
    const routes = await new Runner(netns).json<{ dst: string; dev?: string }>("ip", "route", "show", "default");
    const dev = routes.find((r) => r.dev)?.dev;
    if (!dev) throw new Error("no default route: give --uplink");
    return dev;
  }

  static async interfaceInfo(name: string, netns?: string): Promise<{ mtu: number; ipv4?: string; mac: string }> {
    const [link] = await new Runner(netns).json<{ mtu: number; address: string; addr_info?: { family: string; local: string }[] }>("ip", "addr", "show", "dev", name);
    if (!link) throw new Error(`interface ${name} not found`);
    return { mtu: link.mtu, mac: link.address, ipv4: link.addr_info?.find((a) => a.family === "inet")?.local };
  }

  // --- desired state (synchronous, O(change)) ---

  setNetworks(node: NodeSpec, networks: NetworkSpec[]): void {
    const sorted = [...networks].sort((a, b) => a.name.localeCompare(b.name));
    // Network specs are a handful of small objects: comparing them whole is cheap (peers are never part of this).
    const key = JSON.stringify([node.uplink, node.underlayIp, sorted.map((n) => [n.name, n.vni, n.cidr, n.mode, n.mtu, n.port, n.natOutgoing, n.isolated, n.flood, n.isDefault, n.subnet, n.vtepMac ?? ""])]);
    if (key === this.specKey) return;
    this.specKey = key;
    this.node = { uplink: node.uplink, underlayIp: node.underlayIp };
    this.networks = sorted.map((n) => ({ ...n, vtepMac: n.vtepMac?.toLowerCase() }));
    const names = new Set(sorted.map((n) => n.name));
    for (const name of [...this.tables.keys()]) if (!names.has(name)) this.tables.delete(name);
    for (const name of [...this.switched.keys()]) if (!names.has(name)) this.switched.delete(name);
    for (const n of this.networks) {
      const dev = vxlanName(n.vni);
      const routed = this.tables.get(n.name);
      const sw = this.switched.get(n.name);
      // Peers move to a recreated table (a new VNI; a mode change); endpoints only between switched ones.
      const peers = routed?.specs() ?? sw?.peerSpecs() ?? [];
      if (n.mode === "routed") {
        this.switched.delete(n.name);
        if (routed && routed.dev === dev) continue;
        const fresh = new PeerTable(dev);
        for (const p of peers) fresh.set(p);
        this.tables.set(n.name, fresh);
        continue;
      }
      this.tables.delete(n.name);
      const fresh = switchedTableFor(n);
      if (sw && sw.dev === fresh.dev && sw.gateway === fresh.gateway && sw.cidr.base === fresh.cidr.base && sw.cidr.prefix === fresh.cidr.prefix) {
        sw.flood = n.flood;
        continue;
      }
      for (const p of peers) fresh.setPeer(p);
      for (const e of sw?.endpointSpecs() ?? []) fresh.setEndpoint(e);
      this.switched.set(n.name, fresh);
    }
    this.specsChanged = true;
  }

  setPeer(network: string, peer: PeerSpec): PeerProblem {
    const t = this.tables.get(network);
    if (t) return t.set(peer);
    const sw = this.switched.get(network);
    if (sw) return sw.setPeer(peer);
    return `network ${network} is not known to the dataplane`;
  }

  removePeer(network: string, nodeName: string): void {
    this.tables.get(network)?.remove(nodeName);
    this.switched.get(network)?.removePeer(nodeName);
  }

  clearPeers(network: string): void {
    this.tables.get(network)?.clear();
    this.switched.get(network)?.clearPeers();
  }

  setEndpoint(network: string, endpoint: EndpointSpec): EndpointProblem {
    const sw = this.switched.get(network);
    if (sw) return sw.setEndpoint(endpoint);
    // A routed network routes by subnet: its endpoints need no kernel entries.
    if (this.tables.has(network)) return undefined;
    return `network ${network} is not known to the dataplane`;
  }

  removeEndpoint(network: string, key: string): void {
    this.switched.get(network)?.removeEndpoint(key);
  }

  clearEndpoints(network: string): void {
    this.switched.get(network)?.clearEndpoints();
  }

  get dirty(): boolean {
    return this.needFull || this.specsChanged || [...this.tables.values()].some((t) => t.dirty) || [...this.switched.values()].some((t) => t.dirty);
  }

  peerCounts(): Record<string, number> {
    return Object.fromEntries([...[...this.tables].map(([name, t]) => [name, t.size]), ...[...this.switched].map(([name, t]) => [name, t.size])]);
  }

  /** Keys of a switched network's endpoints held as desired (programmed, or waiting for their node). */
  endpointsOf(network: string): string[] {
    return [...(this.switched.get(network)?.endpointKeys() ?? [])];
  }

  stuckSeconds(): number {
    return this.run.stuckSeconds();
  }

  /** Node names of a network's programmed peers (tests, the agent's view). */
  peersOf(network: string): string[] {
    return [...(this.tables.get(network)?.nodes() ?? this.switched.get(network)?.nodes() ?? [])];
  }

  // --- writing ---

  /** One-shot form: makes the desired state exactly `desired`, then flushes. O(peers); the agent uses the setters. */
  async apply(desired: NodeDesired, reason: ApplyReason = "update"): Promise<ApplyReport> {
    this.setNetworks(desired, desired.networks);
    for (const n of desired.networks) {
      const keep = new Set(n.peers.map((p) => p.nodeName));
      for (const node of this.peersOf(n.name)) if (!keep.has(node)) this.removePeer(n.name, node);
      for (const p of n.peers) this.setPeer(n.name, p);
      if (!n.endpoints) continue;
      const want = new Set(n.endpoints.map((e) => e.key));
      for (const key of this.endpointsOf(n.name)) if (!want.has(key)) this.removeEndpoint(n.name, key);
      for (const e of n.endpoints) this.setEndpoint(n.name, e);
    }
    return this.flush(reason);
  }

  flush(reason: ApplyReason = "update"): Promise<ApplyReport> {
    return this.serialized(() => this.flushNow(reason));
  }

  /** Two overlapping flushes would plan against each other's half-written state: one at a time. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async flushNow(reason: ApplyReason): Promise<ApplyReport> {
    const t0 = performance.now();
    if (!this.node) return { ...NOTHING, durationMs: 0, full: false };
    const full = reason === "resync" || this.needFull || this.specsChanged;
    try {
      const byKind = full ? await this.writeFull(reason) : await this.writeDelta();
      this.needFull = false;
      const changes = Object.values(byKind).reduce((a, b) => a + b, 0);
      if (reason === "resync") for (const [k, n] of Object.entries(byKind)) this.metrics?.repairs.inc({ kind: k }, n);
      const durationMs = performance.now() - t0;
      this.updateMetrics(reason, durationMs);
      return { changes, byKind, durationMs, full };
    } catch (err) {
      this.needFull = true;
      this.metrics?.failures.inc();
      this.updateTimeouts();
      throw err;
    }
  }

  private routedTables(): PeerTable[] {
    return this.networks.filter((n) => n.mode === "routed").map((n) => this.tables.get(n.name)!);
  }

  private switchedTables(): SwitchedTable[] {
    return this.networks.filter((n) => n.mode === "switched").map((n) => this.switched.get(n.name)!);
  }

  /** Only the pending keys, against the kernel model; on failure the full path re-reads and retries. */
  private async writeDelta(): Promise<Record<string, number>> {
    const plans: EntryPlan[] = [...this.routedTables().map((t) => t.plan()), ...this.switchedTables().map((t) => t.plan())];
    const plan = mergePlans(undefined, plans);
    if (planSize(plan) === 0) return {};
    try {
      await this.writeBatches(plan);
      for (const p of plans) p.commit();
      return nonZero(plan.byKind);
    } catch (err) {
      for (const p of plans) p.abandon();
      this.log.warn({ err: String(err) }, "kernel batch failed; reading the kernel back and retrying");
      return this.writeFull("update");
    }
  }

  private async writeBatches(plan: Plan): Promise<void> {
    await this.run.batch("ip", plan.ip1);
    await this.run.batch("bridge", plan.bridge);
    await this.run.batch("ip", plan.ip2);
  }

  /** Read back (scoped to Weft's devices), diff everything, write; re-read and retry when a batch fails. */
  private async writeFull(reason: ApplyReason): Promise<Record<string, number>> {
    this.fullApplies++;
    const node = this.node!;
    await this.ensureBackend();
    // Rules and forwarding do not depend on the devices: done alongside the first attempt.
    // allSettled: a failed rule write must not return while the kernel batches still run.
    const rules = Promise.allSettled([this.applyRules(reason), this.applyForwarding(reason)]);
    const attempts = this.opts.attempts ?? 4;
    const backoff = new Backoff(50, 1000);
    let lastErr: unknown;
    let first: Plan | undefined;
    let uplinkMtu = 0;
    let done = false;
    const phase = { readMs: 0, planMs: 0, writeMs: 0, rulesMs: 0 };
    let mark = performance.now();
    const lap = (k: keyof typeof phase) => {
      const now = performance.now();
      phase[k] += now - mark;
      mark = now;
    };
    for (let attempt = 1; attempt <= attempts && !done; attempt++) {
      let plans: EntryPlan[] = [];
      try {
        mark = performance.now();
        const actual = await readKernel(this.run, node.uplink);
        lap("readMs");
        uplinkMtu = actual.mtus.get(node.uplink) ?? 0;
        if (!uplinkMtu) throw new Error(`uplink ${node.uplink} not found`);
        const devices = planDevices(node, this.networks, actual, uplinkMtu);
        const tables = this.routedTables();
        for (const t of tables) {
          t.kernel = kernelPeersFor(t.dev, actual, devices);
          t.markAllDirty();
        }
        const switched = this.switchedTables();
        for (const t of switched) {
          t.kernel = kernelSwitchedFor(t, actual, devices);
          t.markAllDirty();
        }
        plans = [...tables.map((t) => t.plan()), ...switched.map((t) => t.plan())];
        const plan = mergePlans(devices, plans);
        first ??= plan;
        lap("planMs");
        await this.writeBatches(plan);
        for (const p of plans) p.commit();
        lap("writeMs");
        done = true;
      } catch (err) {
        for (const p of plans) p.abandon();
        lastErr = err;
        if (String(err).includes("not found") && !(err instanceof CommandError)) break;
        this.log.warn({ attempt, err: String(err) }, "kernel batch failed; re-reading and retrying");
        if (attempt < attempts) await sleep(backoff.next());
      }
    }
    const settled = await rules;
    lap("rulesMs");
    this.log.debug(Object.fromEntries(Object.entries(phase).map(([k, v]) => [k, Math.round(v)])), "full apply phases (rules run alongside; rulesMs is the wait after the kernel batches)");
    if (!done) {
      await this.removePartialPeers();
      throw lastErr;
    }
    for (const r of settled) if (r.status === "rejected") throw r.reason;
    const byKind = nonZero(first!.byKind);
    const wroteRules = (settled[0] as PromiseFulfilledResult<number>).value;
    if (wroteRules) byKind.rule = wroteRules;
    const files = await this.applyConflist(uplinkMtu);
    if (files) byKind.file = files;
    // Offload settings live and die with the device: a full apply (new devices, resync) sets them.
    if (this.opts.disableTxChecksumOffload) await this.disableOffload();
    this.specsChanged = false;
    return byKind;
  }

  /** Stops the long-lived batch processes; the kernel stays as programmed. */
  close(): void {
    this.run.close();
  }

  /** Starts the one-off start-up work (iptables backend detection) so the first flush need not wait for it. */
  prepare(): void {
    this.ensureBackend().catch((err) => this.log.warn({ err: String(err) }, "iptables backend detection failed; retried at the first apply"));
  }

  private backendDetection?: Promise<void>;

  private ensureBackend(): Promise<void> {
    if (this.backend) return Promise.resolve();
    this.backendDetection ??= this.detectBackend().finally(() => (this.backendDetection = undefined));
    return this.backendDetection;
  }

  private async detectBackend(): Promise<void> {
    const detected = await detectIptablesBackend(this.run, this.opts.iptablesBackend ?? "auto");
    this.run.iptablesBackend = detected.backend;
    const randomFully = await this.run.supportsRandomFully();
    this.backend = { ...detected, randomFully };
    this.metrics?.backend.set({ backend: detected.backend, random_fully: String(randomFully) }, 1);
    this.log.info({ backend: detected.backend, reason: detected.reason, rules: detected.rules, randomFully }, "iptables backend chosen");
    if (!randomFully) this.log.warn("this iptables has no MASQUERADE --random-fully; masquerading without it");
  }

  /** network name -> MAC of its VXLAN device, for known networks whose device exists. */
  async vtepMacs(): Promise<Record<string, string>> {
    const links = await this.run.json<{ ifname: string; address: string }>("ip", "link", "show", "type", "vxlan");
    const byName = new Map(links.map((l) => [l.ifname, l.address]));
    const out: Record<string, string> = {};
    for (const n of this.networks) {
      const mac = byName.get(vxlanName(n.vni));
      if (mac) out[n.name] = mac.toLowerCase();
    }
    return out;
  }

  /** Removes every device, rule and file Weft created on this node (in both iptables backends). Idempotent. */
  async cleanup(): Promise<void> {
    return this.serialized(() => this.cleanupNow());
  }

  private async cleanupNow(): Promise<void> {
    this.needFull = true;
    const links = [
      ...(await this.run.json<{ ifname: string }>("ip", "link", "show", "type", "vxlan")),
      ...(await this.run.json<{ ifname: string }>("ip", "link", "show", "type", "bridge")),
    ];
    const dels = links.map((l) => l.ifname).filter(isWeftLink).map((n) => `link del dev ${n}`);
    await this.run.batch("ip", dels);
    const backend = this.run.iptablesBackend;
    for (const b of ["legacy", "nft"] as const) {
      this.run.iptablesBackend = b;
      try {
        const save = await readOwnRules(this.run);
        const saved = parseSave(save);
        if (saved.jumps.nat + saved.jumps.filter + saved.chains.nat.size + saved.chains.filter.size > 0) await this.run.iptablesRestore(removalScript(saved, save));
      } catch (err) {
        this.log.debug({ backend: b, err: String(err) }, "no rules removed from this iptables backend");
      }
    }
    this.run.iptablesBackend = backend;
    await syncConflists(this.opts.cniConfDir, new Map());
    await fs.rm(path.join(this.opts.stateDir, "cni"), { recursive: true, force: true });
    for (const t of this.tables.values()) t.clear();
    for (const t of this.switched.values()) {
      t.clearPeers();
      t.clearEndpoints();
    }
    this.log.info({ devices: dels.length }, "dataplane cleaned up");
  }

  private updateMetrics(reason: ApplyReason, durationMs: number): void {
    this.updateTimeouts();
    if (!this.metrics) return;
    let neigh = 0;
    let fdb = 0;
    let route = 0;
    const tables = [...this.routedTables(), ...this.switchedTables()];
    for (const t of tables) {
      const c = t.counts();
      neigh += c.neigh;
      fdb += c.fdb;
      route += c.route;
    }
    this.metrics.entries.set({ kind: "device" }, 2 * tables.length);
    this.metrics.entries.set({ kind: "neigh" }, neigh);
    this.metrics.entries.set({ kind: "fdb" }, fdb);
    this.metrics.entries.set({ kind: "route" }, route);
    this.metrics.duration.observe({ reason }, durationMs / 1000);
    this.metrics.lastSuccess.set(Date.now() / 1000);
  }

  private updateTimeouts(): void {
    const n = this.run.stats.timeouts;
    if (n > this.timeoutsSeen) this.metrics?.timeouts.inc(n - this.timeoutsSeen);
    this.timeoutsSeen = n;
  }

  private async removePartialPeers(): Promise<void> {
    try {
      const { ip } = partialPeerCleanup(await readKernel(this.run, this.node!.uplink));
      if (ip.length > 0) {
        // -force semantics by hand: one line at a time so one failure does not keep the rest.
        for (const line of ip) await this.run.batch("ip", [line]).catch(() => undefined);
        this.log.warn({ removed: ip.length }, "removed half-applied peer entries after a failed apply");
      }
    } catch (err) {
      this.log.warn({ err: String(err) }, "could not check for half-applied peers");
    }
  }

  private async applyForwarding(reason: ApplyReason): Promise<void> {
    if (this.forwardingChecked && reason !== "resync") return;
    if ((await this.run.sysctl("net.ipv4.ip_forward")) !== "1") {
      await this.run.setSysctl("net.ipv4.ip_forward", "1");
      this.log.info("enabled net.ipv4.ip_forward");
    }
    this.forwardingChecked = true;
  }

  /** Rewrites Weft's chains when they differ from what the networks need; returns 1 if it wrote. Reads only Weft's chains. */
  private async applyRules(reason: ApplyReason): Promise<number> {
    void reason;
    await this.ensureBackend();
    // Rules work by CIDR: the same for routed and switched networks.
    const want = renderRules(this.networks, this.backend!.randomFully);
    const saved = parseSave(await readOwnRules(this.run));
    if (rulesMatch(saved, want)) return 0;
    await this.run.iptablesRestore(restoreScript(want, saved));
    return 1;
  }

  /** Every network the node programs is attachable: its own conflist (the default's is 10-weft.conflist). */
  private async applyConflist(uplinkMtu: number): Promise<number> {
    const nets = this.networks;
    const def = nets.find((n) => n.isDefault) ?? (nets.length === 1 ? nets[0] : undefined);
    const want = new Map<string, object>();
    for (const n of nets) {
      const resolver = n.dns && this.opts.dnsDomain ? { resolver: cniDns(n, this.opts.dnsDomain) } : {};
      want.set(conflistName(n.name, n === def), buildConflist({ name: n.name, vni: n.vni, mode: n.mode, cidr: n.cidr, subnet: n.subnet, mtu: effectiveMtu(n, uplinkMtu), ...resolver }, this.opts.stateDir));
    }
    return syncConflists(this.opts.cniConfDir, want);
  }

  private async disableOffload(): Promise<void> {
    for (const n of this.networks) {
      if (!(await this.run.tryRun("ethtool", "-K", vxlanName(n.vni), "tx-checksum-ip-generic", "off")) && !this.offloadWarned) {
        this.offloadWarned = true;
        this.log.warn({ device: vxlanName(n.vni) }, "could not turn off tx checksum offload (is ethtool installed?); continuing with it on");
      }
    }
  }
}

function nonZero(byKind: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(byKind).filter(([, n]) => n > 0));
}

export { CommandError };
