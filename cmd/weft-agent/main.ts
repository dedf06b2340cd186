#!/usr/bin/env node
// weft-agent: joins a controller and makes this node's kernel match its share
// of the overlay. All logic lives in pkg/agent; this file parses flags.
import fs from "node:fs";
import os from "node:os";
import { Agent, cleanupNode, DEFAULT_RESYNC_INTERVAL_MS, DEFAULT_STUCK_THRESHOLD_MS, parseControllerAddresses } from "../../pkg/agent/index.js";
import { Command, envOption, InvalidArgumentError, parseBool, parseDuration, parseLabels, parseList, runMain } from "../../pkg/cli/index.js";
import { newLogger } from "../../pkg/log/index.js";
import { DEFAULT_DNS_DOMAIN } from "../../pkg/dns/records.js";
import { parseUpstream, type Upstream } from "../../pkg/dns/upstreams.js";

interface Flags {
  nodeName: string;
  controller: string;
  uplink?: string;
  underlayIp?: string;
  metricsAddr: string;
  cniConfDir: string;
  stateDir: string;
  resyncInterval: number;
  labels: Record<string, string>;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tokenFile?: string;
  disableTxChecksumOffload: boolean;
  cleanup: boolean;
  iptablesBackend: "auto" | "legacy" | "nft";
  commandTimeout: number;
  stuckThreshold: number;
  dnsDomain: string;
  dnsUpstream: Upstream[];
  logLevel: string;
}

const program = new Command("weft-agent")
  .description("Weft node agent: joins a controller over gRPC and programs this node's VXLAN overlay (devices, FDB, neighbours, routes, NAT, CNI config).\nEvery flag can also be set with the environment variable shown.")
  .addOption(envOption("--node-name <name>", "this node's name", os.hostname().toLowerCase(), "hostname"))
  .addOption(envOption("--controller <addrs>", "controller gRPC addresses HOST:PORT, comma-separated; the agent fails over between them", "127.0.0.1:9400"))
  .addOption(envOption("--uplink <iface>", "interface VXLAN traffic leaves by (default: the one holding the default route)"))
  .addOption(envOption("--underlay-ip <ip>", "IPv4 address peers send VXLAN traffic to (default: the uplink's first IPv4 address)"))
  .addOption(envOption("--metrics-addr <addr>", "HTTP address for /metrics, /healthz, /readyz", "0.0.0.0:9402"))
  .addOption(envOption("--cni-conf-dir <dir>", "where the CNI conflist is written", "/etc/cni/net.d"))
  .addOption(envOption("--state-dir <dir>", "agent state and CNI host-local data", "/var/lib/weft"))
  .addOption(envOption("--resync-interval <duration>", "how often the kernel is re-read and drift repaired", DEFAULT_RESYNC_INTERVAL_MS, "30s").argParser(parseDuration))
  .addOption(envOption("--labels <k=v,...>", "node labels, matched by networks' nodeSelector", {}, "none").argParser(parseLabels))
  .addOption(envOption("--tls-cert <file>", "client certificate (PEM, CN = node name); with --tls-key and --tls-ca enables mTLS"))
  .addOption(envOption("--tls-key <file>", "client private key (PEM)"))
  .addOption(envOption("--tls-ca <file>", "CA that signed the controller's certificate"))
  .addOption(envOption("--token-file <file>", "Kubernetes mode: authenticate with this projected ServiceAccount token (re-read on every connection) instead of a client certificate; needs --tls-ca only"))
  .addOption(envOption("--disable-tx-checksum-offload [bool]", "turn off tx checksum offload on VXLAN devices (old kernels with --random-fully, flannel#1279)", false).argParser(parseBool))
  .addOption(envOption("--iptables-backend <auto|legacy|nft>", "iptables backend to write to; auto: the one holding the host's rules (as kube-proxy's iptables-wrapper decides)", "auto").argParser(parseBackend))
  .addOption(envOption("--command-timeout <duration>", "kill a kernel command (ip, bridge, iptables) that runs longer than this; reads are retried", 10_000, "10s").argParser(parseDuration))
  .addOption(envOption("--stuck-threshold <duration>", "/healthz fails when a kernel command or an apply is stuck longer than this, or changes wait this long without a successful apply", DEFAULT_STUCK_THRESHOLD_MS, "60s").argParser(parseDuration))
  .addOption(envOption("--dns-domain <domain>", "networks with dns on answer <name> and <name>.<network>.<domain> on their gateway address", DEFAULT_DNS_DOMAIN).argParser(parseDomain))
  .addOption(envOption("--dns-upstream <ip[:port],...>", "where the embedded DNS forwards names it does not hold", [], "the host's /etc/resolv.conf").argParser(parseUpstreams))
  .addOption(envOption("--cleanup [bool]", "remove every kernel object, rule and file Weft created on this node, then exit", false).argParser(parseBool))
  .addOption(envOption("--log-level <level>", "trace, debug, info, warn, error", "info"))
  .showHelpAfterError();

function parseDomain(v: string): string {
  const d = v.toLowerCase().replace(/\.$/, "");
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(d) || d.length > 200) throw new InvalidArgumentError(`"${v}" is not a domain name (labels of a-z, 0-9 and -, separated by dots)`);
  return d;
}

function parseUpstreams(v: string): Upstream[] {
  try {
    return parseList(v).map(parseUpstream);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseBackend(v: string): "auto" | "legacy" | "nft" {
  if (v === "auto" || v === "legacy" || v === "nft") return v;
  throw new Error(`--iptables-backend: "${v}" is not auto, legacy or nft`);
}

await runMain(async () => {
  program.parse();
  const f = program.opts<Flags>();
  const log = newLogger("weft-agent", f.logLevel);

  if (f.cleanup) {
    await cleanupNode({ stateDir: f.stateDir, cniConfDir: f.cniConfDir, log });
    return;
  }

  if (f.tokenFile && (!f.tlsCa || f.tlsCert || f.tlsKey)) throw new Error("--token-file: needs --tls-ca (the controller's CA) and no --tls-cert/--tls-key");
  const tlsGiven = f.tokenFile ? 0 : [f.tlsCert, f.tlsKey, f.tlsCa].filter(Boolean).length;
  if (tlsGiven !== 0 && tlsGiven !== 3) throw new Error("--tls-cert, --tls-key and --tls-ca go together");
  if (f.resyncInterval > 0 && f.resyncInterval < 1000) throw new Error("--resync-interval: must be 0 (off) or at least 1s");
  const agent = new Agent({
    nodeName: f.nodeName,
    controllers: parseControllerAddresses(f.controller),
    uplink: f.uplink,
    underlayIp: f.underlayIp,
    metricsAddr: f.metricsAddr,
    cniConfDir: f.cniConfDir,
    stateDir: f.stateDir,
    resyncIntervalMs: f.resyncInterval,
    labels: f.labels,
    tls: tlsGiven ? { cert: fs.readFileSync(f.tlsCert!), key: fs.readFileSync(f.tlsKey!), ca: fs.readFileSync(f.tlsCa!) } : undefined,
    token: f.tokenFile ? { file: f.tokenFile, ca: fs.readFileSync(f.tlsCa!) } : undefined,
    disableTxChecksumOffload: f.disableTxChecksumOffload,
    iptablesBackend: f.iptablesBackend,
    commandTimeoutMs: f.commandTimeout,
    stuckThresholdMs: f.stuckThreshold,
    dnsDomain: f.dnsDomain,
    dnsUpstreams: f.dnsUpstream,
    log,
  });
  await agent.start();
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, "shutting down");
      agent.stop().then(resolve, resolve);
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
  });
});
