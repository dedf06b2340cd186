// The connection-side weft_agent_* metrics. The kernel-side ones (entries per
// kind, apply duration, failures, drift repairs, last apply time) are
// registered by the dataplane on the same registry.
import { prom, type Registry } from "../metrics/index.js";

export interface AgentMetrics {
  controllerConnected: prom.Gauge;
  appliedRevision: prom.Gauge;
  peers: prom.Gauge<"network">;
  reconnects: prom.Counter;
  updates: prom.Counter<"kind">;
  networksSkipped: prom.Gauge;
  peersSkipped: prom.Gauge;
  endpoints: prom.Gauge<"network">;
  /** Sets the peers gauge to exactly these networks, dropping networks that are gone. */
  setPeers(counts: Record<string, number>): void;
}

export function agentMetrics(registry: Registry): AgentMetrics {
  const controllerConnected = new prom.Gauge({ name: "weft_agent_controller_connected", help: "1 while a Join stream to a controller is open and has delivered its snapshot", registers: [registry] });
  const appliedRevision = new prom.Gauge({ name: "weft_agent_applied_revision", help: "Controller revision of the config last programmed into the kernel", registers: [registry] });
  const peers = new prom.Gauge({ name: "weft_agent_peers", help: "Remote nodes programmed, per network", labelNames: ["network"] as const, registers: [registry] });
  const reconnects = new prom.Counter({ name: "weft_agent_reconnects_total", help: "Join streams that delivered a snapshot after the first one did (reconnections to a controller)", registers: [registry] });
  const updates = new prom.Counter({ name: "weft_agent_config_updates_total", help: "Config updates received from the controller, by kind (snapshot, delta)", labelNames: ["kind"] as const, registers: [registry] });
  const networksSkipped = new prom.Gauge({ name: "weft_agent_networks_unprogrammed", help: "Networks the node belongs to but cannot program (no subnet, invalid config); see the log for why", registers: [registry] });
  const peersSkipped = new prom.Gauge({ name: "weft_agent_peers_unprogrammed", help: "Peers the controller sent that are not programmed (incomplete, malformed or clashing with another peer); see the log for why", registers: [registry] });
  const endpoints = new prom.Gauge({ name: "weft_agent_endpoints", help: "Endpoints the controller sent for each network that gets them (switched, or dns on), this node's own included", labelNames: ["network"] as const, registers: [registry] });
  let known = new Set<string>();
  return {
    controllerConnected,
    appliedRevision,
    peers,
    reconnects,
    updates,
    networksSkipped,
    peersSkipped,
    endpoints,
    setPeers(counts) {
      for (const n of known) if (!(n in counts)) peers.remove({ network: n });
      for (const [n, c] of Object.entries(counts)) peers.set({ network: n }, c);
      known = new Set(Object.keys(counts));
    },
  };
}
