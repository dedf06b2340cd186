import assert from "node:assert/strict";
import { agentMetrics } from "../../pkg/agent/metrics.js";
import { newRegistry } from "../../pkg/metrics/index.js";

describe("agent: connection-side metrics", () => {
  it("the peers gauge holds exactly the networks last applied", async () => {
    const registry = newRegistry(false);
    const m = agentMetrics(registry);
    m.setPeers({ blue: 3, red: 1 });
    m.setPeers({ blue: 2 });
    const values = (await m.peers.get()).values.map((v) => [v.labels.network, v.value]);
    assert.deepEqual(values, [["blue", 2]]);
  });

  it("registers every weft_agent_* connection metric on the given registry", async () => {
    const registry = newRegistry(false);
    agentMetrics(registry);
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).sort();
    assert.deepEqual(names, [
      "weft_agent_applied_revision",
      "weft_agent_config_updates_total",
      "weft_agent_controller_connected",
      "weft_agent_endpoints",
      "weft_agent_networks_unprogrammed",
      "weft_agent_peers",
      "weft_agent_peers_unprogrammed",
      "weft_agent_reconnects_total",
    ]);
  });
});
