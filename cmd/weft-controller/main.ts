#!/usr/bin/env node
// weft-controller: keeps subnet leases and VTEP membership in etcd and streams
// each agent its desired config over gRPC.
import fs from "node:fs";
import { Command, envOption, parseBool, parseDuration, runMain } from "../../pkg/cli/index.js";
import { DEFAULT_KUBE_RESYNC_MS, startController } from "../../pkg/controller/index.js";
import type { Metadata } from "@grpc/grpc-js";
import { newLogger } from "../../pkg/log/index.js";
import { etcdConnection, etcdFlagOptions, type EtcdFlags } from "../../pkg/store/index.js";

interface Flags extends EtcdFlags {
  listen: string;
  metricsAddr: string;
  leaseTtl: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  agentTokenAudience?: string;
  agentServiceAccount: string;
  logLevel: string;
  kube: boolean;
  kubeconfig?: string;
  kubeResync: number;
  leaderTtl: number;
  gcInterval: number;
  healthEtcdTimeout: number;
  identity?: string;
}

const program = new Command("weft-controller")
  .description("Weft controller: subnet leases and VTEP membership in etcd, config streamed to agents over gRPC.\nEvery flag can also be set with the environment variable shown.");
for (const o of etcdFlagOptions()) program.addOption(o);
program
  .addOption(envOption("--listen <addr>", "gRPC listen address for agents", "0.0.0.0:9400"))
  .addOption(envOption("--metrics-addr <addr>", "HTTP address for /metrics, /healthz, /readyz", "0.0.0.0:9401"))
  .addOption(envOption("--lease-ttl <duration>", "how long a node keeps its subnets with no agent connected", 24 * 3600 * 1000, "24h").argParser(parseDuration))
  .addOption(envOption("--tls-cert <file>", "server certificate (PEM); with --tls-key and --tls-ca enables mTLS"))
  .addOption(envOption("--tls-key <file>", "server private key (PEM)"))
  .addOption(envOption("--tls-ca <file>", "CA that signs agent client certificates; an agent may act only for the node named in its certificate's CN"))
  .addOption(envOption("--kube [enabled]", "Kubernetes mode with the in-cluster service account: networks from OverlayNetwork objects, members from Nodes", false).argParser(parseBool))
  .addOption(envOption("--kubeconfig <file>", "Kubernetes mode with this kubeconfig (implies --kube)"))
  .addOption(envOption("--kube-resync <duration>", "Kubernetes mode: how often every status and Node condition is re-checked", DEFAULT_KUBE_RESYNC_MS, "5m").argParser(parseDuration))
  .addOption(envOption("--leader-ttl <duration>", "TTL of the leader key: a dead or paused leader is replaced after about this long", 10_000, "10s").argParser(parseDuration))
  .addOption(envOption("--gc-interval <duration>", "how often the leader garbage-collects orphaned leases", 60_000, "1m").argParser(parseDuration))
  .addOption(envOption("--health-etcd-timeout <duration>", "/healthz fails once etcd has not answered for this long", 30_000, "30s").argParser(parseDuration))
  .addOption(envOption("--identity <name>", "name of this replica in logs and in the leader key (default: hostname-pid)"))
  .addOption(envOption("--agent-token-audience <aud>", "Kubernetes mode: agents authenticate with projected ServiceAccount tokens of this audience, checked by TokenReview (the token's bound node must be the node joining); --tls-cert/--tls-key only, no client certificates"))
  .addOption(envOption("--agent-service-account <ns/name>", "Kubernetes mode with --agent-token-audience: the agents' ServiceAccount", "weft-system/weft-agent"))
  .addOption(envOption("--log-level <level>", "trace, debug, info, warn, error", "info"))
  .showHelpAfterError();

await runMain(async () => {
  program.parse();
  const f = program.opts<Flags>();
  const tokenAuth = !!f.agentTokenAudience;
  if (tokenAuth && !(f.kube || f.kubeconfig)) throw new Error("--agent-token-audience: needs Kubernetes mode (--kube or --kubeconfig)");
  if (tokenAuth && (!f.tlsCert || !f.tlsKey)) throw new Error("--agent-token-audience: needs --tls-cert and --tls-key (tokens travel over TLS only)");
  const tlsGiven = [f.tlsCert, f.tlsKey, f.tlsCa].filter(Boolean).length;
  if (!tokenAuth && tlsGiven !== 0 && tlsGiven !== 3) throw new Error("--tls-cert, --tls-key and --tls-ca go together");
  if (f.leaseTtl < 5000) throw new Error("--lease-ttl: must be at least 5s");
  if (f.kubeResync < 1000) throw new Error("--kube-resync: must be at least 1s");
  if (f.leaderTtl < 2000) throw new Error("--leader-ttl: must be at least 2s");
  if (f.gcInterval < 100) throw new Error("--gc-interval: must be at least 100ms");
  if (f.healthEtcdTimeout < 1000) throw new Error("--health-etcd-timeout: must be at least 1s");
  const etcd = etcdConnection(f);
  const log = newLogger("weft-controller", f.logLevel);
  const kubeMode = f.kube || !!f.kubeconfig;
  // The Kubernetes client is loaded only in Kubernetes mode: it is most of a standalone controller's start-up time and memory.
  const k8s = kubeMode ? await import("../../pkg/kube/index.js") : undefined;
  const kube = k8s
    ? k8s.KubeClient.fromOptions(
        { kubeconfig: f.kubeconfig },
        { log: log.child({ component: "kube" }), onError: (err) => log.warn({ err: String(err) }, "Kubernetes list/watch failed; retrying") },
      )
    : undefined;
  if (kube) log.info({ kubeconfig: f.kubeconfig ?? "in-cluster" }, "Kubernetes mode: networks from OverlayNetworks, members from Nodes");
  const controller = await startController({
    etcdEndpoints: etcd.endpoints,
    etcdPrefix: etcd.prefix,
    etcdTls: etcd.tls,
    listen: f.listen,
    metricsAddr: f.metricsAddr,
    leaseTtlSeconds: Math.round(f.leaseTtl / 1000),
    tls: tlsGiven ? { cert: fs.readFileSync(f.tlsCert!), key: fs.readFileSync(f.tlsKey!), ca: f.tlsCa && !tokenAuth ? fs.readFileSync(f.tlsCa) : null } : undefined,
    authorizeJoin: tokenAuth
      ? ((auth) => (md: Metadata, node: string) => auth.check(md.get("authorization")[0]?.toString(), node))(
          new k8s!.AgentTokenAuthenticator({ review: k8s!.tokenReviewer(kube!.kc), audience: f.agentTokenAudience!, serviceAccount: f.agentServiceAccount }),
        )
      : undefined,
    kube,
    kubeResyncMs: f.kubeResync,
    leaderTtlSeconds: Math.round(f.leaderTtl / 1000),
    gcIntervalMs: f.gcInterval,
    healthEtcdTimeoutMs: f.healthEtcdTimeout,
    identity: f.identity,
    log,
  });
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, "shutting down");
      controller.stop().then(resolve, resolve);
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
  });
});
