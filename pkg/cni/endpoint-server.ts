// The agent's side of the plugin contract: a unix socket in the state dir that
// takes endpoint reports, keeps the node's endpoints in a file that survives
// restarts, and tells its owner (the agent) what changed so it can relay it.
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";
import { ENDPOINT_SOCKET, MAX_REQUEST_BYTES, decodeEndpoint, decodeRequest, endpointId, sameEndpoint, type Endpoint, type EndpointReply, type EndpointRequest } from "./endpoint.js";

export const ENDPOINTS_FILE = "endpoints.json";
const REQUEST_TIMEOUT_MS = 5000;

export interface EndpointServerOptions {
  stateDir: string;
  /** Why an endpoint on `network` is refused (the node is no member), or undefined to accept. */
  refuse?: (network: string) => string | undefined;
  /** Called after every change with the endpoints added/replaced and the ids removed. */
  onChange?: (changed: Endpoint[], removed: Endpoint[]) => void;
  /** Logged once per problem; the request is refused. */
  warn?: (msg: string, fields: Record<string, unknown>) => void;
  /** Does a netns path still exist? (Test seam: defaults to stat.) */
  netnsExists?: (netns: string) => Promise<boolean>;
}

async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

/** The node's endpoints, keyed by `<containerId>/<ifName>`, persisted on every change. */
export class EndpointServer {
  private readonly endpoints = new Map<string, Endpoint>();
  private server?: net.Server;
  /** Saves are serialised, so the file always holds the latest table. */
  private saving: Promise<void> = Promise.resolve();
  /** Requests are handled one at a time: a DEL cannot overtake the ADD it undoes. */
  private handling: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: EndpointServerOptions) {}

  get socketPath(): string {
    return path.join(this.opts.stateDir, ENDPOINT_SOCKET);
  }

  private get file(): string {
    return path.join(this.opts.stateDir, ENDPOINTS_FILE);
  }

  list(): Endpoint[] {
    return [...this.endpoints.values()];
  }

  /** Loads the saved table (entries that no longer decode are dropped and logged), then listens. */
  async start(): Promise<void> {
    await fs.mkdir(this.opts.stateDir, { recursive: true });
    await this.load();
    await fs.rm(this.socketPath, { force: true });
    // Half-open: the plugin ends its side after the request; the answer follows on ours.
    const server = net.createServer({ allowHalfOpen: true }, (conn) => this.serve(conn));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    await fs.chmod(this.socketPath, 0o600);
    server.on("error", (err) => this.opts.warn?.("endpoint socket error", { err: String(err) }));
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    await this.saving;
  }

  private async load(): Promise<void> {
    let text: string;
    try {
      text = await fs.readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      this.opts.warn?.("endpoints file is not JSON; starting with no endpoints", { file: this.file });
      return;
    }
    for (const [i, v] of (Array.isArray(raw) ? raw : []).entries()) {
      const ep = decodeEndpoint(v, `${ENDPOINTS_FILE}[${i}]`);
      if (Array.isArray(ep)) this.opts.warn?.("saved endpoint skipped", { problems: ep });
      else this.endpoints.set(ep.id, ep);
    }
  }

  /**
   * Removes endpoints whose network namespace is gone (the runtime deleted the
   * pod while the agent was down, or its DEL never reached the agent). Returns the removed.
   */
  async reconcile(): Promise<Endpoint[]> {
    const exists = this.opts.netnsExists ?? pathExists;
    const gone: Endpoint[] = [];
    for (const ep of this.endpoints.values()) if (!(await exists(ep.netns))) gone.push(ep);
    for (const ep of gone) if (this.endpoints.get(ep.id) === ep) this.endpoints.delete(ep.id);
    if (gone.length > 0) await this.changed([], gone);
    return gone;
  }

  private serve(conn: net.Socket): void {
    let buf = "";
    conn.setEncoding("utf8");
    conn.setTimeout(REQUEST_TIMEOUT_MS, () => conn.destroy());
    const reply = (r: EndpointReply): void => {
      conn.end(JSON.stringify(r) + "\n");
    };
    conn.on("data", (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST_BYTES) {
        conn.removeAllListeners("data");
        reply({ ok: false, error: `request: larger than ${MAX_REQUEST_BYTES} bytes` });
      }
    });
    conn.on("error", () => conn.destroy());
    conn.on("end", () => {
      if (buf.length > MAX_REQUEST_BYTES) return;
      const req = decodeRequest(buf);
      if (Array.isArray(req)) {
        this.opts.warn?.("endpoint report refused", { problems: req });
        reply({ ok: false, error: req.join("; ") });
        return;
      }
      const run = this.handling.then(() => this.handle(req));
      this.handling = run.catch(() => undefined);
      run.then(reply, (err) => reply({ ok: false, error: (err as Error).message }));
    });
  }

  /** Applies one decoded request; exported behaviour of the socket. */
  async handle(req: EndpointRequest): Promise<EndpointReply> {
    switch (req.op) {
      case "status":
        return { ok: true };
      case "add": {
        const why = this.opts.refuse?.(req.endpoint.network);
        if (why) return { ok: false, error: why };
        const old = this.endpoints.get(req.endpoint.id);
        if (old && sameEndpoint(old, req.endpoint)) return { ok: true };
        this.endpoints.set(req.endpoint.id, req.endpoint);
        await this.changed([req.endpoint], []);
        return { ok: true };
      }
      case "check": {
        const have = this.endpoints.get(req.endpoint.id);
        if (!have) return { ok: false, error: `endpoint ${req.endpoint.id} is not registered` };
        if (!sameEndpoint(have, req.endpoint)) return { ok: false, error: `endpoint ${req.endpoint.id} is registered with other addresses or MAC` };
        return { ok: true };
      }
      case "del": {
        const id = endpointId(req.containerId, req.ifName);
        const old = this.endpoints.get(id);
        if (!old) return { ok: true };
        this.endpoints.delete(id);
        await this.changed([], [old]);
        return { ok: true };
      }
    }
  }

  /** Persists before anyone is told, so a report acknowledged to the plugin survives a crash. */
  private async changed(changed: Endpoint[], removed: Endpoint[]): Promise<void> {
    const snapshot = JSON.stringify(this.list(), null, 1) + "\n";
    // A failed save must not block later ones: the next change writes the whole table again.
    this.saving = this.saving.catch(() => undefined).then(() => writeFileAtomic(this.file, snapshot, { mode: 0o600 }));
    await this.saving;
    this.opts.onChange?.(changed, removed);
  }
}
