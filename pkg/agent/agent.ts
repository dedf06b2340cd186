// weft-agent's engine: restores the controller's last config from the state
// dir, holds one Join stream to a controller, keeps the config in place with
// what changed (ConfigModel), and hands the changes to the dataplane when a
// flush starts, so a burst of updates costs one conversion per changed peer
// and one write. Acknowledges each revision once the kernel holds it.
import os from "node:os";
import type { ConfigUpdate, JoinRequest } from "../api/index.js";
import { isIPv4 } from "../ip/index.js";
import { newLogger, type Logger } from "../log/index.js";
// Metrics (prom-client) load after the Join is on its way: a fast start is what lets peers reach this node sooner.
import type { MetricsServer, Registry } from "../metrics/index.js";
import type { ApplyReason, ApplyReport, DataplanePort, NetworkSpec, NodeDesired, PeerSpec } from "../dataplane/types.js";
import type { IptablesBackendChoice } from "../dataplane/iptables-backend.js";
import type { Endpoint } from "../cni/endpoint.js";
import { EndpointServer } from "../cni/endpoint-server.js";
import { ApplyLoop } from "./apply-loop.js";
import { EndpointRelay } from "./endpoint-relay.js";
import { ControllerConnection, type StreamInfo } from "./connection.js";
import { addTo, ConfigModel, toNetworkSpecs, type NodeIdentity } from "./desired.js";
import type { HostProbe } from "./host.js";
import type { AgentMetrics } from "./metrics.js";
import { configFromState, loadState, randomMac, saveMacsSync, StateJournal, stateFromConfig } from "./state.js";
import { AGENT_VERSION } from "./version.js";
import { AgentDns } from "./dns.js";
import type { Upstream } from "../dns/upstreams.js";
import { channelCredentials, type TokenAuth } from "./credentials.js";

export type { HostProbe };

export const DEFAULT_RESYNC_INTERVAL_MS = 30_000;
/** /healthz turns red when a kernel command or an apply is stuck longer than this, or changes wait this long. */
export const DEFAULT_STUCK_THRESHOLD_MS = 60_000;

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export interface AgentOptions {
  nodeName?: string;
  /** Controller addresses (HOST:PORT); the agent fails over between them. */
  controllers: string[];
  /** Default: the interface holding the default route. */
  uplink?: string;
  /** Default: the uplink's first IPv4 address. */
  underlayIp?: string;
  /** /metrics, /healthz, /readyz; omitted: no HTTP server. */
  metricsAddr?: string;
  cniConfDir: string;
  stateDir: string;
  resyncIntervalMs?: number;
  labels?: Record<string, string>;
  tls?: TlsFiles;
  /** Kubernetes mode: a ServiceAccount token instead of a client certificate (then `tls` is unused). */
  token?: TokenAuth;
  /** Tests only: the dataplane runs its commands in this network namespace. */
  netns?: string;
  disableTxChecksumOffload?: boolean;
  /** iptables backend: auto (the one holding the host's rules), legacy or nft. */
  iptablesBackend?: IptablesBackendChoice;
  /** Timeout of each kernel command. */
  commandTimeoutMs?: number;
  /** See DEFAULT_STUCK_THRESHOLD_MS. */
  stuckThresholdMs?: number;
  log?: Logger;
  registry?: Registry;
  /** Replaces the kernel dataplane (unit tests of the agent's logic). */
  dataplane?: DataplanePort;
  /** Replaces the kernel queries for the uplink. */
  host?: HostProbe;
  /** Backoff tuning (tests use small values). */
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  snapshotTimeoutMs?: number;
  retryBaseMs?: number;
  /** State journal compaction delay (tests use small values). */
  stateCompactMs?: number;
  /** DNS zone suffix for networks with dns on (default weft.internal). */
  dnsDomain?: string;
  /** Where DNS forwards names it does not hold; empty or absent: the host's /etc/resolv.conf. */
  dnsUpstreams?: Upstream[];
  /** Tests and benchmarks only: DNS port (default 53). */
  dnsPort?: number;
}

interface FlushResult {
  report: ApplyReport;
  revision: number;
  epoch: number;
}

export class Agent {
  readonly log: Logger;
  readonly nodeName: string;
  private reg?: Registry;
  /** Loaded once the Join is sent; events before that are counted here and added then. */
  private metrics?: AgentMetrics;
  private early = { snapshot: 0, delta: 0 };
  private dataplane?: DataplanePort;
  /** Resolves once the dataplane module is loaded (after the Join went out). */
  /**
   * Settles once the dataplane exists. Made before the Join is sent: a
   * snapshot can arrive (a controller that has the node's registration answers
   * without an etcd write) while the dataplane is still being created, and its
   * flush must wait for it rather than fail after taking the model's changes.
   */
  private dataplaneReady?: Promise<DataplanePort>;
  private ackedEpoch = 0;
  private loop?: ApplyLoop<FlushResult>;
  private connection?: ControllerConnection;
  private metricsServer?: MetricsServer;
  private journal?: StateJournal;
  private self?: NodeIdentity;
  private uplinkMtu = 0;
  private readonly model = new ConfigModel();
  private endpointServer?: EndpointServer;
  private reconcileTimer?: NodeJS.Timeout;
  private relay?: EndpointRelay;
  /** Stream the config came from; 0 = restored from the state dir. */
  private epoch = 0;
  private macs: Record<string, string> = {};
  private subnets: Record<string, string> = {};
  /** Networks handed to the dataplane, by name. */
  private programmed = new Map<string, NetworkSpec>();
  private lastSkipped = "";
  private skippedPeers = new Map<string, string>();
  /** `<network>/<endpointKey>` -> why it is not programmed (logged once per reason). */
  private skippedEndpoints = new Map<string, string>();
  private readyFlag = false;
  private everConnected = false;
  private applied = 0;
  private started = false;
  /** Embedded DNS for networks with dns on; absent when the dataplane is another namespace's (sockets open here, not there). */
  private readonly dns?: AgentDns;
  private dnsWarned = false;

  constructor(private readonly opts: AgentOptions) {
    this.nodeName = opts.nodeName ?? os.hostname().toLowerCase();
    this.log = (opts.log ?? newLogger("weft-agent")).child({ node: this.nodeName });
    this.reg = opts.registry;
    if (!opts.netns) this.dns = new AgentDns({ log: this.log, domain: opts.dnsDomain, upstreams: opts.dnsUpstreams, port: opts.dnsPort, bindRetryBaseMs: opts.retryBaseMs });
  }

  /** Networks whose DNS server listens now, and where. */
  get dnsListening(): { network: string; address: string }[] {
    return this.dns?.listening ?? [];
  }

  /** The agent's metrics registry (the one given, or its own once started). */
  get registry(): Registry {
    if (!this.reg) throw new Error("the agent's registry exists once start() has returned");
    return this.reg;
  }

  /** True once a snapshot from a controller has been programmed. */
  get ready(): boolean {
    return this.readyFlag;
  }

  get appliedRevision(): number {
    return this.applied;
  }

  /** Address of the controller whose stream is open, if any. */
  get controller(): string | undefined {
    return this.connection?.stream?.address;
  }

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  get underlayIp(): string | undefined {
    return this.self?.underlayIp;
  }

  /** What the dataplane holds as desired: network specs and their programmed peers (built on each call; tests and tools). */
  get lastApplied(): NodeDesired | undefined {
    if (!this.loop?.everApplied || !this.self) return undefined;
    const dp = this.dataplane as DataplanePort & { peersOf?(n: string): string[] };
    const networks = [...this.programmed.values()].map((spec) => {
      const net = this.model.config.networks.get(spec.name);
      const names = dp.peersOf?.(spec.name) ?? [...(net?.peers.keys() ?? [])];
      const peers = names.map((n) => net?.peers.get(n)).filter((p): p is PeerSpec => !!p);
      return { ...spec, peers };
    });
    return { uplink: this.self.uplink, underlayIp: this.self.underlayIp, networks };
  }

  /** MACs of this node's VXLAN devices, as registered with the controller. */
  get vtepMacs(): Record<string, string> {
    return { ...this.macs };
  }

  /** Why /healthz is red, or undefined when healthy. */
  unhealthy(): string | undefined {
    const bound = this.opts.stuckThresholdMs ?? DEFAULT_STUCK_THRESHOLD_MS;
    const stuck = this.dataplane?.stuckSeconds() ?? 0;
    if (stuck * 1000 > bound) return `a kernel command has been running for ${Math.round(stuck)} s`;
    return this.loop?.stuck(bound) ?? this.dns?.unhealthy(bound);
  }

  async start(): Promise<void> {
    if (this.started) throw new Error("agent already started");
    this.started = true;
    const { opts, log } = this;
    if (opts.controllers.length === 0) throw new Error("controller: at least one address is needed");

    // The state dir first: the first Join carries the persisted MACs and subnets.
    try {
      const state = await loadState(opts.stateDir);
      if (state) {
        this.macs = state.vtepMacs;
        this.subnets = state.subnets;
        const config = configFromState(state);
        const endpointUpdates = state.networks.flatMap((n) => (state.endpoints[n.name] ?? []).map((endpoint) => ({ network: n.name, endpoint, removed: false })));
        this.model.apply({ revision: config.revision, snapshot: true, networks: state.networks, removedNetworks: [], peerUpdates: [], endpointUpdates });
        log.info({ revision: state.revision, networks: state.networks.map((n) => n.name), stateDir: opts.stateDir }, "restoring the controller's last config from the state dir");
      }
    } catch (err) {
      // Unusable state must not keep the node off the network: the controller's snapshot replaces it.
      log.error({ err: (err as Error).message }, "ignoring unreadable state file");
    }

    const host = opts.host ?? (opts.dataplane ? undefined : (await import("./kernel.js")).kernelHost);
    const uplink = opts.uplink ?? (host ? await host.defaultUplink(opts.netns) : undefined);
    if (!uplink) throw new Error("uplink: not given and no way to find the default route's interface");
    const info = opts.underlayIp && opts.dataplane ? undefined : host ? await host.interfaceInfo(uplink, opts.netns).catch((err) => {
      throw new Error(`uplink: ${uplink}: ${(err as Error).message}`);
    }) : undefined;
    const underlayIp = opts.underlayIp ?? info?.ipv4;
    if (!underlayIp) throw new Error(`underlay-ip: not given and uplink ${uplink} has no IPv4 address`);
    if (!isIPv4(underlayIp)) throw new Error(`underlay-ip: "${underlayIp}" is not an IPv4 address`);
    this.uplinkMtu = info?.mtu ?? 0;
    this.self = { nodeName: this.nodeName, uplink, underlayIp };

    // The plugin's socket before the Join: the Join's full endpoint report
    // needs the node's endpoints, reconciled (a pod deleted while the agent was
    // down is gone from its list before the controller hears of it).
    this.relay = new EndpointRelay({
      list: () => this.endpointServer?.list() ?? [],
      send: (epoch, report) => this.connection?.send(epoch, { msg: { $case: "endpoints", value: report } }),
    });
    this.endpointServer = new EndpointServer({
      stateDir: opts.stateDir,
      refuse: (network) => this.refuseEndpoint(network),
      onChange: (changed, removed) => this.relay?.changed(changed, removed),
      warn: (msg, fields) => log.warn(fields, msg),
    });
    await this.endpointServer.start();
    const gone = await this.endpointServer.reconcile();
    if (gone.length > 0) log.info({ removed: gone.map((e) => e.id) }, "endpoints whose network namespace is gone removed");

    // Join as early as possible: peers can program this node as soon as the controller has its MACs.
    this.connection = new ControllerConnection({
      addresses: opts.controllers,
      credentials: () => channelCredentials(opts.tls, opts.token),
      joinRequest: () => this.joinRequest(),
      log,
      reconnectBaseMs: opts.reconnectBaseMs,
      reconnectCapMs: opts.reconnectCapMs,
      snapshotTimeoutMs: opts.snapshotTimeoutMs,
      onUpdate: (u, s) => this.onUpdate(u, s),
      onConnected: () => {
        this.metrics?.controllerConnected.set(1);
        if (this.everConnected) this.metrics?.reconnects.inc();
        this.everConnected = true;
      },
      onDisconnected: (stream) => {
        this.metrics?.controllerConnected.set(0);
        this.relay?.disconnected(stream.epoch);
      },
      onJoinSent: (stream) => this.relay?.joined(stream.epoch),
    });

    this.journal = new StateJournal({
      stateDir: opts.stateDir,
      compactAfterMs: opts.stateCompactMs,
      snapshot: () => stateFromConfig(this.model.config, this.macs, this.subnets),
      onError: (err) => log.error({ err: err.message, stateDir: opts.stateDir }, "could not persist the config; a restart without a controller would restore an older one"),
    });
    this.loop = new ApplyLoop<FlushResult>({
      flush: (reason) => this.flush(reason),
      log,
      resyncIntervalMs: opts.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS,
      retryBaseMs: opts.retryBaseMs,
      onApplied: (r, reason) => this.afterApply(r, reason),
      onFailed: (err, reason) => this.applyFailed(err, reason),
    });

    let dataplaneCreated!: (dp: Promise<DataplanePort>) => void;
    this.dataplaneReady = new Promise<DataplanePort>((resolve) => (dataplaneCreated = resolve));
    this.connection.start();
    log.debug({ sinceProcessStartMs: Math.round(performance.now()) }, "join sent");

    const [{ newRegistry, prom, startMetricsServer }, { agentMetrics }] = await Promise.all([import("../metrics/index.js"), import("./metrics.js")]);
    if (!this.reg) {
      // Process metrics, but the event-loop lag sampled every second, not every 10 ms: that timer alone was most of an idle agent's CPU.
      this.reg = newRegistry(false);
      prom.collectDefaultMetrics({ register: this.reg, eventLoopMonitoringPrecision: 1000 });
    }
    this.metrics = agentMetrics(this.reg);
    this.metrics.controllerConnected.set(this.connection.stream ? 1 : 0);
    if (this.early.snapshot) this.metrics.updates.inc({ kind: "snapshot" }, this.early.snapshot);
    if (this.early.delta) this.metrics.updates.inc({ kind: "delta" }, this.early.delta);

    const creating = (opts.dataplane
      ? Promise.resolve(opts.dataplane)
      : import("./kernel.js").then((k) =>
          k.createKernelDataplane({
            log: this.log,
            registry: this.reg,
            netns: opts.netns,
            cniConfDir: opts.cniConfDir,
            stateDir: opts.stateDir,
            disableTxChecksumOffload: opts.disableTxChecksumOffload,
            iptablesBackend: opts.iptablesBackend,
            commandTimeoutMs: opts.commandTimeoutMs,
            dnsDomain: this.dns?.domain,
          }),
        )
    ).then((dp) => {
      dp.prepare?.();
      return dp;
    });
    dataplaneCreated(creating);
    this.dataplane = await creating;

    if (opts.metricsAddr) {
      this.metricsServer = await startMetricsServer(opts.metricsAddr, this.registry, {
        ready: () => this.readyFlag,
        healthy: () => {
          const why = this.unhealthy();
          if (why) log.warn({ reason: why }, "healthz: unhealthy");
          return !why;
        },
      });
      log.info({ addr: opts.metricsAddr, port: this.metricsServer.port }, "metrics server listening");
    }

    this.loop.start();
    // A pod whose DEL never reached the agent (runtime crash, agent busy) goes once its namespace does.
    this.reconcileTimer = setInterval(() => {
      this.endpointServer?.reconcile().then(
        (gone) => gone.length > 0 && log.info({ removed: gone.map((e) => e.id) }, "endpoints whose network namespace is gone removed"),
        (err) => log.warn({ err: String(err) }, "could not reconcile endpoints"),
      );
    }, opts.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS);
    this.reconcileTimer.unref();
    if (this.model.config.networks.size > 0 || this.model.revision > 0) this.loop.submit();
    log.info({ controllers: opts.controllers, uplink, underlayIp, uplinkMtu: this.uplinkMtu, tls: !!opts.tls, token: opts.token?.file }, "agent started");
  }

  /** Stops talking to the controller. The kernel stays exactly as programmed. */
  async stop(): Promise<void> {
    await this.connection?.stop();
    clearInterval(this.reconcileTimer);
    this.relay?.stop();
    await this.endpointServer?.stop();
    await this.loop?.stop();
    await this.dns?.stop();
    this.dataplane?.close?.();
    this.journal?.close();
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    this.metrics?.controllerConnected.set(0);
    this.log.info("agent stopped; dataplane left as it is");
  }

  /** Reads the kernel back and repairs it now instead of waiting for the resync timer. */
  resync(): void {
    this.loop?.resync();
  }

  /** True while no apply runs, is queued or waits for a retry. */
  get idle(): boolean {
    return this.loop?.idle ?? true;
  }

  /** Why the plugin may not attach a pod to `network` here, or undefined. */
  private refuseEndpoint(network: string): string | undefined {
    const net = this.model.config.networks.get(network);
    if (!net) {
      const member = [...this.model.config.networks.keys()];
      return `network: node ${this.nodeName} is not a member of network "${network}" (${member.length ? `member of: ${member.join(", ")}` : "no networks from the controller yet"})`;
    }
    if (!net.subnet) return `network: node ${this.nodeName} has no subnet in network "${network}" yet${net.error ? ` (${net.error})` : ""}`;
    return undefined;
  }

  /** The endpoints the CNI plugin reported on this node (tests and tools). */
  get endpoints(): Endpoint[] {
    return this.endpointServer?.list() ?? [];
  }

  private joinRequest(): JoinRequest {
    return {
      nodeName: this.nodeName,
      underlayIp: this.self!.underlayIp,
      labels: this.opts.labels ?? {},
      agentVersion: AGENT_VERSION,
      vtepMacs: { ...this.macs },
      previousSubnets: { ...this.subnets },
      uplinkMtu: this.uplinkMtu,
    };
  }

  private onUpdate(u: ConfigUpdate, stream: StreamInfo): void {
    // A new stream always starts with a snapshot, which replaces whatever came before.
    if (this.metrics) this.metrics.updates.inc({ kind: u.snapshot ? "snapshot" : "delta" });
    else this.early[u.snapshot ? "snapshot" : "delta"]++;
    if (u.snapshot) {
      this.log.info({ revision: u.revision, networks: u.networks.length, peers: u.networks.reduce((s, n) => s + n.peers.length, 0), controller: stream.address }, "snapshot received");
    } else {
      this.log.debug({ revision: u.revision, networks: u.networks.length, removedNetworks: u.removedNetworks.length, peerUpdates: u.peerUpdates.length }, "delta received");
    }
    // Journal first: once recorded, a kill at any later instant restores at least this.
    this.journal?.record(u);
    this.model.apply(u);
    // Names follow the stream at once, without waiting for the kernel.
    this.dns?.onUpdate(u);
    this.epoch = stream.epoch;
    this.ensureMacs();
    this.loop?.submit();
  }

  /**
   * Every network gets its VTEP MAC before its device exists: chosen once,
   * persisted durably, then set at creation. A network new to this node is
   * the only case where the controller has to be told after the Join.
   */
  private ensureMacs(): void {
    const missing = [...this.model.config.networks.keys()].filter((n) => !this.macs[n]);
    if (missing.length === 0) return;
    for (const n of missing) this.macs[n] = randomMac();
    try {
      saveMacsSync(this.opts.stateDir, this.macs);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "could not persist the VTEP MACs; they will change on the next restart");
    }
    this.log.info({ vtepMacs: this.macs }, "VTEP MACs chosen for new networks: registering them with the controller");
    this.connection?.rejoin();
  }

  /** Hands the coalesced changes to the dataplane, then flushes. */
  private async flush(reason: ApplyReason): Promise<FlushResult> {
    const dp = this.dataplane ?? (await this.dataplaneReady!);
    const revision = this.model.revision;
    const epoch = this.epoch;
    const changes = this.model.takeChanges();
    if (changes.networksChanged) {
      const { specs, skipped } = toNetworkSpecs(this.model.config, this.macs);
      const key = JSON.stringify(skipped);
      if (key !== this.lastSkipped) {
        this.lastSkipped = key;
        for (const s of skipped) this.log.error({ network: s.network, reason: s.reason }, "network not programmed");
      }
      this.metrics?.networksSkipped.set(skipped.length);
      dp.setNetworks(this.self!, specs);
      const before = this.programmed;
      this.programmed = new Map(specs.map((s) => [s.name, s]));
      // A network the dataplane did not have (or now holds in another kind of table: a new mode or VNI): all its peers and endpoints are new to it.
      for (const s of specs) {
        const old = before.get(s.name);
        if (old && old.mode === s.mode && old.vni === s.vni && old.cidr === s.cidr) continue;
        const net = this.model.config.networks.get(s.name);
        for (const node of net?.peers.keys() ?? []) addTo(changes.peers, s.name, node);
        for (const key of net?.endpoints.keys() ?? []) addTo(changes.endpoints, s.name, key);
      }
    }
    for (const [network, nodes] of changes.peers) {
      if (!this.programmed.has(network)) continue;
      const peers = this.model.config.networks.get(network)?.peers;
      for (const node of nodes) {
        const p = node === this.nodeName ? undefined : peers?.get(node);
        if (!p) {
          dp.removePeer(network, node);
          this.skippedPeers.delete(`${network}/${node}`);
          continue;
        }
        const problem = dp.setPeer(network, p);
        if (problem) {
          // Logged once per reason; the peer comes back when the controller sends it complete.
          const k = `${network}/${node}`;
          if (this.skippedPeers.get(k) !== problem && this.skippedPeers.size < 10_000) this.log.warn({ network, node, reason: problem }, "peer not programmed");
          this.skippedPeers.set(k, problem);
        } else this.skippedPeers.delete(`${network}/${node}`);
      }
    }
    this.metrics?.peersSkipped.set(this.skippedPeers.size);
    this.handEndpoints(dp, changes.endpoints);
    const report = await dp.flush(reason);
    return { report, revision, epoch };
  }

  /** Remote endpoints to the dataplane (this node's own are the bridge's to learn); a malformed one is logged once, counted and skipped. */
  private handEndpoints(dp: DataplanePort, changed: Map<string, Set<string>>): void {
    for (const [network, keys] of changed) {
      const spec = this.programmed.get(network);
      if (!spec) continue;
      const endpoints = this.model.config.networks.get(network)?.endpoints;
      for (const key of keys) {
        const e = endpoints?.get(key);
        const k = `${network}/${key}`;
        if (!e || e.nodeName === this.nodeName) {
          dp.removeEndpoint(network, key);
          this.skippedEndpoints.delete(k);
          continue;
        }
        const problem = dp.setEndpoint(network, { key, nodeName: e.nodeName, ips: e.ips, mac: e.mac });
        if (!problem) {
          this.skippedEndpoints.delete(k);
          continue;
        }
        if (this.skippedEndpoints.get(k) !== problem && this.skippedEndpoints.size < 10_000) this.log.warn({ network, endpoint: key, reason: problem }, "endpoint not programmed");
        this.skippedEndpoints.set(k, problem);
      }
    }
    this.metrics?.endpointsSkipped.set(this.skippedEndpoints.size);
  }

  private afterApply({ report, revision, epoch }: FlushResult, reason: ApplyReason): void {
    const logFields = { revision, reason, changes: report.changes, byKind: report.byKind, durationMs: Math.round(report.durationMs * 10) / 10, full: report.full };
    if (reason === "resync" && report.changes === 0) this.log.debug(logFields, "resync: kernel matches");
    else if (reason === "resync") this.log.warn(logFields, "resync repaired drift");
    else if (report.changes > 0) this.log.info(logFields, "config applied");
    this.subnets = Object.fromEntries([...this.programmed.values()].map((n) => [n.name, n.subnet]));
    this.metrics?.setPeers(this.dataplane!.peerCounts());
    if (this.metrics) {
      this.metrics.endpoints.reset();
      for (const [name, n] of this.model.config.networks) if (n.endpoints.size > 0) this.metrics.endpoints.set({ network: name }, n.endpoints.size);
    }
    this.syncDns();
    // Each stream hears once per revision the kernel holds (a new stream too, for the same revision).
    if (epoch > 0 && (revision !== this.applied || epoch !== this.ackedEpoch)) {
      this.applied = revision;
      this.ackedEpoch = epoch;
      this.metrics?.appliedRevision.set(revision);
      this.connection?.ack(epoch, revision);
      if (!this.readyFlag && this.connection?.stream?.epoch === epoch) {
        this.readyFlag = true;
        this.log.info({ revision }, "first snapshot applied: ready");
      }
    }
  }

  /** DNS servers follow the programmed networks: the gateway address is on the bridge once an apply has put it there. */
  private syncDns(): void {
    const nets = [...this.programmed.values()].map((s) => ({ ...s, dns: !!this.model.config.networks.get(s.name)?.dns }));
    if (!this.dns) {
      if (!this.dnsWarned && nets.some((n) => n.dns)) this.log.warn("DNS not served: this agent programs another network namespace (tests only)");
      this.dnsWarned ||= nets.some((n) => n.dns);
      return;
    }
    this.dns.sync(nets, this.registry);
  }

  private applyFailed(err: Error, reason: ApplyReason): void {
    this.log.error({ revision: this.model.revision, reason, err: err.message }, "apply failed; will retry");
    const stream = this.connection?.stream;
    if (stream && this.epoch === stream.epoch) this.connection!.ack(stream.epoch, this.applied, `revision ${this.model.revision}: ${err.message}`);
  }
}


