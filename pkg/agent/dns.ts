// The agent's embedded DNS: for each network with `dns` on, a resolver on the
// node's gateway address of that network (port 53, UDP and TCP, in the
// agent's namespace), answering the network's endpoints as they arrive on the
// Join stream and forwarding the rest to the host's resolvers.
//
// Records follow the stream at once and per change (an endpoint update costs
// one index update, not a rebuild), independently of the dataplane; servers
// follow the programmed networks after each apply, because the gateway
// address exists only once the dataplane has put it on the bridge. A bind that
// fails (address not there yet, port taken) is retried with capped backoff,
// counted, logged, and reported to /healthz when it lasts.
import fs from "node:fs";
import type { ConfigUpdate, Endpoint } from "../api/index.js";
import { endpointKey } from "../api/index.js";
import { gatewayAddress } from "../cni/index.js";
import { containsAddress, ipToInt, isIPv4, parseCidr } from "../ip/index.js";
import type { Logger } from "../log/index.js";
import type { Registry } from "../metrics/index.js";
import { Backoff } from "../retry/index.js";
// records.js and upstreams.js load no metrics library: the agent loads prom-client only after its Join.
import { DEFAULT_DNS_DOMAIN, NetworkRecords, type DnsEndpoint } from "../dns/records.js";
import { upstreamsFromResolvConf, type Upstream } from "../dns/upstreams.js";
import type { DnsMetrics, DnsServer } from "../dns/index.js";

export const DEFAULT_RESOLV_CONF = "/etc/resolv.conf";
const BIND_RETRY_BASE_MS = 100;
const BIND_RETRY_CAP_MS = 5000;
/** The host's resolv.conf is re-read when it changed, checked at most this often. */
const RESOLV_CONF_CHECK_MS = 5000;

/** What the DNS glue needs of a programmed network. */
export interface DnsNetwork {
  name: string;
  mode: "routed" | "switched";
  cidr: string;
  subnet: string;
  dns: boolean;
}

export interface AgentDnsOptions {
  log: Logger;
  /** Zone suffix: `<name>.<network>.<domain>`. */
  domain?: string;
  /** Forward here (--dns-upstream); empty or absent: the host's resolv.conf. */
  upstreams?: Upstream[];
  resolvConf?: string;
  /** Port to listen on (tests, benchmarks); default 53. */
  port?: number;
  bindRetryBaseMs?: number;
  bindRetryCapMs?: number;
}

function toDnsEndpoint(key: string, e: Endpoint): DnsEndpoint {
  return { id: key, name: e.name, aliases: e.aliases, ips: e.ips };
}

/** One network's server and where it is in starting. */
interface Slot {
  network: string;
  address: string;
  cidr: string;
  /** The records it serves: a network whose dns went off and on again gets new ones, and a new server. */
  records?: NetworkRecords;
  server?: DnsServer;
  /** When the first failed bind of the current address happened; undefined while listening. */
  failingSince?: number;
  lastError?: string;
  backoff: Backoff;
  timer?: NodeJS.Timeout;
  stopped: boolean;
}

export class AgentDns {
  readonly domain: string;
  /**
   * Records of every network with dns on, kept from the stream. Only these
   * are served: a network restored from the state dir has none until the
   * controller's snapshot brings them (the state dir keeps no endpoints).
   */
  private readonly records = new Map<string, NetworkRecords>();
  private readonly slots = new Map<string, Slot>();
  private metrics?: DnsMetrics;
  /** pkg/dns's server and metrics, loaded with the first server (prom-client comes with them). */
  private serverLoad?: Promise<typeof import("../dns/index.js")>;
  private resolv = { checkedAt: 0, mtimeMs: -1, upstreams: [] as Upstream[] };
  private stopped = false;

  constructor(private readonly opts: AgentDnsOptions) {
    this.domain = opts.domain ?? DEFAULT_DNS_DOMAIN;
  }

  /** The records served for `network` (tests, tools). */
  recordsOf(network: string): NetworkRecords | undefined {
    return this.records.get(network);
  }

  /** Addresses and networks listening now. */
  get listening(): { network: string; address: string }[] {
    return [...this.slots.values()].filter((s) => s.server).map((s) => ({ network: s.network, address: s.address }));
  }

  /**
   * Follows one update of the Join stream. O(what it carries): a snapshot
   * resends the complete endpoint set of every network it names, a network
   * new to the agent arrives with its complete set, and the rest are changes.
   */
  onUpdate(u: ConfigUpdate): void {
    const touched = new Set<string>();
    if (u.snapshot) {
      const named = new Set(u.networks.map((n) => n.name));
      for (const name of [...this.records.keys()]) if (!named.has(name)) this.drop(name);
    }
    for (const name of u.removedNetworks) this.drop(name);
    for (const c of u.networks) {
      if (!c.dns) {
        this.drop(c.name);
        continue;
      }
      // A snapshot, or the network's first message, carries its complete endpoint set in this same update.
      const r = this.records.get(c.name);
      if (!r) this.records.set(c.name, new NetworkRecords(c.name, this.domain));
      else if (u.snapshot) r.clear();
      touched.add(c.name);
    }
    for (const eu of u.endpointUpdates) {
      const r = this.records.get(eu.network);
      if (!r || !eu.endpoint) continue;
      const key = endpointKey(eu.endpoint);
      if (eu.removed) r.remove(key);
      else r.put(toDnsEndpoint(key, eu.endpoint));
      touched.add(eu.network);
    }
    if (this.metrics) for (const name of touched) this.metrics.records.set({ network: name }, this.records.get(name)?.size ?? 0);
  }

  private drop(network: string): void {
    if (!this.records.delete(network)) return;
    this.metrics?.records.remove({ network });
  }

  /**
   * Makes the servers match the programmed networks: one per network with dns
   * on, on its gateway address. Called after each apply (the address is on the
   * bridge by then). Servers whose network went, turned dns off or moved are stopped.
   */
  sync(networks: Iterable<DnsNetwork>, registry: Registry): void {
    if (this.stopped) return;
    const want = new Map<string, { address: string; cidr: string }>();
    for (const n of networks) {
      if (!n.dns || !this.records.has(n.name)) continue;
      try {
        want.set(n.name, { address: gatewayAddress(n), cidr: n.cidr });
      } catch (err) {
        this.opts.log.error({ network: n.name, err: (err as Error).message }, "DNS not served: no gateway address");
      }
    }
    for (const [name, slot] of [...this.slots]) {
      const w = want.get(name);
      const stale = slot.records !== undefined && slot.records !== this.records.get(name);
      if (!w || w.address !== slot.address || w.cidr !== slot.cidr || stale) void this.stopSlot(slot);
    }
    for (const [name, w] of want) {
      if (this.slots.has(name)) continue;
      const slot: Slot = { network: name, address: w.address, cidr: w.cidr, backoff: new Backoff(this.opts.bindRetryBaseMs ?? BIND_RETRY_BASE_MS, this.opts.bindRetryCapMs ?? BIND_RETRY_CAP_MS), stopped: false };
      this.slots.set(name, slot);
      void this.bind(slot, registry);
    }
  }

  private async loadServer(registry: Registry): Promise<typeof import("../dns/index.js")> {
    this.serverLoad ??= import("../dns/index.js").then((m) => {
      this.metrics = m.dnsMetrics(registry);
      for (const [name, r] of this.records) this.metrics.records.set({ network: name }, r.size);
      return m;
    });
    return this.serverLoad;
  }

  private async bind(slot: Slot, registry: Registry): Promise<void> {
    const m = await this.loadServer(registry);
    if (slot.stopped) return;
    const records = this.records.get(slot.network);
    if (!records) return void this.stopSlot(slot);
    slot.records = records;
    const cidr = parseCidr(slot.cidr);
    const server = new m.DnsServer({
      address: slot.address,
      port: this.opts.port,
      records,
      upstreams: () => this.upstreams(),
      metrics: this.metrics!,
      log: this.opts.log,
      // Only the network's own pods: a pod of another network reaches this address through the host's INPUT path.
      allowClient: (a) => isIPv4(a) && containsAddress(cidr, ipToInt(a)),
    });
    try {
      await server.start();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      this.metrics!.bindFailures.inc({ network: slot.network, code });
      const first = slot.failingSince === undefined;
      slot.failingSince ??= Date.now();
      const changed = slot.lastError !== code;
      slot.lastError = code;
      // EADDRNOTAVAIL is expected until the dataplane has put the address on the bridge.
      if (first || changed) this.opts.log[code === "EADDRNOTAVAIL" && first ? "info" : "warn"]({ network: slot.network, address: slot.address, code }, "DNS server cannot bind yet; retrying");
      if (!slot.stopped) slot.timer = setTimeout(() => void this.bind(slot, registry), slot.backoff.next());
      return;
    }
    if (slot.stopped) {
      await server.stop();
      return;
    }
    slot.server = server;
    slot.failingSince = undefined;
    slot.lastError = undefined;
    slot.backoff.reset();
    this.metrics!.listening.set({ network: slot.network }, 1);
    this.opts.log.info({ network: slot.network, address: slot.address, port: this.opts.port ?? m.DNS_PORT, records: records.size }, "DNS server listening");
  }

  private stopSlot(slot: Slot): Promise<void> {
    slot.stopped = true;
    clearTimeout(slot.timer);
    this.slots.delete(slot.network);
    this.metrics?.listening.remove({ network: slot.network });
    if (slot.server) {
      const server = slot.server;
      slot.server = undefined;
      this.opts.log.info({ network: slot.network, address: slot.address }, "DNS server stopped");
      return server.stop();
    }
    return Promise.resolve();
  }

  /** Why DNS is not healthy: a server that has not been able to listen for longer than `boundMs`. */
  unhealthy(boundMs: number): string | undefined {
    const now = Date.now();
    for (const s of this.slots.values()) {
      if (s.failingSince !== undefined && now - s.failingSince > boundMs) return `DNS server of network ${s.network} cannot listen on ${s.address} (${s.lastError}) for ${Math.round((now - s.failingSince) / 1000)} s`;
    }
    return undefined;
  }

  /** --dns-upstream, else the host's resolv.conf (re-read when it changes), without our own addresses. */
  private upstreams(): Upstream[] {
    if (this.opts.upstreams && this.opts.upstreams.length > 0) return this.opts.upstreams;
    const now = Date.now();
    if (now - this.resolv.checkedAt < RESOLV_CONF_CHECK_MS) return this.resolv.upstreams;
    this.resolv.checkedAt = now;
    const file = this.opts.resolvConf ?? DEFAULT_RESOLV_CONF;
    try {
      const st = fs.statSync(file);
      if (st.mtimeMs !== this.resolv.mtimeMs) {
        this.resolv.mtimeMs = st.mtimeMs;
        // Forwarding to one of our own addresses would loop.
        this.resolv.upstreams = upstreamsFromResolvConf(fs.readFileSync(file, "utf8"), [...this.slots.values()].map((s) => s.address));
        this.opts.log.info({ file, upstreams: this.resolv.upstreams }, "DNS upstreams read");
      }
    } catch (err) {
      if (this.resolv.mtimeMs !== -2) this.opts.log.warn({ file, err: (err as Error).message }, "cannot read the host's resolvers: forwarded queries get SERVFAIL");
      this.resolv = { checkedAt: now, mtimeMs: -2, upstreams: [] };
    }
    return this.resolv.upstreams;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.slots.values()].map((s) => this.stopSlot(s)));
  }
}
