// Makes one node's kernel match a NodeDesired: read back, diff, write only the
// difference in three batches, then NAT/filter rules and the CNI conflist.
import fs from "node:fs/promises";
import path from "node:path";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { buildConflist, removeConflist, writeConflist } from "../cni/index.js";
import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import { CommandError, Runner } from "./exec.js";
import { parseSave, removalScript, renderRules, restoreScript, rulesMatch } from "./iptables.js";
import { desiredCounts, effectiveMtu, isWeftLink, partialPeerCleanup, planChanges, planSize, projectState, vxlanName, wantedByNetwork, type KernelState, type Plan, type WantedByNetwork } from "./plan.js";
import { readKernel } from "./read.js";
import type { ApplyReason, ApplyReport, NodeDesired } from "./types.js";

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
  /** Attempts per apply before giving up (netlink can fail transiently, e.g. ENOBUFS). */
  attempts?: number;
  /** Runs the commands; tests inject failures by wrapping it. Default: a Runner for `netns`. */
  runner?: Runner;
}

interface Metrics {
  entries: Gauge;
  duration: Histogram;
  failures: Counter;
  repairs: Counter;
  lastSuccess: Gauge;
}

function registerMetrics(registry: Registry): Metrics {
  return {
    entries: new Gauge({ name: "weft_agent_kernel_entries", help: "Kernel objects Weft holds on this node, by kind", labelNames: ["kind"], registers: [registry] }),
    duration: new Histogram({ name: "weft_agent_apply_duration_seconds", help: "Time to read, diff and program the kernel", labelNames: ["reason"], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] }),
    failures: new Counter({ name: "weft_agent_apply_failures_total", help: "Applies that failed after retries", registers: [registry] }),
    repairs: new Counter({ name: "weft_agent_drift_repairs_total", help: "Kernel entries restored or removed by a periodic resync (drift), by kind", labelNames: ["kind"], registers: [registry] }),
    lastSuccess: new Gauge({ name: "weft_agent_last_apply_success_timestamp_seconds", help: "Unix time of the last successful apply", registers: [registry] }),
  };
}

export class Dataplane {
  private readonly run: Runner;
  private readonly log: Logger;
  private readonly metrics?: Metrics;
  private last?: NodeDesired;
  private forwardingChecked = false;
  private rulesWritten?: string;
  private queue: Promise<unknown> = Promise.resolve();
  /** What the kernel holds after the last successful apply (see programKernel). */
  private model?: KernelState;
  private offloadWarned = false;
  private readonly skippedWarned = new Set<string>();

  constructor(private readonly opts: DataplaneOptions) {
    this.run = opts.runner ?? new Runner(opts.netns);
    this.log = opts.log;
    this.metrics = opts.registry ? registerMetrics(opts.registry) : undefined;
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

  async apply(desired: NodeDesired, reason: ApplyReason = "update"): Promise<ApplyReport> {
    return this.serialized(() => this.applyNow(desired, reason));
  }

  /** Two overlapping applies would diff against each other's half-written state: one at a time. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async applyNow(desired: NodeDesired, reason: ApplyReason): Promise<ApplyReport> {
    const t0 = performance.now();
    const byKind: Record<string, number> = {};
    const add = (k: string, n: number) => n > 0 && (byKind[k] = (byKind[k] ?? 0) + n);
    const wanted = wantedByNetwork(desired);
    try {
      // NAT/filter rules and forwarding do not depend on the devices: they are done alongside.
      // allSettled: a failed rule write must not return while the kernel batches still run.
      const settled = await Promise.allSettled([this.programKernel(desired, reason, wanted), this.applyRules(desired, reason), this.applyForwarding(reason)]);
      for (const r of settled) if (r.status === "rejected") throw r.reason;
      const kernel = (settled[0] as PromiseFulfilledResult<Awaited<ReturnType<Dataplane["programKernel"]>>>).value;
      const rules = (settled[1] as PromiseFulfilledResult<number>).value;
      for (const [k, n] of Object.entries(kernel.byKind)) add(k, n);
      add("rule", rules);
      add("file", await this.applyConflist(desired, kernel.uplinkMtu));
      // Offload settings live and die with the device: only new devices (or a resync) need it.
      if (this.opts.disableTxChecksumOffload && ((kernel.byKind.device ?? 0) > 0 || reason === "resync" || !this.last)) await this.disableOffload(desired);
      this.warnSkippedPeers(desired, wanted);
      this.last = desired;
      this.updateEntryMetrics(desired, wanted);
      const changes = Object.values(byKind).reduce((a, b) => a + b, 0);
      if (reason === "resync") for (const [k, n] of Object.entries(byKind)) this.metrics?.repairs.inc({ kind: k }, n);
      const durationMs = performance.now() - t0;
      this.metrics?.duration.observe({ reason }, durationMs / 1000);
      this.metrics?.lastSuccess.set(Date.now() / 1000);
      return { changes, byKind, durationMs };
    } catch (err) {
      this.model = undefined;
      this.metrics?.failures.inc();
      throw err;
    }
  }

  /** Devices and per-peer entries: read, diff, three batches; re-read and retry when a batch fails. */
  private async programKernel(desired: NodeDesired, reason: ApplyReason, wanted: WantedByNetwork): Promise<{ uplinkMtu: number; byKind: Record<string, number> }> {
    const attempts = this.opts.attempts ?? 4;
    const backoff = new Backoff(50, 1000);
    let lastErr: unknown;
    // What the report counts: the difference found before the first write (a retry only sees what is still missing).
    let first: Plan | undefined;
    // An update diffs against what the last successful apply wrote (reading 5000 peers back
    // costs more than the whole diff); a resync, the first apply and every retry read the kernel.
    const model = reason === "update" ? this.model : undefined;
    this.model = undefined;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const actual = attempt === 1 && model ? model : await readKernel(this.run);
      const uplinkMtu = actual.mtus.get(desired.uplink);
      if (!uplinkMtu) throw new Error(`uplink ${desired.uplink} not found`);
      const plan = planChanges(desired, actual, uplinkMtu, wanted);
      first ??= plan;
      const done = () => {
        const next = projectState(desired, actual, uplinkMtu, wanted);
        // A device created without a desired MAC has one only the kernel knows: read it next time.
        this.model = [...next.links.values()].every((l) => l.kind !== "vxlan" || l.mac) ? next : undefined;
        return { uplinkMtu, byKind: planSize(first!) === 0 ? {} : first!.byKind };
      };
      if (planSize(plan) === 0) return done();
      try {
        await this.run.batch("ip", plan.ip1);
        await this.run.batch("bridge", plan.bridge);
        await this.run.batch("ip", plan.ip2);
        // Batches stop at the first failing line, so success means every line took effect.
        return done();
      } catch (err) {
        lastErr = err;
        this.log.warn({ attempt, err: String(err) }, "kernel batch failed; re-reading and retrying");
        await sleep(backoff.next());
      }
    }
    await this.removePartialPeers();
    throw lastErr;
  }

  /** network name -> MAC of its VXLAN device, for networks last applied whose device exists. */
  async vtepMacs(): Promise<Record<string, string>> {
    const links = await this.run.json<{ ifname: string; address: string }>("ip", "link", "show");
    const byName = new Map(links.map((l) => [l.ifname, l.address]));
    const out: Record<string, string> = {};
    for (const n of this.last?.networks ?? []) {
      const mac = byName.get(vxlanName(n.vni));
      if (mac) out[n.name] = mac.toLowerCase();
    }
    return out;
  }

  /** Removes every device, rule and file Weft created on this node. Idempotent. */
  async cleanup(): Promise<void> {
    return this.serialized(() => this.cleanupNow());
  }

  private async cleanupNow(): Promise<void> {
    this.model = undefined;
    const actual = await readKernel(this.run);
    const dels = [...actual.links.keys()].filter(isWeftLink).map((n) => `link del dev ${n}`);
    await this.run.batch("ip", dels);
    const save = await this.run.iptablesSave().catch(() => "");
    const saved = parseSave(save);
    if (saved.jumps.nat + saved.jumps.filter + saved.chains.nat.size + saved.chains.filter.size > 0) {
      await this.run.iptablesRestore(removalScript(saved, save));
    }
    await removeConflist(this.opts.cniConfDir);
    await fs.rm(path.join(this.opts.stateDir, "cni"), { recursive: true, force: true });
    this.last = undefined;
    this.log.info({ devices: dels.length }, "dataplane cleaned up");
  }

  /** After a successful apply the kernel holds exactly what was desired. */
  private updateEntryMetrics(desired: NodeDesired, wanted: WantedByNetwork): void {
    if (!this.metrics) return;
    for (const [kind, n] of Object.entries(desiredCounts(desired, wanted))) this.metrics.entries.set({ kind }, n);
  }

  /** Peers the plan left out (no MAC yet, or malformed): say so, once per change of that set. */
  private warnSkippedPeers(desired: NodeDesired, wantedBy: WantedByNetwork): void {
    for (const n of desired.networks) {
      if (n.mode !== "routed" || n.peers.length === 0) continue;
      const peers = wantedBy.get(n);
      if (peers && peers.size === n.peers.length) continue;
      const wanted = new Set([...(peers ?? new Map()).values()].map((p) => p.underlay));
      const skipped = n.peers.filter((p) => !wanted.has(p.underlayIp) && p.vtepMac).map((p) => p.nodeName);
      const key = `${n.name}:${skipped.join(",")}`;
      if (this.skippedWarned.size > 100) this.skippedWarned.clear();
      if (skipped.length > 0 && !this.skippedWarned.has(key)) {
        this.skippedWarned.add(key);
        this.log.warn({ network: n.name, nodes: skipped.slice(0, 20), count: skipped.length }, "peers with a malformed MAC, underlay IP or subnet are not programmed");
      }
    }
  }

  private async removePartialPeers(): Promise<void> {
    try {
      const { ip } = partialPeerCleanup(await readKernel(this.run));
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

  /** Rewrites Weft's chains when they differ from what the networks need; returns 1 if it wrote. */
  private async applyRules(desired: NodeDesired, reason: ApplyReason): Promise<number> {
    const want = renderRules(desired.networks.filter((n) => n.mode === "routed"));
    const key = JSON.stringify(want);
    // Updates that do not change the rules skip reading them; a resync always checks.
    if (reason === "update" && key === this.rulesWritten) return 0;
    const saved = parseSave(await this.run.iptablesSave());
    let wrote = 0;
    if (!rulesMatch(saved, want)) {
      await this.run.iptablesRestore(restoreScript(want, saved));
      wrote = 1;
    }
    this.rulesWritten = key;
    return wrote;
  }

  private async applyConflist(desired: NodeDesired, uplinkMtu: number): Promise<number> {
    const routed = desired.networks.filter((n) => n.mode === "routed");
    const def = routed.find((n) => n.isDefault) ?? (routed.length === 1 ? routed[0] : undefined);
    if (!def) return (await removeConflist(this.opts.cniConfDir)) ? 1 : 0;
    const conflist = buildConflist({ name: def.name, vni: def.vni, subnet: def.subnet, mtu: effectiveMtu(def, uplinkMtu) }, this.opts.stateDir);
    return (await writeConflist(this.opts.cniConfDir, conflist)) ? 1 : 0;
  }

  private async disableOffload(desired: NodeDesired): Promise<void> {
    for (const n of desired.networks.filter((x) => x.mode === "routed")) {
      if (!(await this.run.tryRun("ethtool", "-K", vxlanName(n.vni), "tx-checksum-ip-generic", "off")) && !this.offloadWarned) {
        this.offloadWarned = true;
        this.log.warn({ device: vxlanName(n.vni) }, "could not turn off tx checksum offload (is ethtool installed?); continuing with it on");
      }
    }
  }
}

export { CommandError };
