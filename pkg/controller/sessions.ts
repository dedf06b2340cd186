import * as grpc from "@grpc/grpc-js";
import type { AgentMessage, ConfigUpdate, JoinRequest } from "../api/index.js";
import type { Logger } from "../log/index.js";
import { NodeGoneError, PoolExhaustedError, type Store } from "../store/index.js";
import { normalizeMac } from "../ip/index.js";
import { joinRequestProblems } from "./join-request.js";
import type { ControllerMetrics } from "./metrics.js";
import type { Change, Model } from "./model.js";
import type { ModelSync } from "./sync.js";
import { AgentView, type NodeContext } from "./view.js";

/** A stream whose client stops reading is dropped past this much unsent data; it reconnects and gets a snapshot. */
const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

export interface SessionDeps {
  store: Store;
  model: Model;
  sync: ModelSync;
  metrics: ControllerMetrics;
  log: Logger;
  leaseTtlSeconds: number;
  /** With mTLS: the client certificate's CN must equal the node name. */
  requireCertificateName: boolean;
  /** Kubernetes mode: checks the stream's credentials (ServiceAccount token) for the node; returns why it is refused. */
  authorizeJoin?: (metadata: grpc.Metadata, node: string) => Promise<string | undefined>;
  /**
   * Where node labels come from (Kubernetes mode: the Node object, which also
   * must exist). Returns the labels to use, or a string saying why the node may not join.
   */
  nodeLabels?: (node: string, fromAgent: Record<string, string>) => Record<string, string> | string;
}

type Call = grpc.ServerDuplexStream<AgentMessage, ConfigUpdate>;

class StreamError extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
  }
}

/** One agent's Join stream. */
class Session implements NodeContext {
  node = "";
  labels: Record<string, string> = {};
  uplinkMtu = 0;
  readonly errors = new Map<string, string>();
  readonly view = new AgentView();
  previousSubnets: Record<string, string> = {};
  leaseId = "0";
  /** Snapshot sent; deltas may follow. */
  ready = false;
  closed = false;
  sentRevision = 0;
  ackedRevision = 0;
  private appliedRecorded = false;
  private lastRequest?: JoinRequest;
  /** Send times of updates not yet acknowledged, oldest first. */
  private inFlight: { revision: number; at: number }[] = [];
  private renewTimer?: NodeJS.Timeout;
  private ensuring?: Promise<void>;
  private ensureAgain = false;

  constructor(
    readonly call: Call,
    private readonly deps: SessionDeps,
    private readonly onClose: (s: Session) => void,
  ) {}

  get log(): Logger {
    return this.deps.log;
  }

  send(update: ConfigUpdate): void {
    if (this.closed) return;
    if (this.call.writableLength > MAX_BUFFERED_BYTES) {
      this.fail(new StreamError(grpc.status.RESOURCE_EXHAUSTED, "agent is not reading its stream; reconnect for a fresh snapshot"));
      return;
    }
    this.call.write(update);
    this.sentRevision = Math.max(this.sentRevision, update.revision);
    this.inFlight.push({ revision: update.revision, at: performance.now() });
    this.updateLag();
  }

  ack(revision: number, error: string): void {
    if (error) this.log.warn({ node: this.node, revision, error }, "agent could not apply its config");
    if (revision <= this.ackedRevision) return;
    this.ackedRevision = revision;
    if (!error && !this.appliedRecorded && this.ready) {
      this.appliedRecorded = true;
      if (!this.deps.model.nodes.get(this.node)?.appliedAt) {
        this.deps.store.markNodeApplied(this.node).catch((err) => {
          this.appliedRecorded = false;
          this.log.warn({ node: this.node, err: String(err) }, "could not record that the node applied its config");
        });
      }
    }
    const now = performance.now();
    while (this.inFlight.length > 0 && this.inFlight[0].revision <= revision) {
      this.deps.metrics.pushLatency.observe((now - this.inFlight.shift()!.at) / 1000);
    }
    this.updateLag();
  }

  private updateLag(): void {
    this.deps.metrics.nodeLag.set({ node: this.node }, Math.max(0, this.sentRevision - this.ackedRevision));
  }

  /** Ends the stream with an error status. */
  fail(err: unknown): void {
    if (this.closed) return;
    const code = err instanceof StreamError ? err.code : grpc.status.UNAVAILABLE;
    const details = err instanceof Error ? err.message : String(err);
    this.log.info({ node: this.node, code: grpc.status[code], details }, "closing agent stream");
    this.close();
    this.call.emit("error", { code, details, metadata: new grpc.Metadata() });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.renewTimer);
    if (this.node) this.deps.metrics.nodeLag.remove({ node: this.node });
    this.onClose(this);
  }

  /** Keeps the node's etcd lease alive while the agent is connected. */
  scheduleRenewal(): void {
    const period = Math.min(5 * 60_000, Math.max(500, (this.deps.leaseTtlSeconds * 1000) / 3));
    this.renewTimer = setTimeout(async () => {
      if (this.closed) return;
      try {
        const ttl = await this.deps.store.keepAlive(this.leaseId);
        if (ttl <= 0) {
          // Expired anyway (e.g. etcd was unreachable longer than the TTL): register again.
          this.log.warn({ node: this.node }, "node lease expired while connected; registering again");
          await this.register(undefined);
          this.ensureLeases();
        }
      } catch (err) {
        this.log.warn({ node: this.node, err: String(err) }, "lease renewal failed; will retry");
      }
      if (!this.closed) this.scheduleRenewal();
    }, period);
  }

  /** Records the node in etcd; `req` undefined re-registers from what the view knows. */
  async register(req: JoinRequest | undefined): Promise<number> {
    const current = this.deps.model.nodes.get(this.node);
    const reg = req
      ? {
          name: req.nodeName,
          underlayIP: req.underlayIp,
          labels: req.labels,
          agentVersion: req.agentVersion,
          uplinkMtu: req.uplinkMtu,
          vtepMacs: Object.fromEntries(Object.entries(req.vtepMacs).map(([n, m]) => [n, normalizeMac(m)!])),
        }
      : {
          name: this.node,
          underlayIP: current?.underlayIP ?? "",
          labels: this.labels,
          agentVersion: current?.agentVersion ?? "",
          uplinkMtu: this.uplinkMtu,
          vtepMacs: current?.vtepMacs ?? {},
        };
    const { leaseId, revision } = await this.deps.store.registerNode(reg, this.deps.leaseTtlSeconds);
    this.leaseId = leaseId;
    return revision;
  }

  /**
   * Makes the node's leases match its membership: allocate where it has none
   * (hint: the subnet it had before), release where it no longer belongs.
   * Serialised per session; a request while one runs schedules one more run.
   */
  ensureLeases(): Promise<void> {
    if (this.ensuring) {
      this.ensureAgain = true;
      return this.ensuring;
    }
    this.ensuring = (async () => {
      try {
        do {
          this.ensureAgain = false;
          await this.ensureOnce();
        } while (this.ensureAgain && !this.closed);
      } finally {
        this.ensuring = undefined;
      }
    })();
    return this.ensuring;
  }

  private async ensureOnce(): Promise<void> {
    const { model, store, metrics, sync } = this.deps;
    const member = model.memberNetworks(this.labels);
    let revision = 0;
    for (const spec of member) {
      if (this.closed) return;
      if (model.subnetOf(this.node, spec.name)) {
        this.errors.delete(spec.name);
        continue;
      }
      try {
        const res = await store.allocateSubnet({ node: this.node, network: spec, taken: model.takenSubnets(spec.name), hint: this.previousSubnets[spec.name] });
        if (res.created) {
          metrics.allocations.inc({ network: spec.name });
          this.log.info({ node: this.node, network: spec.name, subnet: res.subnet }, "subnet leased");
        }
        this.errors.delete(spec.name);
        revision = Math.max(revision, res.revision);
      } catch (err) {
        if (err instanceof NodeGoneError) throw err;
        const pool = err instanceof PoolExhaustedError;
        metrics.allocationFailures.inc({ network: spec.name, reason: pool ? "pool_exhausted" : "error" });
        const message = pool ? (err as Error).message : `allocation failed: ${(err as Error).message}`;
        if (this.errors.get(spec.name) !== message) this.log.error({ node: this.node, network: spec.name, err: message }, "no subnet for node");
        this.errors.set(spec.name, message);
        if (!pool) throw err;
      }
    }
    const memberNames = new Set(member.map((n) => n.name));
    for (const net of Object.keys(model.nodes.get(this.node)?.subnets ?? {})) {
      if (!memberNames.has(net) && model.networks.has(net)) {
        await store.releaseSubnet(this.node, net);
        this.log.info({ node: this.node, network: net }, "subnet released: node no longer matches the network's nodeSelector");
      }
    }
    for (const net of this.errors.keys()) if (!memberNames.has(net)) this.errors.delete(net);
    if (revision > 0) await sync.waitFor(revision);
  }

  /** Networks the node should have a subnet in but has none, with no known reason. */
  missingLeases(): boolean {
    const { model } = this.deps;
    return model.memberNetworks(this.labels).some((n) => !model.subnetOf(this.node, n.name) && !this.errors.has(n.name));
  }

  /** Re-registers with new labels (Kubernetes: the Node's labels changed); membership follows. */
  async relabel(labels: Record<string, string>): Promise<void> {
    if (!this.ready || this.closed || JSON.stringify(labels) === JSON.stringify(this.labels)) return;
    this.labels = labels;
    if (this.lastRequest) this.lastRequest = { ...this.lastRequest, labels };
    await this.register(this.lastRequest);
    await this.ensureLeases();
  }

  async handleJoin(req: JoinRequest): Promise<void> {
    const problems = joinRequestProblems(req);
    if (problems.length > 0) throw new StreamError(grpc.status.INVALID_ARGUMENT, problems.join("; "));
    if (this.deps.requireCertificateName) {
      const cn = certificateName(this.call);
      if (cn !== req.nodeName) {
        throw new StreamError(grpc.status.PERMISSION_DENIED, `client certificate is for node "${cn ?? "(none)"}", not "${req.nodeName}"`);
      }
    }
    const refused = await this.deps.authorizeJoin?.(this.call.metadata, req.nodeName);
    if (refused) throw new StreamError(grpc.status.PERMISSION_DENIED, refused);
    if (this.node && this.node !== req.nodeName) {
      throw new StreamError(grpc.status.INVALID_ARGUMENT, `node_name: a stream stays one node ("${this.node}"), got "${req.nodeName}"`);
    }
    const labels = this.deps.nodeLabels ? this.deps.nodeLabels(req.nodeName, req.labels) : req.labels;
    if (typeof labels === "string") throw new StreamError(grpc.status.FAILED_PRECONDITION, labels);
    const first = !this.node;
    const labelsChanged = JSON.stringify(this.labels) !== JSON.stringify(labels);
    this.node = req.nodeName;
    this.labels = labels;
    this.lastRequest = { ...req, labels };
    this.uplinkMtu = req.uplinkMtu;
    this.previousSubnets = req.previousSubnets;
    const revision = await this.register(req);
    if (first || labelsChanged) await this.ensureLeases();
    await this.deps.sync.waitFor(revision);
    if (first) {
      this.scheduleRenewal();
      this.ready = true;
      this.send(this.view.snapshot(this.deps.model, this));
      this.log.info({ node: this.node, revision: this.deps.model.revision, underlay: req.underlayIp, networks: this.view.knownNetworks() }, "agent joined; snapshot sent");
    }
  }
}

function certificateName(call: Call): string | undefined {
  try {
    const ctx = call.getAuthContext();
    const cn = ctx?.sslPeerCertificate?.subject?.CN;
    return Array.isArray(cn) ? cn[0] : cn;
  } catch {
    return undefined;
  }
}

/** All Join streams of this replica, and the fan-out of model changes to them. */
export class Sessions {
  private readonly byNode = new Map<string, Session>();
  private readonly all = new Set<Session>();

  constructor(private readonly deps: SessionDeps) {}

  get count(): number {
    return this.byNode.size;
  }

  /** grpc-js handler for Controller.Join. */
  readonly join = (call: Call): void => {
    const session = new Session(call, this.deps, (s) => this.remove(s));
    this.all.add(session);
    let chain = Promise.resolve();
    call.on("data", (msg: AgentMessage) => {
      chain = chain.then(() => this.handle(session, msg)).catch((err) => {
        if (!session.closed) {
          if (!(err instanceof StreamError)) this.deps.log.warn({ node: session.node, err: String(err) }, "join failed");
          this.deps.metrics.joins.inc({ result: err instanceof StreamError ? grpc.status[err.code].toLowerCase() : "error" });
          session.fail(err);
        }
      });
    });
    const end = () => {
      if (!session.closed) {
        this.deps.log.info({ node: session.node }, "agent stream ended");
        session.close();
      }
    };
    call.on("end", () => {
      end();
      call.end();
    });
    call.on("cancelled", end);
    call.on("error", end);
    call.on("close", end);
  };

  private async handle(session: Session, msg: AgentMessage): Promise<void> {
    if (session.closed) return;
    const malformed = (msg as { malformed?: string }).malformed;
    if (malformed !== undefined) throw new StreamError(grpc.status.INVALID_ARGUMENT, `malformed message: ${malformed}`);
    const m = msg.msg;
    if (m?.$case === "join") {
      const first = !session.node;
      await session.handleJoin(m.value);
      if (first) {
        this.deps.metrics.joins.inc({ result: "ok" });
        const older = this.byNode.get(session.node);
        this.byNode.set(session.node, session);
        older?.fail(new StreamError(grpc.status.ABORTED, "superseded by a newer stream from the same node"));
      }
    } else if (m?.$case === "ack") {
      if (!session.node) throw new StreamError(grpc.status.INVALID_ARGUMENT, "the first message must be join");
      session.ack(m.value.revision, m.value.error);
    } else {
      throw new StreamError(grpc.status.INVALID_ARGUMENT, "empty message: expected join or ack");
    }
  }

  private remove(s: Session): void {
    this.all.delete(s);
    if (this.byNode.get(s.node) === s) this.byNode.delete(s.node);
  }

  /** Tells every ready session what `change` means for it. */
  broadcast(change: Change): void {
    const { model } = this.deps;
    // Most agents get the same peer-only delta; sharing one object lets it be encoded once.
    const shared = new Map<string, ConfigUpdate>();
    for (const s of this.byNode.values()) {
      if (!s.ready || s.closed) continue;
      if (change.nodes.has(s.node) && !model.nodes.has(s.node)) {
        // Removed by an operator or expired: the agent must register again.
        s.fail(new StreamError(grpc.status.UNAVAILABLE, "node registration was deleted; join again"));
        continue;
      }
      let update = s.view.delta(model, s, change);
      if (update && update.networks.length === 0 && update.removedNetworks.length === 0) {
        const key = update.peerUpdates.map((u) => `${u.network}/${u.peer?.nodeName}/${u.removed ? "-" : "+"}`).join(",");
        update = shared.get(key) ?? (shared.set(key, update), update);
      }
      if (update) s.send(update);
      if ((change.networks.size > 0 || change.peers.size > 0 || change.nodes.has(s.node)) && s.missingLeases()) {
        void s.ensureLeases().catch((err) => s.fail(err));
      } else if (s.errors.size > 0 && [...s.errors.keys()].some((n) => change.peers.has(n))) {
        // A lease changed in a network whose pool was full: maybe there is room now.
        void s.ensureLeases().catch((err) => s.fail(err));
      }
    }
  }

  /** Applies new labels to a node's session, if it has one here. */
  relabel(node: string, labels: Record<string, string>): void {
    const s = this.byNode.get(node);
    if (s) s.relabel(labels).catch((err) => s.fail(err));
  }

  /** Ends a node's stream (Kubernetes: its Node object was deleted). */
  disconnect(node: string, why: string): void {
    this.byNode.get(node)?.fail(new StreamError(grpc.status.FAILED_PRECONDITION, why));
  }

  /** Ends every stream (controller shutdown): agents fail over to another replica. */
  closeAll(): void {
    for (const s of [...this.all]) s.fail(new StreamError(grpc.status.UNAVAILABLE, "controller shutting down"));
  }
}
