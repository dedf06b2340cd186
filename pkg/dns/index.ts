// The per-network embedded resolver: records from the network's endpoints,
// served on the node's gateway address, everything else forwarded upstream.
export { DnsServer, DNS_PORT, DEFAULT_FORWARD_TIMEOUT_MS, type DnsServerOptions } from "./server.js";
export { NetworkRecords, dnsNameOf, DEFAULT_DNS_DOMAIN, RECORD_TTL_SECONDS, type DnsEndpoint, type Lookup } from "./records.js";
export { dnsMetrics, type DnsMetrics } from "./metrics.js";
export { parseUpstream, upstreamsFromResolvConf, type Upstream } from "./upstreams.js";
export { forward, ForwardError } from "./forward.js";
