import os from "node:os";
import * as grpc from "@grpc/grpc-js";
import { AgentMessage, ConfigUpdate, ControllerService } from "../api/index.js";
import { newLogger, type Logger } from "../log/index.js";
import { newRegistry, startMetricsServer, type MetricsServer, type Registry } from "../metrics/index.js";
import { Store, type EtcdTls } from "../store/index.js";
import { collectGarbage, DeposedError, Leadership } from "./leader.js";
import { controllerMetrics } from "./metrics.js";
import { Change, Model } from "./model.js";
import { KubeMode, type KubePort } from "./kube-mode.js";
import { Sessions } from "./sessions.js";
import { ModelSync } from "./sync.js";
import { Health } from "./health.js";

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  /** Clients must present a certificate signed by this CA (null: none asked for, with authorizeJoin). */
  ca: Buffer | null;
}

export interface ControllerOptions {
  etcdEndpoints: string[];
  etcdPrefix?: string;
  /** Client TLS for https:// etcd endpoints. */
  etcdTls?: EtcdTls;
  /** gRPC listen address, e.g. "0.0.0.0:9400" or "127.0.0.1:0". */
  listen: string;
  /** /metrics, /healthz, /readyz; omitted: no HTTP server. */
  metricsAddr?: string;
  /** Time a node's subnets survive without its agent connected. */
  leaseTtlSeconds?: number;
  tls?: TlsFiles;
  log?: Logger;
  registry?: Registry;
  /** Name of this replica in logs and the leader key. */
  identity?: string;
  /** How often the leader garbage-collects orphaned leases. */
  gcIntervalMs?: number;
  /** TTL of the leader key; a dead leader is replaced after about this long. */
  leaderTtlSeconds?: number;
  /** Kubernetes mode: networks from OverlayNetwork objects, node labels and existence from Node objects. */
  kube?: KubePort;
  /** Kubernetes mode: how often the leader re-checks every status and Node condition from its caches (client-go's resync). */
  kubeResyncMs?: number;
  /**
   * Agents authenticate per Join instead of by client certificate (Kubernetes:
   * ServiceAccount token + TokenReview); with `tls`, the server then asks for
   * no client certificate. Returns why a Join is refused.
   */
  authorizeJoin?: (metadata: grpc.Metadata, node: string) => Promise<string | undefined>;
  /** How long changes are gathered before being pushed to agents; 0 = next event-loop turn. */
  fanoutWindowMs?: number;
  /** /healthz fails once etcd has not answered for this long (default 30 s). */
  healthEtcdTimeoutMs?: number;
  /** /healthz fails while the event loop is this late (default 5 s). */
  healthStallMs?: number;
  /** An agent stream further behind than this many bytes gets a fresh snapshot instead of the backlog. */
  streamLagBytes?: number;
  /** Coalesce deltas into one per stream per gap while peer changes come in a storm (default on). */
  stormPacing?: boolean;
}

export interface RunningController {
  /** The bound gRPC port. */
  port: number;
  metricsPort?: number;
  readonly model: Model;
  readonly registry: Registry;
  isLeader(): boolean;
  /** What /readyz answers: healthy, the gRPC port is bound, the etcd view is loaded and, in Kubernetes mode, the OverlayNetwork and Node lists have arrived. */
  ready(): boolean;
  /** What /healthz answers: problems (etcd unreachable past the bound, event loop stalled); empty when healthy. */
  healthProblems(): string[];
  connectedAgents(): number;
  stop(): Promise<void>;
}

export const DEFAULT_LEASE_TTL_SECONDS = 24 * 3600;
export const DEFAULT_FANOUT_WINDOW_MS = 0;

/** Server-side keepalive: accept client pings every 5 s or more (FIELD-NOTES: or the pings are dropped). */
export const SERVER_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  "grpc.max_receive_message_length": 4 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
  // channelz (grpc-js' introspection service, which Weft does not serve) stamps every call and message with
  // counters and Date.now(): a few percent of a join storm's CPU for data nothing reads.
  "grpc.enable_channelz": 0,
};

/**
 * Starts one controller replica: loads the view from etcd, serves Join
 * streams, pushes changes, renews leases of connected nodes, and (when
 * elected) collects garbage. Several replicas may run against one etcd.
 */
export async function startController(opts: ControllerOptions): Promise<RunningController> {
  const log = opts.log ?? newLogger("weft-controller");
  const registry = opts.registry ?? newRegistry();
  const identity = opts.identity ?? `${os.hostname()}-${process.pid}`;
  const leaseTtlSeconds = opts.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
  const store = Store.connect({ endpoints: opts.etcdEndpoints, prefix: opts.etcdPrefix, tls: opts.etcdTls, log, registry });
  const model = new Model();

  let sessions: Sessions | undefined;
  let leadership: Leadership | undefined;
  const metrics = controllerMetrics(registry, model, () => sessions?.count ?? 0, () => kubeMode?.synced ?? false, () => !!leadership?.isLeader);
  const kubeMode = opts.kube
    ? new KubeMode({ kube: opts.kube, store, model, leader: () => leadership?.check() ?? notLeading(), log, resyncMs: opts.kubeResyncMs, metrics: metrics.kube, onInvalid: (kind) => metrics.invalidRecords.inc({ kind }) })
    : undefined;
  let pending: Change | undefined;
  const flush = () => {
    const change = pending;
    pending = undefined;
    try {
      if (change && sessions) sessions.broadcast(change);
      kubeMode?.onModelChange();
    } catch (err) {
      // Contained: one bad change must not take down every replica (they all read the same key).
      log.error({ err: String(err), stack: (err as Error)?.stack }, "fan-out of a change failed; agents resync on their next change");
    }
  };
  // Coalesce the watch responses of one event-loop turn (or of a window, when
  // configured) into one fan-out, so a burst of changes costs each agent one update.
  const fanoutWindowMs = opts.fanoutWindowMs ?? DEFAULT_FANOUT_WINDOW_MS;
  const onChange = (change: Change) => {
    if (pending) return pending.merge(change);
    pending = change;
    if (fanoutWindowMs > 0) setTimeout(flush, fanoutWindowMs);
    else setImmediate(flush);
  };

  const sync = new ModelSync(store, model, onChange, log, {
    onRestart: () => metrics.watchRestarts.inc(),
    onInvalid: (kind) => metrics.invalidRecords.inc({ kind }),
  });
  sessions = new Sessions({ store, model, sync, metrics, log, leaseTtlSeconds, requireCertificateName: !!opts.tls && !opts.authorizeJoin, authorizeJoin: opts.authorizeJoin, nodeLabels: kubeMode?.nodeLabels, distributor: { maxLagBytes: opts.streamLagBytes, stormPacing: opts.stormPacing } });

  const health = new Health({
    probe: () => store.client.maintenance.status(),
    etcdUnreachableMs: opts.healthEtcdTimeoutMs,
    stallMs: opts.healthStallMs,
  });
  health.start();
  // Ready only once agents can actually connect: healthy, the gRPC port bound, the view loaded.
  let serving = false;
  const readyProblems = () => {
    const out = health.problems();
    if (!serving) out.push("gRPC port not bound yet");
    if (!sync.loaded) out.push("etcd view not loaded yet");
    if (kubeMode && !kubeMode.synced) out.push("Kubernetes lists not received yet");
    return out;
  };
  const ready = () => readyProblems().length === 0;
  const metricsServer: MetricsServer | undefined = opts.metricsAddr
    ? await startMetricsServer(opts.metricsAddr, registry, { healthy: () => health.problems(), ready: readyProblems })
    : undefined;

  await sync.start();

  const server = new grpc.Server(SERVER_CHANNEL_OPTIONS);
  server.addService(lenientService(), { join: sessions.join });
  const creds = opts.tls
    ? grpc.ServerCredentials.createSsl(opts.tls.ca, [{ cert_chain: opts.tls.cert, private_key: opts.tls.key }], !opts.authorizeJoin)
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(opts.listen, creds, (err, p) => (err ? reject(new Error(`cannot listen on ${opts.listen}: ${err.message}`)) : resolve(p))),
  );
  serving = true;
  log.info({ listen: opts.listen, port, tls: !!opts.tls, identity, leaseTtlSeconds }, "controller serving");

  let gcTimer: NodeJS.Timeout | undefined;
  const runGc = async () => {
    try {
      const n = await collectGarbage(store, () => leadership!.lease, log);
      if (n > 0) metrics.gcDeleted.inc(n);
    } catch (err) {
      log.warn({ err: String(err) }, "garbage collection failed");
    }
  };
  leadership = new Leadership(store, identity, opts.leaderTtlSeconds ?? 10, log, (leading) => {
    clearInterval(gcTimer);
    if (leading) {
      void runGc();
      gcTimer = setInterval(runGc, opts.gcIntervalMs ?? 60_000);
    }
    kubeMode?.onLeadership();
  });
  leadership.start();
  kubeMode?.start(sessions);

  let stopped = false;
  return {
    port,
    metricsPort: metricsServer?.port,
    model,
    registry,
    isLeader: () => !!leadership?.isLeader,
    ready,
    healthProblems: () => health.problems(),
    connectedAgents: () => sessions?.count ?? 0,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(gcTimer);
      health.stop();
      await kubeMode?.stop();
      sessions?.closeAll();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      server.forceShutdown();
      await leadership!.stop();
      await sync.stop();
      await metricsServer?.close();
      await store.close();
      log.info("controller stopped");
    },
  };
}

function notLeading(): never {
  throw new DeposedError();
}

const encoded = new WeakMap<ConfigUpdate, Buffer>();

/**
 * The generated service, except that a message that does not decode reaches
 * the handler as `{ malformed }` so the agent gets INVALID_ARGUMENT with the
 * reason, instead of grpc-js's generic INTERNAL.
 */
function lenientService(): grpc.ServiceDefinition {
  return {
    join: {
      ...ControllerService.join,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return AgentMessage.decode(bytes);
        } catch (err) {
          return { msg: undefined, malformed: (err as Error).message };
        }
      },
      // The distributor writes updates already encoded (assembled from pieces encoded once).
      responseSerialize: (value: ConfigUpdate | Buffer) => {
        if (Buffer.isBuffer(value)) return value;
        let bytes = encoded.get(value);
        if (!bytes) {
          bytes = Buffer.from(ConfigUpdate.encode(value).finish());
          encoded.set(value, bytes);
        }
        return bytes;
      },
    },
  };
}
