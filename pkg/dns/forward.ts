// Forwarding a query upstream: UDP first, TCP when the answer is truncated,
// each upstream in turn until one answers, within one overall deadline.
import dgram from "node:dgram";
import net from "node:net";
import type { Upstream } from "./upstreams.js";

export const MAX_TCP_MESSAGE = 65535;

export class ForwardError extends Error {
  constructor(
    readonly reason: "timeout" | "error",
    message: string,
  ) {
    super(message);
  }
}

function udpAsk(up: Upstream, query: Buffer, deadline: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(up.host.includes(":") ? "udp6" : "udp4");
    const id = query.readUInt16BE(0);
    const timer = setTimeout(() => done(new ForwardError("timeout", `${up.host}:${up.port} did not answer in time`)), Math.max(1, deadline - Date.now()));
    const done = (err?: Error, msg?: Buffer): void => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(msg!);
    };
    sock.on("error", (err) => done(new ForwardError("error", `${up.host}:${up.port}: ${err.message}`)));
    // Only an answer with our id counts: a spoofed or stale datagram is ignored.
    sock.on("message", (msg, rinfo) => {
      if (msg.length >= 12 && msg.readUInt16BE(0) === id && rinfo.address === up.host && rinfo.port === up.port) done(undefined, msg);
    });
    sock.send(query, up.port, up.host);
  });
}

function tcpAsk(up: Upstream, query: Buffer, deadline: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host: up.host, port: up.port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new ForwardError("timeout", `${up.host}:${up.port} (TCP) did not answer in time`)), Math.max(1, deadline - Date.now()));
    const fail = (err: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    sock.on("connect", () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      sock.write(Buffer.concat([len, query]));
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    sock.on("error", (err) => fail(new ForwardError("error", `${up.host}:${up.port} (TCP): ${err.message}`)));
    sock.on("end", () => fail(new ForwardError("error", `${up.host}:${up.port} (TCP) closed before answering`)));
  });
}

const TC_BIT = 0x0200;

/**
 * The upstream's answer to `query` (wire format, id preserved). `viaTcp`: the
 * client asked over TCP, so ask over TCP too. Throws ForwardError when no
 * upstream answered before the deadline.
 */
export async function forward(upstreams: Upstream[], query: Buffer, timeoutMs: number, viaTcp: boolean): Promise<{ answer: Buffer; truncatedRetry: boolean }> {
  if (upstreams.length === 0) throw new ForwardError("error", "no upstream resolvers");
  const deadline = Date.now() + timeoutMs;
  // Each upstream gets an equal share of what is left, so a dead first one cannot eat the whole budget.
  let last: Error = new ForwardError("timeout", "no upstream answered");
  for (let i = 0; i < upstreams.length && Date.now() < deadline; i++) {
    const share = Date.now() + (deadline - Date.now()) / (upstreams.length - i);
    try {
      if (viaTcp) return { answer: await tcpAsk(upstreams[i], query, share), truncatedRetry: false };
      const answer = await udpAsk(upstreams[i], query, share);
      if ((answer.readUInt16BE(2) & TC_BIT) === 0) return { answer, truncatedRetry: false };
      return { answer: await tcpAsk(upstreams[i], query, deadline), truncatedRetry: true };
    } catch (err) {
      last = err as Error;
    }
  }
  throw last;
}
