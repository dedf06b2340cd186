// weft_agent_dns_* metrics, registered once per agent and shared by every
// network's server (the network is a label).
import { prom, type Registry } from "../metrics/index.js";

export interface DnsMetrics {
  queries: prom.Counter<"network" | "type" | "rcode">;
  forwarded: prom.Counter<"network" | "result">;
  forwardSeconds: prom.Histogram<"network">;
  records: prom.Gauge<"network">;
  malformed: prom.Counter<"network" | "transport">;
  refused: prom.Counter<"network" | "transport">;
  listening: prom.Gauge<"network">;
  bindFailures: prom.Counter<"network" | "code">;
}

export function dnsMetrics(registry: Registry): DnsMetrics {
  return {
    queries: new prom.Counter({ name: "weft_agent_dns_queries_total", help: "DNS queries answered by the embedded resolver, by network, question type and response code", labelNames: ["network", "type", "rcode"] as const, registers: [registry] }),
    forwarded: new prom.Counter({ name: "weft_agent_dns_forwarded_total", help: "Queries forwarded to the host's resolvers, by result (ok, truncated_tcp, timeout, error, overload)", labelNames: ["network", "result"] as const, registers: [registry] }),
    forwardSeconds: new prom.Histogram({ name: "weft_agent_dns_forward_seconds", help: "Time from forwarding a query to the upstream's answer", labelNames: ["network"] as const, buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 5], registers: [registry] }),
    records: new prom.Gauge({ name: "weft_agent_dns_records", help: "Endpoints whose names the resolver serves, per network", labelNames: ["network"] as const, registers: [registry] }),
    malformed: new prom.Counter({ name: "weft_agent_dns_malformed_total", help: "Queries that could not be decoded (answered FORMERR when the header was readable, else dropped)", labelNames: ["network", "transport"] as const, registers: [registry] }),
    refused: new prom.Counter({ name: "weft_agent_dns_refused_total", help: "Queries dropped unanswered because their source is outside the network's CIDR (names do not leak across networks)", labelNames: ["network", "transport"] as const, registers: [registry] }),
    listening: new prom.Gauge({ name: "weft_agent_dns_listening", help: "1 while a network's DNS server listens on its gateway address", labelNames: ["network"] as const, registers: [registry] }),
    bindFailures: new prom.Counter({ name: "weft_agent_dns_bind_failures_total", help: "Failed attempts to open a network's DNS server on its gateway address, by error code (EADDRNOTAVAIL until the address is on the bridge)", labelNames: ["network", "code"] as const, registers: [registry] }),
  };
}
