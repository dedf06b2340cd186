import { prom, type Registry } from "../metrics/index.js";
import { poolCapacity } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";
import type { Model } from "./model.js";

export type ControllerMetrics = ReturnType<typeof controllerMetrics>;

/** weft_controller_* metrics. Gauges about leases and pools are read from the model at scrape time. */
export interface StreamSources {
  lag: () => Iterable<[string, number]>;
  buffered: () => number;
  bufferedMax: () => number;
  logBytes: () => number;
}

export function controllerMetrics(registry: Registry, model: Model, connected: () => number, kubeSynced: () => boolean = () => false, leading: () => boolean = () => false) {
  const sources: StreamSources = { lag: () => [], buffered: () => 0, bufferedMax: () => 0, logBytes: () => 0 };
  const sourceGauge = (name: string, help: string, value: () => number) =>
    new prom.Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value());
      },
    });
  const perNetwork = (name: string, help: string, value: (net: string) => number) =>
    new prom.Gauge({
      name,
      help,
      labelNames: ["network"],
      registers: [registry],
      collect() {
        this.reset();
        for (const spec of model.networks.values()) this.set({ network: spec.name }, value(spec.name));
      },
    });
  const capacity = (net: string) => {
    const spec = model.networks.get(net);
    if (!spec) return 0;
    try {
      return poolCapacity({ cidr: parseCidr(spec.cidr), nodePrefixLength: spec.nodePrefixLength });
    } catch {
      return 0;
    }
  };
  perNetwork("weft_controller_leases", "Subnet leases held, per network.", (n) => model.leaseCount(n));
  perNetwork("weft_controller_pool_capacity", "Node subnets a network's pool can hold.", capacity);
  perNetwork("weft_controller_pool_used_ratio", "Fraction of a network's pool that is leased.", (n) => {
    const c = capacity(n);
    return c === 0 ? 0 : model.leaseCount(n) / c;
  });
  new prom.Gauge({
    name: "weft_controller_connected_agents",
    help: "Agents with an open Join stream to this replica.",
    registers: [registry],
    collect() {
      this.set(connected());
    },
  });
  new prom.Gauge({
    name: "weft_controller_view_revision",
    help: "etcd revision the controller's view reflects.",
    registers: [registry],
    collect() {
      this.set(model.revision);
    },
  });
  const updatesSent = new prom.Counter({ name: "weft_controller_updates_sent_total", help: "Config updates written to agent streams, by kind (snapshot, delta).", labelNames: ["kind"], registers: [registry] });
  return {
    // Bound once: no label lookup per message.
    snapshotsSent: updatesSent.labels("snapshot"),
    deltasSent: updatesSent.labels("delta"),
    allocations: new prom.Counter({ name: "weft_controller_allocations_total", help: "Subnets newly leased, per network.", labelNames: ["network"], registers: [registry] }),
    allocationFailures: new prom.Counter({
      name: "weft_controller_allocation_failures_total",
      help: "Failed subnet allocations, per network and reason (pool_exhausted, error).",
      labelNames: ["network", "reason"],
      registers: [registry],
    }),
    ...joinPhases(registry),
    pushLatency: new prom.Histogram({
      name: "weft_controller_config_push_seconds",
      help: "Time from sending a config update to an agent until it acknowledged applying it (one sample per ack: the oldest update it covers).",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    // Read from the sessions at scrape time, so an ack costs no label lookup.
    nodeLag: new prom.Gauge({
      name: "weft_controller_node_applied_revision_lag",
      help: "Per node: etcd revisions sent to the agent but not yet acknowledged as applied.",
      labelNames: ["node"],
      registers: [registry],
      collect() {
        this.reset();
        for (const [node, lag] of sources.lag()) this.set({ node }, lag);
      },
    }),
    streamBufferedBytes: sourceGauge(
      "weft_controller_stream_buffered_bytes",
      "Bytes written to agent streams and not yet taken by the transport, over all streams (bounded per stream).",
      () => sources.buffered(),
    ),
    streamBufferedBytesMax: sourceGauge(
      "weft_controller_stream_buffered_bytes_max",
      "The most bytes any one agent stream has written and not yet had taken by the transport (a stalled agent stays below the lag bound).",
      () => sources.bufferedMax(),
    ),
    changeLogBytes: sourceGauge("weft_controller_change_log_bytes", "Bytes held by the per-network change logs that agent streams read from.", () => sources.logBytes()),
    streamResyncs: new prom.Counter({
      name: "weft_controller_stream_resyncs_total",
      help: "Agent streams switched to a fresh snapshot because they fell further behind than the byte bound.",
      registers: [registry],
    }),
    updateBytes: new prom.Counter({ name: "weft_controller_update_bytes_total", help: "Bytes of config updates written to agent streams.", registers: [registry] }),
    /** Set by the sessions: where the scrape-time gauges read from. */
    sources,
    joins: new prom.Counter({ name: "weft_controller_joins_total", help: "Join streams accepted, and refused by reason.", labelNames: ["result"], registers: [registry] }),
    isLeader: new prom.Gauge({
      name: "weft_controller_is_leader",
      help: "1 when this replica runs the singleton jobs (and its leadership is not older than the election TTL allows).",
      registers: [registry],
      collect() {
        this.set(leading() ? 1 : 0);
      },
    }),
    gcDeleted: new prom.Counter({ name: "weft_controller_gc_deleted_total", help: "Orphaned keys removed by garbage collection.", registers: [registry] }),
    watchRestarts: new prom.Counter({ name: "weft_controller_watch_restarts_total", help: "Times the etcd watch was lost and the view rebuilt.", registers: [registry] }),
    invalidRecords: new prom.Counter({
      name: "weft_controller_invalid_records",
      help: "Values read from etcd (network, node, lease, endpoint) or the Kubernetes API (kube_network, kube_node) that did not decode and were left out of the view, by kind.",
      labelNames: ["kind"],
      registers: [registry],
    }),
    endpointsRejected: new prom.Counter({
      name: "weft_controller_endpoints_rejected_total",
      help: "Endpoints agents reported that were not stored, by reason (invalid: a field does not decode; not_member: the node holds no subnet of the network, or an address is outside its CIDR; too_many: past the per-node bound).",
      labelNames: ["reason"],
      registers: [registry],
    }),
    endpointWriteFailures: new prom.Counter({ name: "weft_controller_endpoint_write_failures_total", help: "Endpoint writes to etcd that failed and were retried.", registers: [registry] }),
    kube: kubeMetrics(registry, kubeSynced),
  };
}

export type KubeMetrics = ReturnType<typeof kubeMetrics>;

/** weft_controller_kube_*: Kubernetes mode (registered in both modes; zero in standalone). */
function kubeMetrics(registry: Registry, synced: () => boolean) {
  return {
    writes: new prom.Counter({
      name: "weft_controller_kube_writes_total",
      help: "Writes to the Kubernetes API by the leader: OverlayNetwork statuses and Node conditions, by result.",
      labelNames: ["kind", "result"],
      registers: [registry],
    }),
    reconcileFailures: new prom.Counter({ name: "weft_controller_kube_reconcile_failures_total", help: "Kubernetes reconcile passes that failed and were retried.", registers: [registry] }),
    networks: new prom.Gauge({ name: "weft_controller_kube_networks", help: "OverlayNetwork objects by verdict (served, invalid), as the leader last resolved them.", labelNames: ["state"], registers: [registry] }),
    synced: new prom.Gauge({
      name: "weft_controller_kube_synced",
      help: "1 once the OverlayNetwork and Node lists have arrived.",
      registers: [registry],
      collect() {
        this.set(synced() ? 1 : 0);
      },
    }),
  };
}

/** Where a first Join's time goes, bound once per phase. */
function joinPhases(registry: prom.Registry) {
  const h = new prom.Histogram({
    name: "weft_controller_join_seconds",
    help: "A node's first Join on a stream, by phase: register (Join received until its registration is in the view) and snapshot (registered until its snapshot is written to the stream).",
    labelNames: ["phase"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return { joinRegister: h.labels("register"), joinSnapshot: h.labels("snapshot") };
}
