import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, waitFor } from "./ports.js";
import { stopChild } from "./process.js";

export interface EtcdOptions {
  /** Run inside this network namespace (ip netns exec); default: current namespace on loopback. */
  netns?: string;
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Data dir; default a fresh temp dir that stop() removes. */
  dataDir?: string;
  /** Where etcd's own output goes; default discarded. */
  logFile?: string;
  /** Serve clients over https and require client certificates from this CA (etcd --client-cert-auth). */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

/**
 * A real etcd server (Debian's etcd-server) on free ports with a throw-away
 * data dir. Used by the test harness, the benchmarks and the lab.
 */
export class EtcdProcess {
  readonly endpoint: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly ownsDataDir: boolean;
  readonly dataDir: string;

  private constructor(
    private readonly opts: EtcdOptions,
    readonly host: string,
    readonly clientPort: number,
    readonly peerPort: number,
    /** Plain-http /health listener (needed when clients must present certificates). */
    private readonly metricsPort: number,
  ) {
    this.endpoint = `${opts.tls ? "https" : "http"}://${host}:${clientPort}`;
    this.ownsDataDir = !opts.dataDir;
    this.dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "weft-etcd-"));
  }

  static async start(opts: EtcdOptions = {}): Promise<EtcdProcess> {
    const host = opts.host ?? "127.0.0.1";
    // Ports are picked in the current namespace; inside a fresh netns every port is free anyway.
    const etcd = new EtcdProcess(opts, host, await freePort(), await freePort(), await freePort());
    await etcd.startProcess();
    return etcd;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private async startProcess(): Promise<void> {
    const args = [
      "--name", "weft-test",
      "--data-dir", this.dataDir,
      "--listen-client-urls", this.endpoint,
      "--advertise-client-urls", this.endpoint,
      "--listen-peer-urls", `http://${this.host}:${this.peerPort}`,
      "--initial-advertise-peer-urls", `http://${this.host}:${this.peerPort}`,
      "--initial-cluster", `weft-test=http://${this.host}:${this.peerPort}`,
      "--log-level", "warn",
      "--logger", "zap",
      "--auto-compaction-retention", "0",
      "--listen-metrics-urls", this.metricsUrl,
    ];
    const tls = this.opts.tls;
    if (tls) args.push("--cert-file", tls.certFile, "--key-file", tls.keyFile, "--client-cert-auth", "--trusted-ca-file", tls.caFile);
    const cmd = this.opts.netns ? "ip" : "etcd";
    const argv = this.opts.netns ? ["netns", "exec", this.opts.netns, "etcd", ...args] : args;
    const out = this.opts.logFile ? fs.openSync(this.opts.logFile, "a") : "ignore";
    const child = spawn(cmd, argv, { stdio: ["ignore", out, out] });
    if (typeof out === "number") fs.closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    let failed: Error | undefined;
    child.once("error", (err) => (failed = err));
    child.once("exit", (code) => (failed ??= new Error(`etcd exited with code ${code}`)));
    await waitFor(`etcd at ${this.endpoint}`, async () => {
      if (failed) throw failed;
      return this.healthy();
    }, 30_000);
  }

  private get metricsUrl(): string {
    return `http://${this.host}:${this.metricsPort}`;
  }

  /** True when etcd answers its health endpoint (asked from inside its namespace). */
  async healthy(): Promise<boolean> {
    if (!this.opts.netns) {
      const res = await fetch(`${this.metricsUrl}/health`, { signal: AbortSignal.timeout(1000) });
      return res.ok;
    }
    const { execFile } = await import("node:child_process");
    return new Promise((resolve) => {
      execFile("ip", ["netns", "exec", this.opts.netns!, "curl", "-sf", "--max-time", "1", `${this.metricsUrl}/health`],
        { timeout: 3000 }, (err) => resolve(!err));
    });
  }

  /** Stops etcd (SIGTERM, then SIGKILL after 5 s) and keeps the data dir. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await stopChild(this.child, this.exited, signal, 5000);
  }

  /** Starts etcd again on the same ports and data dir, after `downMs` without it (an outage). */
  async restart(downMs = 0, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.kill(signal);
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.startProcess();
  }

  /** Stops etcd and removes the data dir it created. */
  async stop(): Promise<void> {
    await this.kill();
    if (this.ownsDataDir) fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}
