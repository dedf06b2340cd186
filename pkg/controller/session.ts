// One agent's Join stream: validates its Join, registers the node (with its
// leases, in one transaction), takes its acks, and hands the stream to the
// distributor, which writes everything the agent is sent.
import * as grpc from "@grpc/grpc-js";
import type { AgentMessage, ConfigUpdate, JoinRequest } from "../api/index.js";
import type { Logger } from "../log/index.js";
import type { NodeRegistration } from "../store/index.js";
import { normalizeMac } from "../ip/index.js";
import { syncNode, unchangedInView, type AllocatorDeps } from "./allocator.js";
import type { AppliedMarks } from "./applied-marks.js";
import type { Distributor, OutStream, Subscriber } from "./distributor.js";
import { NodeEndpoints } from "./endpoints.js";
import { joinRequestProblems } from "./join-request.js";
import { LeaseKeeper } from "./lease-keeper.js";
import type { ControllerMetrics } from "./metrics.js";
import type { Model } from "./model.js";
import type { ModelSync } from "./sync.js";

export type Call = grpc.ServerDuplexStream<AgentMessage, ConfigUpdate>;

export interface SessionDeps extends AllocatorDeps {
  model: Model;
  sync: ModelSync;
  metrics: ControllerMetrics;
  log: Logger;
  distributor: Distributor;
  applied: AppliedMarks;
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

export class StreamError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/** Sent updates not yet acknowledged kept for the push-latency metric; older ones are forgotten. */
const MAX_IN_FLIGHT_SAMPLES = 64;
/** How long deltas wait for the agent's ack of the previous update before going anyway (a few agent apply times). */
const ACK_WAIT_MS = 250;

export class Session implements Subscriber {
  node = "";
  labels: Record<string, string> = {};
  uplinkMtu = 0;
  readonly errors = new Map<string, string>();
  previousSubnets: Record<string, string> = {};
  leaseId = "0";
  /** Registered and handed to the distributor. */
  ready = false;
  closed = false;
  sentRevision = 0;
  ackedRevision = 0;
  private appliedRecorded = false;
  /** When the stream was handed to the distributor, until its snapshot is written (for the join-phase metric). */
  private addedAt = 0;
  /** The last registration the agent sent: re-registration (lease expiry, relabel) starts from it, not from the view. */
  private lastRequest?: JoinRequest;
  private inFlight: { revision: number; at: number }[] = [];
  private keeper?: LeaseKeeper;
  /** The node's endpoints as its agent reports them (created by the first Join). */
  endpoints?: NodeEndpoints;
  private ensuring?: Promise<void>;
  private ensureAgain = false;

  constructor(
    readonly call: Call,
    private readonly deps: SessionDeps,
    private readonly onClose: (s: Session) => void,
  ) {}

  get stream(): OutStream {
    return this.call as unknown as OutStream;
  }

  get log(): Logger {
    return this.deps.log;
  }

  /** Distributor hook: a message bringing the agent to `revision` was written. */
  sent(revision: number, snapshot: boolean, bytes: number): void {
    if (snapshot && this.addedAt > 0) {
      this.deps.metrics.joinSnapshot.observe((performance.now() - this.addedAt) / 1000);
      this.addedAt = 0;
    }
    this.sentRevision = Math.max(this.sentRevision, revision);
    if (this.inFlight.length >= MAX_IN_FLIGHT_SAMPLES) this.inFlight.shift();
    this.inFlight.push({ revision, at: performance.now() });
    (snapshot ? this.deps.metrics.snapshotsSent : this.deps.metrics.deltasSent).inc();
    this.deps.metrics.updateBytes.inc(bytes);
  }

  /** Cumulative: acknowledges everything up to `revision`. One histogram sample per ack. */
  ack(revision: number, error: string): void {
    if (error) this.log.warn({ node: this.node, revision, error }, "agent could not apply its config");
    if (revision <= this.ackedRevision) return;
    this.ackedRevision = revision;
    if (!error && !this.appliedRecorded && this.ready) {
      this.appliedRecorded = true;
      if (!this.deps.model.nodes.get(this.node)?.appliedAt) this.deps.applied.mark(this.node);
    }
    let oldest: number | undefined;
    while (this.inFlight.length > 0 && this.inFlight[0].revision <= revision) {
      const f = this.inFlight.shift()!;
      oldest ??= f.at;
    }
    if (oldest !== undefined) this.deps.metrics.pushLatency.observe((performance.now() - oldest) / 1000);
    this.deps.distributor.acked();
  }

  awaitingAck(): boolean {
    const oldest = this.inFlight[0];
    return !!oldest && this.ackedRevision < this.sentRevision && performance.now() - oldest.at < ACK_WAIT_MS;
  }

  get lag(): number {
    return Math.max(0, this.sentRevision - this.ackedRevision);
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
    this.keeper?.stop();
    this.endpoints?.stop();
    this.deps.distributor.remove(this);
    this.onClose(this);
  }

  private registration(): NodeRegistration {
    const req = this.lastRequest!;
    return {
      name: req.nodeName,
      underlayIP: req.underlayIp,
      labels: this.labels,
      agentVersion: req.agentVersion,
      uplinkMtu: req.uplinkMtu,
      vtepMacs: Object.fromEntries(Object.entries(req.vtepMacs).map(([n, m]) => [n, normalizeMac(m)!])),
    };
  }

  /**
   * Registration and leases in one write; waits until the view has it. True when the etcd lease was reused (not granted now).
   * `fromView`: a join whose registration the view already holds exactly writes nothing (see unchangedInView).
   */
  private async sync(onlyIfChanged: boolean, fromView = false): Promise<boolean> {
    const before = JSON.stringify([...this.errors]);
    const intent = {
      reg: this.registration(),
      member: this.deps.model.memberNetworks(this.labels),
      hints: this.previousSubnets,
      errors: this.errors,
    };
    const { revision, leaseId, fresh } = (fromView ? unchangedInView(this.deps.model, intent) : undefined) ?? (await syncNode(this.deps, intent, onlyIfChanged));
    this.leaseId = leaseId;
    if (revision > 0) await this.deps.sync.waitFor(revision);
    // A new etcd lease or other subnets: the stored endpoints may need rewriting or removing.
    this.endpoints?.recheck();
    if (this.ready && JSON.stringify([...this.errors]) !== before) this.deps.distributor.touch(this);
    return !fresh;
  }

  /**
   * Makes the node's leases match its membership (new networks, changed
   * selectors, a pool with room again). Serialised per session; a request
   * while one runs schedules one more run.
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
          if (!this.closed) await this.sync(true);
        } while (this.ensureAgain && !this.closed);
      } finally {
        this.ensuring = undefined;
      }
    })();
    return this.ensuring;
  }

  /** True when the view says the node lacks a subnet it should have (with no known reason) or holds one it should not. */
  needsLeaseWork(): boolean {
    const { model } = this.deps;
    const member = model.memberNetworks(this.labels);
    if (member.some((n) => !model.subnetOf(this.node, n.name) && !this.errors.has(n.name))) return true;
    const names = new Set(member.map((n) => n.name));
    for (const net of Object.keys(model.nodes.get(this.node)?.subnets ?? {})) if (!names.has(net) && model.networks.has(net)) return true;
    return false;
  }

  /** Re-registers with new labels (Kubernetes: the Node's labels changed); membership follows. */
  async relabel(labels: Record<string, string>): Promise<void> {
    if (!this.ready || this.closed || JSON.stringify(labels) === JSON.stringify(this.labels)) return;
    this.labels = labels;
    if (this.lastRequest) this.lastRequest = { ...this.lastRequest, labels };
    await this.sync(false);
    this.deps.distributor.touch(this);
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
    const receivedAt = performance.now();
    this.node = req.nodeName;
    this.endpoints ??= new NodeEndpoints(this.deps, this.node, () => this.leaseId);
    this.labels = labels;
    this.lastRequest = { ...req, labels };
    this.uplinkMtu = req.uplinkMtu;
    this.previousSubnets = req.previousSubnets;
    const reused = await this.sync(false, first);
    if (this.closed) return;
    if (first) {
      this.keeper = new LeaseKeeper(this.deps.store, this.deps.leaseTtlSeconds, this.log, () => this.leaseId, async () => void (await this.sync(false)), () => this.node);
      this.keeper.start(reused);
      this.ready = true;
      this.endpoints!.start();
      this.addedAt = performance.now();
      this.deps.metrics.joinRegister.observe((this.addedAt - receivedAt) / 1000);
      this.deps.distributor.add(this);
      this.log.info({ node: this.node, revision: this.deps.model.revision, underlay: req.underlayIp }, "agent joined");
    } else {
      this.deps.distributor.touch(this);
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
