// A node's endpoints, from its agent's reports to etcd: the reports are
// checked and kept as the node's desired set; what etcd holds for the node
// comes from the view (Model.endpoints). Only the difference is written, for
// the endpoints that changed since the last write (Felix's shape: desired and
// known side by side, pending changes written, everything again after a
// failure or a new etcd lease). One writer per node stream; writes retried
// with backoff until they land.
import type { Endpoint, EndpointReport } from "../api/index.js";
import { checkEndpointFields } from "../cni/endpoint.js";
import { containsAddress, ipToInt, parseCidr } from "../ip/index.js";
import type { Logger } from "../log/index.js";
import { Backoff, sleep } from "../retry/index.js";
import type { EndpointRecord, EndpointWrite, Store, Versioned } from "../store/index.js";
import { nodeSlot } from "./endpoint-view.js";
import type { ControllerMetrics } from "./metrics.js";
import type { Model } from "./model.js";
import type { ModelSync } from "./sync.js";

/** More endpoints than a node can have pods (kubelet's max-pods is 110 by default); past it reports are cut, counted and logged. */
export const MAX_ENDPOINTS_PER_NODE = 4096;

/** A reported endpoint as the record to store, or its problems (each naming the field). */
export function reportedEndpoint(e: Endpoint, node: string, at = "endpoint"): EndpointRecord | string[] {
  const p: string[] = [];
  const slash = e.id.indexOf("/");
  if (slash <= 0) p.push(`id: "${e.id.slice(0, 80)}" is not <containerId>/<ifName>`);
  const fields = checkEndpointFields({ containerId: e.id.slice(0, slash), ifName: e.id.slice(slash + 1), network: e.network, name: e.name, aliases: e.aliases, ips: e.ips, mac: e.mac }, slash > 0 ? p : []);
  if (p.length > 0) return p.map((s) => `${at}.${s}`);
  return { id: fields.id, network: fields.network, node, name: fields.name, aliases: fields.aliases, ips: fields.ips, mac: fields.mac };
}

/** Why the view refuses the endpoint on its node: no such network, no subnet of it, an address outside its CIDR. */
export function membershipProblem(model: Model, e: EndpointRecord): string | undefined {
  const spec = model.networks.get(e.network);
  if (!spec) return `network: "${e.network}" does not exist`;
  if (!model.subnetOf(e.node, e.network)) return `network: node ${e.node} holds no subnet of "${e.network}"`;
  const cidr = parseCidr(spec.cidr);
  const outside = e.ips.findIndex((ip) => !containsAddress(cidr, ipToInt(ip)));
  if (outside >= 0) return `ips[${outside}]: ${e.ips[outside]} is outside the network's CIDR ${spec.cidr}`;
  return undefined;
}

function sameStored(a: EndpointRecord, b: EndpointRecord): boolean {
  return JSON.stringify([a.name, a.aliases, a.ips, a.mac]) === JSON.stringify([b.name, b.aliases, b.ips, b.mac]);
}

/**
 * The etcd write that makes `slots` (network/id) match: a slot holds the
 * desired endpoint when it is the endpoint's network and `allowed` says yes,
 * nothing otherwise. A stored endpoint bound to another etcd lease is written again. Pure.
 */
export function planEndpointWrite(
  slots: Iterable<string>,
  desired: ReadonlyMap<string, EndpointRecord>,
  held: ReadonlyMap<string, Versioned<EndpointRecord>>,
  leaseId: string,
  allowed: (e: EndpointRecord) => boolean,
): EndpointWrite {
  const w: EndpointWrite = { puts: [], deletes: [] };
  for (const slot of slots) {
    const slash = slot.indexOf("/");
    const network = slot.slice(0, slash);
    const id = slot.slice(slash + 1);
    const d = desired.get(id);
    const want = d && d.network === network && allowed(d) ? d : undefined;
    const have = held.get(slot);
    if (want && (!have || have.lease !== leaseId || !sameStored(have.value, want))) w.puts.push({ record: want, lease: leaseId });
    else if (!want && have) w.deletes.push({ network, node: have.value.node, id });
  }
  return w;
}

export interface NodeEndpointsDeps {
  store: Store;
  model: Model;
  sync: ModelSync;
  metrics: ControllerMetrics;
  log: Logger;
}

/** One node's endpoints on the controller holding its stream. */
export class NodeEndpoints {
  private readonly desired = new Map<string, EndpointRecord>();
  /** Slots (network/id) to bring in line; bounded by the node's desired plus stored endpoints. */
  private readonly dirty = new Set<string>();
  /** Why an endpoint is not stored, as last logged (logged once per reason). */
  private readonly refused = new Map<string, string>();
  private running = false;
  private started = false;
  private stopped = false;
  private readonly backoff = new Backoff(100, 5_000);
  private readonly abort = new AbortController();

  constructor(
    private readonly deps: NodeEndpointsDeps,
    private readonly node: string,
    /** The etcd lease the node's keys are bound to now. */
    private readonly leaseId: () => string,
  ) {}

  /** Applies a report from the agent: a full one replaces the node's set, a delta changes it. */
  report(r: EndpointReport): void {
    const { log, metrics } = this.deps;
    if (r.full) {
      for (const [id, e] of this.desired) this.dirty.add(nodeSlot(e.network, id));
      for (const slot of this.deps.model.endpoints.ofNode(this.node).keys()) this.dirty.add(slot);
      this.desired.clear();
    }
    for (const id of r.removed) {
      const old = this.desired.get(id);
      if (old) {
        this.desired.delete(id);
        this.dirty.add(nodeSlot(old.network, id));
      }
      // Stored by an earlier stream but unknown to this one: found through the view.
      for (const [slot, e] of this.deps.model.endpoints.ofNode(this.node)) if (e.value.id === id) this.dirty.add(slot);
    }
    const bad: string[] = [];
    r.endpoints.forEach((e, i) => {
      const rec = reportedEndpoint(e, this.node, `endpoints[${i}]`);
      if (Array.isArray(rec)) {
        metrics.endpointsRejected.inc({ reason: "invalid" });
        bad.push(...rec);
        return;
      }
      const old = this.desired.get(rec.id);
      if (!old && this.desired.size >= MAX_ENDPOINTS_PER_NODE) {
        metrics.endpointsRejected.inc({ reason: "too_many" });
        bad.push(`endpoints[${i}]: the node has ${MAX_ENDPOINTS_PER_NODE} endpoints already`);
        return;
      }
      if (old && old.network !== rec.network) this.dirty.add(nodeSlot(old.network, rec.id));
      this.desired.set(rec.id, rec);
      this.dirty.add(nodeSlot(rec.network, rec.id));
    });
    if (bad.length > 0) log.warn({ node: this.node, problems: bad.slice(0, 20), count: bad.length }, "reported endpoints skipped");
    this.kick();
  }

  /** The node's registration is written: writing may begin. */
  start(): void {
    this.started = true;
    this.kick();
  }

  /** Everything again: the etcd lease or the node's subnets may have changed. */
  recheck(): void {
    for (const [id, e] of this.desired) this.dirty.add(nodeSlot(e.network, id));
    for (const slot of this.deps.model.endpoints.ofNode(this.node).keys()) this.dirty.add(slot);
    this.kick();
  }

  /** The stream ended: the stored endpoints stay (bound to the node's lease), nothing more is written. */
  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  get size(): number {
    return this.desired.size;
  }

  private allowed = (e: EndpointRecord): boolean => {
    const why = membershipProblem(this.deps.model, e);
    const k = `${e.network}/${e.id}`;
    if (!why) {
      this.refused.delete(k);
      return true;
    }
    if (this.refused.get(k) !== why) {
      if (this.refused.size < MAX_ENDPOINTS_PER_NODE) this.refused.set(k, why);
      this.deps.metrics.endpointsRejected.inc({ reason: "not_member" });
      this.deps.log.warn({ node: this.node, endpoint: e.id, problem: why }, "reported endpoint not stored");
    }
    return false;
  };

  private kick(): void {
    if (!this.started || this.stopped || this.running || this.dirty.size === 0) return;
    this.running = true;
    void this.run().finally(() => {
      this.running = false;
      this.kick();
    });
  }

  private async run(): Promise<void> {
    const { store, sync, model, log, metrics } = this.deps;
    while (!this.stopped && this.dirty.size > 0) {
      const slots = [...this.dirty];
      this.dirty.clear();
      const w = planEndpointWrite(slots, this.desired, model.endpoints.ofNode(this.node), this.leaseId(), this.allowed);
      if (w.puts.length === 0 && w.deletes.length === 0) continue;
      try {
        const revision = await store.writeEndpoints(w);
        // The next diff must see this write in the view, or it would write it again.
        await sync.waitFor(revision);
        this.backoff.reset();
        log.debug({ node: this.node, puts: w.puts.length, deletes: w.deletes.length, revision }, "endpoints written");
      } catch (err) {
        if (this.stopped) return;
        metrics.endpointWriteFailures.inc();
        for (const s of slots) this.dirty.add(s);
        const delay = this.backoff.next();
        log.warn({ node: this.node, err: String(err), retryInMs: Math.round(delay) }, "writing endpoints failed; retrying");
        await sleep(delay, this.abort.signal);
      }
    }
  }
}
