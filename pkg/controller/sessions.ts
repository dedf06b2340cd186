// All Join streams of this replica: accepting them, routing their messages,
// and turning model changes into work for them (the distributor sends;
// sessions keep their leases in line with membership).
import * as grpc from "@grpc/grpc-js";
import type { AgentMessage } from "../api/index.js";
import type { Logger } from "../log/index.js";
import type { Store } from "../store/index.js";
import { limiter } from "./allocator.js";
import { AppliedMarks } from "./applied-marks.js";
import { Distributor, type DistributorOptions } from "./distributor.js";
import { LeasePool } from "./lease-pool.js";
import type { ControllerMetrics } from "./metrics.js";
import type { Change, Model } from "./model.js";
import { SubnetReservations } from "./reservations.js";
import { Session, StreamError, type Call, type SessionDeps } from "./session.js";
import type { ModelSync } from "./sync.js";

/** Registrations (etcd transactions) in flight at once; more joins wait their turn. */
const MAX_REGISTRATIONS_IN_FLIGHT = 64;

export interface SessionsOptions {
  store: Store;
  model: Model;
  sync: ModelSync;
  metrics: ControllerMetrics;
  log: Logger;
  leaseTtlSeconds: number;
  requireCertificateName: boolean;
  authorizeJoin?: SessionDeps["authorizeJoin"];
  nodeLabels?: SessionDeps["nodeLabels"];
  distributor?: Omit<DistributorOptions, "stats">;
}

export class Sessions {
  private readonly byNode = new Map<string, Session>();
  private readonly all = new Set<Session>();
  private readonly deps: SessionDeps;
  readonly distributor: Distributor;

  constructor(opts: SessionsOptions) {
    const { metrics } = opts;
    this.distributor = new Distributor(opts.model, { ...opts.distributor, stats: { lagResyncs: () => metrics.streamResyncs.inc() } });
    this.deps = {
      ...opts,
      distributor: this.distributor,
      applied: new AppliedMarks(opts.store, opts.log),
      limit: limiter(MAX_REGISTRATIONS_IN_FLIGHT),
      leases: new LeasePool(opts.store, opts.leaseTtlSeconds, opts.log),
      reservations: new SubnetReservations(),
    };
    metrics.sources.lag = () => this.lags();
    metrics.sources.buffered = () => this.distributor.bufferedBytes;
    metrics.sources.bufferedMax = () => this.distributor.maxBufferedBytes;
    metrics.sources.logBytes = () => this.distributor.logBytes;
  }

  get count(): number {
    return this.byNode.size;
  }

  private *lags(): Iterable<[string, number]> {
    for (const s of this.byNode.values()) if (s.ready) yield [s.node, s.lag];
  }

  /** grpc-js handler for Controller.Join. */
  readonly join = (call: Call): void => {
    const session = new Session(call, this.deps, (s) => this.remove(s));
    this.all.add(session);
    let chain = Promise.resolve();
    let queued = 0;
    call.on("data", (msg: AgentMessage) => {
      // An ack with nothing queued before it is handled at once: no promise per ack.
      if (queued === 0 && msg.msg?.$case === "ack" && session.node && !session.closed) {
        session.ack(msg.msg.value.revision, msg.msg.value.error);
        return;
      }
      queued++;
      chain = chain.then(() => this.handle(session, msg)).finally(() => queued--).catch((err) => {
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
      if (first && !session.closed) {
        this.deps.metrics.joins.inc({ result: "ok" });
        const older = this.byNode.get(session.node);
        this.byNode.set(session.node, session);
        older?.fail(new StreamError(grpc.status.ABORTED, "superseded by a newer stream from the same node"));
      }
    } else if (m?.$case === "ack") {
      if (!session.node) throw new StreamError(grpc.status.INVALID_ARGUMENT, "the first message must be join");
      session.ack(m.value.revision, m.value.error);
    } else if (m?.$case === "endpoints") {
      if (!session.endpoints) throw new StreamError(grpc.status.INVALID_ARGUMENT, "the first message must be join");
      session.endpoints.report(m.value);
    } else {
      throw new StreamError(grpc.status.INVALID_ARGUMENT, "empty message: expected join, ack or endpoints");
    }
  }

  private remove(s: Session): void {
    this.all.delete(s);
    if (this.byNode.get(s.node) === s) this.byNode.delete(s.node);
  }

  /** Tells the distributor what `change` did, and keeps every affected node's leases in line. */
  broadcast(change: Change): void {
    const { model } = this.deps;
    for (const node of change.nodes) {
      const s = this.byNode.get(node);
      // Removed by an operator or expired: the agent must register again.
      if (s?.ready && !model.nodes.has(node)) s.fail(new StreamError(grpc.status.UNAVAILABLE, "node registration was deleted; join again"));
    }
    this.distributor.onChange(change, (node) => {
      const s = this.byNode.get(node);
      return s?.ready ? s : undefined;
    });
    const ensure = (s: Session) => void s.ensureLeases().catch((err) => s.fail(err));
    if (change.networks.size > 0) {
      for (const s of this.byNode.values()) if (s.ready && !s.closed && (s.needsLeaseWork() || s.errors.size > 0)) ensure(s);
      return;
    }
    for (const [net, nodes] of change.peers) {
      for (const node of nodes) {
        const s = this.byNode.get(node);
        if (s?.ready && !s.closed && s.needsLeaseWork()) ensure(s);
      }
      // A lease changed in a network whose pool was full: maybe there is room now.
      for (const s of this.withErrors()) if (s.errors.has(net)) ensure(s);
    }
  }

  private *withErrors(): Iterable<Session> {
    for (const s of this.byNode.values()) if (s.ready && !s.closed && s.errors.size > 0) yield s;
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
    this.deps.applied.stop();
    this.deps.leases?.stop();
    for (const s of [...this.all]) s.fail(new StreamError(grpc.status.UNAVAILABLE, "controller shutting down"));
  }
}
