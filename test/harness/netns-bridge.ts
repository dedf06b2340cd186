// Makes a TCP service on the root namespace's loopback reachable at the same
// address inside another network namespace, without touching the root
// namespace's interfaces or routes: a Unix socket (a file, visible from every
// namespace) joins a listener in this process to a forwarder process inside the
// namespace. TLS passes through untouched, so a certificate for 127.0.0.1 stays valid.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { LabProcess } from "../../pkg/lab/process.js";
import { waitFor } from "../../pkg/lab/ports.js";

const FORWARDER = `
const net = require("net");
const [sock, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.pipe(u).pipe(c);
  c.on("error", () => u.destroy());
  u.on("error", () => c.destroy());
}).listen(Number(port), "127.0.0.1", () => console.log("forwarding"));
`;

export class NetnsBridge {
  private constructor(
    private readonly server: net.Server,
    private readonly forwarder: LabProcess,
    private readonly socketPath: string,
    private readonly sockets: Set<net.Socket>,
  ) {}

  /** 127.0.0.1:`port` inside `netns` reaches 127.0.0.1:`port` of the root namespace. */
  static async open(netns: string, port: number, runDir: string): Promise<NetnsBridge> {
    const socketPath = path.join(runDir, `bridge-${port}.sock`);
    fs.rmSync(socketPath, { force: true });
    // Tracked so close() can end them: a half-closed API connection is kept open by the server.
    const sockets = new Set<net.Socket>();
    const server = net.createServer((u) => {
      const c = net.connect(port, "127.0.0.1");
      for (const s of [u, c]) {
        sockets.add(s);
        s.once("close", () => sockets.delete(s));
      }
      u.pipe(c).pipe(u);
      u.on("error", () => c.destroy());
      c.on("error", () => u.destroy());
    });
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(socketPath, resolve));
    const forwarder = new LabProcess(`bridge-${port}`, netns, ["node", "-e", FORWARDER, socketPath, String(port)], runDir);
    forwarder.start();
    const bridge = new NetnsBridge(server, forwarder, socketPath, sockets);
    try {
      await waitFor(`the bridge into ${netns} on port ${port}`, () => {
        if (!forwarder.running) throw new Error(`bridge forwarder exited:\n${forwarder.tail()}`);
        return forwarder.tail().includes("forwarding");
      }, 15_000, 50);
    } catch (err) {
      await bridge.close();
      throw err;
    }
    return bridge;
  }

  async close(): Promise<void> {
    await this.forwarder.stop("SIGTERM", 3000).catch(() => undefined);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
    fs.rmSync(this.socketPath, { force: true });
  }
}
