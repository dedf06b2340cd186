import net from "node:net";

/** A TCP port that was free on `host` a moment ago (the kernel picked it). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  // A port is free only until somebody binds it: one handed out to a process
  // that has not bound it yet can come back from the kernel on the next call
  // (two controller replicas once got the same --listen port). Never twice per process.
  for (;;) {
    const port = await kernelFreePort(host);
    if (handedOut.has(port)) continue;
    if (handedOut.size >= 10_000) handedOut.clear(); // bounded; the ephemeral range has about 28 000
    handedOut.add(port);
    return port;
  }
}

const handedOut = new Set<number>();

function kernelFreePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once `check` returns true, polling every `intervalMs`; rejects after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
