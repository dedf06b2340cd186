// weft-agent's engine: restores the last applied config from the state dir,
// holds one Join stream to a controller, turns every update into the node's
// desired dataplane and hands it to the apply loop; acknowledges, persists and
// re-registers (new VTEP MACs) after each successful apply.
import os from "node:os";
import * as grpc from "@grpc/grpc-js";
import { applyConfigUpdate, emptyDesired, type ConfigUpdate, type DesiredConfig, type JoinRequest } from "../api/index.js";
import { isIPv4 } from "../ip/index.js";
import { newLogger, type Logger } from "../log/index.js";
import { newRegistry, startMetricsServer, type MetricsServer, type Registry } from "../metrics/index.js";
import { ApplyLoop, type ApplyItem } from "./apply-loop.js";
import { ControllerConnection, type StreamInfo } from "./connection.js";
import type { ApplyReason, ApplyReport, DataplanePort, NodeDesired } from "./dataplane-port.js";
import { peerCounts, subnetsOf, toNodeDesired, type NodeIdentity } from "./desired.js";
import { agentMetrics, type AgentMetrics } from "./metrics.js";
import { configFromState, loadState, saveState, stateFromConfig } from "./state.js";
import { AGENT_VERSION } from "./version.js";
import { channelCredentials, type TokenAuth } from "./credentials.js";

export const DEFAULT_RESYNC_INTERVAL_MS = 30_000;

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** How the agent learns about its uplink; the kernel's answer unless a test injects one. */
export interface HostProbe {
  defaultUplink(netns?: string): Promise<string>;
  interfaceInfo(name: string, netns?: string): Promise<{ mtu: number; ipv4?: string; mac: string }>;
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
}

interface Tag {
  /** Stream the config came from; 0 = restored from the state dir. */
  epoch: number;
  config: DesiredConfig;
}

export class Agent {
  readonly log: Logger;
  readonly registry: Registry;
  readonly nodeName: string;
  private readonly metrics: AgentMetrics;
  private dataplane?: DataplanePort;
  private loop?: ApplyLoop<Tag>;
  private connection?: ControllerConnection;
  private metricsServer?: MetricsServer;
  private self?: NodeIdentity;
  private uplinkMtu = 0;
  /** Newest config known, whether applied yet or not. */
  private latest?: Tag;
  private macs: Record<string, string> = {};
  private subnets: Record<string, string> = {};
  private sentMacs = "";
  private lastSkipped = "";
  private readyFlag = false;
  private everConnected = false;
  private applied = 0;
  private started = false;

  constructor(private readonly opts: AgentOptions) {
    this.nodeName = opts.nodeName ?? os.hostname().toLowerCase();
    this.log = (opts.log ?? newLogger("weft-agent")).child({ node: this.nodeName });
    this.registry = opts.registry ?? newRegistry();
    this.metrics = agentMetrics(this.registry);
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

  /** The desired state last programmed into the kernel. */
  get lastApplied(): NodeDesired | undefined {
    return this.loop?.lastApplied?.desired;
  }

  /** MACs of this node's VXLAN devices, as registered with the controller. */
  get vtepMacs(): Record<string, string> {
    return { ...this.macs };
  }

  async start(): Promise<void> {
    if (this.started) throw new Error("agent already started");
    this.started = true;
    const { opts, log } = this;
    if (opts.controllers.length === 0) throw new Error("controller: at least one address is needed");

    const host = opts.host ?? (opts.dataplane ? undefined : (await import("./kernel.js")).kernelHost);
    const uplink = opts.uplink ?? (host ? await host.defaultUplink(opts.netns) : undefined);
    if (!uplink) throw new Error("uplink: not given and no way to find the default route's interface");
    const info = host ? await host.interfaceInfo(uplink, opts.netns).catch((err) => {
      throw new Error(`uplink: ${uplink}: ${(err as Error).message}`);
    }) : undefined;
    const underlayIp = opts.underlayIp ?? info?.ipv4;
    if (!underlayIp) throw new Error(`underlay-ip: not given and uplink ${uplink} has no IPv4 address`);
    if (!isIPv4(underlayIp)) throw new Error(`underlay-ip: "${underlayIp}" is not an IPv4 address`);
    this.uplinkMtu = info?.mtu ?? 0;
    this.self = { nodeName: this.nodeName, uplink, underlayIp };

    this.dataplane = opts.dataplane ?? (await import("./kernel.js")).createKernelDataplane({
      log: this.log,
      registry: this.registry,
      netns: opts.netns,
      cniConfDir: opts.cniConfDir,
      stateDir: opts.stateDir,
      disableTxChecksumOffload: opts.disableTxChecksumOffload,
    });

    this.loop = new ApplyLoop<Tag>({
      dataplane: this.dataplane,
      log,
      resyncIntervalMs: opts.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS,
      onApplied: (item, report, reason) => this.afterApply(item, report, reason),
      onFailed: (item, err, reason) => this.applyFailed(item, err, reason),
    });

    try {
      const state = await loadState(opts.stateDir);
      if (state) {
        this.macs = state.vtepMacs;
        this.subnets = state.subnets;
        this.latest = { epoch: 0, config: configFromState(state) };
        log.info({ revision: state.revision, networks: state.networks.map((n) => n.name), stateDir: opts.stateDir }, "restoring last applied config from the state dir");
      }
    } catch (err) {
      // Unusable state must not keep the node off the network: the controller's snapshot replaces it.
      log.error({ err: (err as Error).message }, "ignoring unreadable state file");
    }

    if (opts.metricsAddr) {
      this.metricsServer = await startMetricsServer(opts.metricsAddr, this.registry, { ready: () => this.readyFlag });
      log.info({ addr: opts.metricsAddr, port: this.metricsServer.port }, "metrics server listening");
    }

    this.loop.start();
    if (this.latest) this.submitLatest();

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
        this.metrics.controllerConnected.set(1);
        if (this.everConnected) this.metrics.reconnects.inc();
        this.everConnected = true;
      },
      onDisconnected: () => this.metrics.controllerConnected.set(0),
    });
    this.connection.start();
    log.info({ controllers: opts.controllers, uplink, underlayIp, uplinkMtu: this.uplinkMtu, tls: !!opts.tls, token: opts.token?.file }, "agent started");
  }

  /** Stops talking to the controller. The kernel stays exactly as programmed. */
  async stop(): Promise<void> {
    await this.connection?.stop();
    await this.loop?.stop();
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    this.metrics.controllerConnected.set(0);
    this.log.info("agent stopped; dataplane left as it is");
  }

  /** Re-applies the last applied state now instead of waiting for the resync timer. */
  resync(): void {
    this.loop?.resync();
  }

  /** True while no apply runs, is queued or waits for a retry. */
  get idle(): boolean {
    return this.loop?.idle ?? true;
  }

  private joinRequest(): JoinRequest {
    this.sentMacs = JSON.stringify(this.macs);
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
    const base = u.snapshot || !this.latest || this.latest.epoch !== stream.epoch ? emptyDesired() : this.latest.config;
    const config = applyConfigUpdate(base, u);
    this.metrics.updates.inc({ kind: u.snapshot ? "snapshot" : "delta" });
    this.log.info(
      u.snapshot
        ? { revision: u.revision, networks: u.networks.length, peers: u.networks.reduce((s, n) => s + n.peers.length, 0), controller: stream.address }
        : { revision: u.revision, networks: u.networks.length, removedNetworks: u.removedNetworks.length, peerUpdates: u.peerUpdates.length },
      u.snapshot ? "snapshot received" : "delta received",
    );
    this.latest = { epoch: stream.epoch, config };
    this.submitLatest();
  }

  private submitLatest(): void {
    const tag = this.latest!;
    const { desired, skippedNetworks, skippedPeers } = toNodeDesired(tag.config, this.self!, this.macs);
    const skipped = JSON.stringify(skippedNetworks);
    if (skipped !== this.lastSkipped) {
      this.lastSkipped = skipped;
      for (const s of skippedNetworks) this.log.error({ network: s.network, reason: s.reason }, "network not programmed");
    }
    this.metrics.networksSkipped.set(skippedNetworks.length);
    if (skippedPeers.length > 0) this.log.debug({ skippedPeers }, "peers left out until the controller sends them complete");
    this.loop!.submit({ desired, revision: tag.config.revision, tag });
  }

  private async afterApply(item: ApplyItem<Tag>, report: ApplyReport, reason: ApplyReason): Promise<void> {
    const { epoch } = item.tag;
    const logFields = { revision: item.revision, reason, changes: report.changes, byKind: report.byKind, durationMs: Math.round(report.durationMs) };
    if (reason === "resync" && report.changes === 0) this.log.debug(logFields, "resync: kernel matches");
    else if (reason === "resync") this.log.warn(logFields, "resync repaired drift");
    else this.log.info(logFields, "config applied");

    // Devices created just now have MACs the controller (and the state file) must learn.
    const actual = await this.dataplane!.vtepMacs().catch((err) => {
      this.log.warn({ err: (err as Error).message }, "could not read the VTEP MACs; keeping the known ones");
      return {} as Record<string, string>;
    });
    const macs: Record<string, string> = {};
    for (const n of item.desired.networks) {
      const mac = actual[n.name] ?? this.macs[n.name];
      if (mac) macs[n.name] = mac;
    }
    const macsChanged = JSON.stringify(macs) !== JSON.stringify(this.macs);
    this.macs = macs;
    this.subnets = subnetsOf(item.desired);
    this.metrics.setPeers(peerCounts(item.desired));

    if (reason === "update" && epoch > 0) {
      // The kernel holds this revision whether or not the file could be written: ack it anyway.
      await saveState(this.opts.stateDir, stateFromConfig(item.tag.config, this.macs, this.subnets)).catch((err) =>
        this.log.error({ err: (err as Error).message, stateDir: this.opts.stateDir }, "could not persist the applied config; a restart without a controller would restore an older one"),
      );
      this.applied = item.revision;
      this.metrics.appliedRevision.set(item.revision);
      this.connection?.ack(epoch, item.revision);
      if (!this.readyFlag) {
        this.readyFlag = true;
        this.log.info({ revision: item.revision }, "first snapshot applied: ready");
      }
    }
    if (JSON.stringify(this.macs) !== this.sentMacs) {
      this.log.info({ vtepMacs: this.macs }, "VTEP MACs changed: registering them with the controller");
      this.connection?.rejoin();
    }
    // Make the MACs part of the desired state, so a device recreated by a resync keeps its address.
    if (macsChanged && item.desired.networks.some((n) => n.vtepMac !== this.macs[n.name]) && this.latest) this.submitLatest();
  }

  private applyFailed(item: ApplyItem<Tag>, err: Error, reason: ApplyReason): void {
    this.log.error({ revision: item.revision, reason, err: err.message }, "apply failed; will retry");
    const stream = this.connection?.stream;
    if (stream && item.tag.epoch === stream.epoch) this.connection!.ack(stream.epoch, this.applied, `revision ${item.revision}: ${err.message}`);
  }
}
