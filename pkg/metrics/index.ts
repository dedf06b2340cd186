import http from "node:http";
import type { AddressInfo } from "node:net";
import client from "prom-client";

export { client as prom };
export type Registry = client.Registry;

/** A fresh registry with the default process metrics, so each component (and each test) has its own. */
export function newRegistry(withProcessMetrics = true): client.Registry {
  const registry = new client.Registry();
  if (withProcessMetrics) client.collectDefaultMetrics({ register: registry });
  return registry;
}

/** Splits "host:port", ":port" or "[v6]:port". An empty host means all interfaces. */
export function parseListenAddress(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  if (!m) throw new Error(`listen address "${addr}" is not host:port`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`listen address "${addr}": port out of range`);
  return { host: m[1] ?? m[2] ?? "", port };
}

/** A check's answer: true/false, or the list of problems (empty: fine), which the endpoint prints. */
export type CheckResult = boolean | string[];

export interface HealthChecks {
  /** Process is alive and its loops are running. */
  healthy?: () => CheckResult;
  /** Component has done its first useful work (e.g. first snapshot applied). */
  ready?: () => CheckResult;
}

function answer(res: http.ServerResponse, check: (() => CheckResult) | undefined, good: string, bad: string): void {
  const result = check ? check() : true;
  const ok = Array.isArray(result) ? result.length === 0 : result;
  res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
  res.end(ok ? `${good}\n` : Array.isArray(result) ? `${bad}: ${result.join("; ")}\n` : `${bad}\n`);
}

export interface MetricsServer {
  /** The bound port (useful when asked for port 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz and /readyz. */
export async function startMetricsServer(
  addr: string,
  registry: client.Registry,
  checks: HealthChecks = {},
): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(addr);
  const server = http.createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    try {
      if (path === "/metrics") {
        const body = await registry.metrics();
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(body);
      } else if (path === "/healthz") {
        answer(res, checks.healthy, "ok", "unhealthy");
      } else if (path === "/readyz") {
        answer(res, checks.ready, "ready", "not ready");
      } else {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("not found: try /metrics, /healthz, /readyz\n");
      }
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(err) + "\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host || undefined, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
