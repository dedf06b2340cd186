// One network's embedded resolver: UDP and TCP on the node's gateway address
// of that network. Local names from NetworkRecords, the rest forwarded. Work
// per query is bounded (one question, bounded message sizes, a cap on
// forwards in flight and on TCP connections); nothing a client sends can stop it.
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket, { type Answer, type DecodedPacket, type Packet, type Question } from "dns-packet";
import type { Logger } from "../log/index.js";
import { ForwardError, forward, MAX_TCP_MESSAGE } from "./forward.js";
import type { DnsMetrics } from "./metrics.js";
import { NetworkRecords, RECORD_TTL_SECONDS } from "./records.js";
import type { Upstream } from "./upstreams.js";

export const DNS_PORT = 53;
export const DEFAULT_FORWARD_TIMEOUT_MS = 2000;
const MAX_FORWARDS_IN_FLIGHT = 256;
const MAX_TCP_CONNECTIONS = 64;
const TCP_IDLE_MS = 10_000;
const CLASSIC_UDP_LIMIT = 512;
const MAX_UDP_LIMIT = 4096;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
type Rcode = keyof typeof RCODE;
const RESPONSE = 0x8000;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;
const RD = dnsPacket.RECURSION_DESIRED;
const RA = dnsPacket.RECURSION_AVAILABLE;
const TC = dnsPacket.TRUNCATED_RESPONSE;

export interface DnsServerOptions {
  address: string;
  port?: number;
  records: NetworkRecords;
  upstreams: () => Upstream[];
  forwardTimeoutMs?: number;
  metrics: DnsMetrics;
  log: Logger;
  /**
   * Whether a client address may ask (the agent: inside the network's CIDR).
   * Others are dropped (UDP) or disconnected (TCP) without an answer, so a pod
   * of another network cannot learn this network's names through the host's
   * INPUT path, which isolation rules (FORWARD) do not cover. Absent: everyone.
   */
  allowClient?: (address: string) => boolean;
}

/** A reply for a query whose header could be read but nothing else: FORMERR, same id. */
function formerr(raw: Buffer): Buffer | undefined {
  if (raw.length < 12 || (raw.readUInt16BE(2) & RESPONSE) !== 0) return undefined;
  const out = Buffer.alloc(12);
  out.writeUInt16BE(raw.readUInt16BE(0), 0);
  out.writeUInt16BE(RESPONSE | (raw.readUInt16BE(2) & RD) | RA | RCODE.FORMERR, 2);
  return out;
}

export class DnsServer {
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private forwarding = 0;
  private readonly connections = new Set<net.Socket>();

  constructor(private readonly opts: DnsServerOptions) {}

  get network(): string {
    return this.opts.records.network;
  }

  async start(): Promise<void> {
    const { address } = this.opts;
    const port = this.opts.port ?? DNS_PORT;
    const udp = dgram.createSocket({ type: address.includes(":") ? "udp6" : "udp4" });
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(port, address, () => {
        udp.off("error", reject);
        resolve();
      });
    });
    udp.on("error", (err) => this.opts.log.warn({ network: this.network, err: String(err) }, "DNS UDP socket error"));
    udp.on("message", (msg, rinfo) => {
      if (!this.allowed(rinfo.address, "udp")) return;
      void this.answer(msg, "udp").then((reply) => {
        if (reply) udp.send(reply, rinfo.port, rinfo.address);
      });
    });
    this.udp = udp;
    const tcp = net.createServer((conn) => this.serveTcp(conn));
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, address, () => {
          tcp.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      this.udp = undefined;
      throw err;
    }
    tcp.on("error", (err) => this.opts.log.warn({ network: this.network, err: String(err) }, "DNS TCP server error"));
    this.tcp = tcp;
  }

  async stop(): Promise<void> {
    this.udp?.close();
    this.udp = undefined;
    for (const c of this.connections) c.destroy();
    const tcp = this.tcp;
    this.tcp = undefined;
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  private allowed(address: string | undefined, transport: "udp" | "tcp"): boolean {
    const allow = this.opts.allowClient;
    if (!allow || (address !== undefined && allow(address.replace(/^::ffff:/, "")))) return true;
    this.opts.metrics.refused.inc({ network: this.network, transport });
    return false;
  }

  private serveTcp(conn: net.Socket): void {
    if (!this.allowed(conn.remoteAddress, "tcp")) {
      conn.destroy();
      return;
    }
    this.connections.add(conn);
    conn.setTimeout(TCP_IDLE_MS, () => conn.destroy());
    conn.on("close", () => this.connections.delete(conn));
    conn.on("error", () => conn.destroy());
    let buf = Buffer.alloc(0);
    // One query at a time per connection keeps a connection's work bounded.
    let busy = false;
    const pump = (): void => {
      if (busy || buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) return;
      const msg = buf.subarray(2, 2 + len);
      buf = buf.subarray(2 + len);
      busy = true;
      void this.answer(msg, "tcp").then((reply) => {
        busy = false;
        if (reply && !conn.destroyed) {
          const head = Buffer.alloc(2);
          head.writeUInt16BE(reply.length);
          conn.write(Buffer.concat([head, reply]));
        }
        pump();
      });
    };
    conn.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      // A frame is at most 64 KiB by its 2-byte length; more buffered than one frame while busy is a flood.
      if (buf.length > 2 * (MAX_TCP_MESSAGE + 2)) conn.destroy();
      else pump();
    });
  }

  /** The reply to one raw query, or undefined to drop it. Never throws. */
  async answer(raw: Buffer, transport: "udp" | "tcp"): Promise<Buffer | undefined> {
    const { metrics } = this.opts;
    let q: DecodedPacket;
    try {
      q = dnsPacket.decode(raw);
    } catch {
      metrics.malformed.inc({ network: this.network, transport });
      return formerr(raw);
    }
    if (q.type !== "query" || q.questions?.length !== 1) {
      // Responses sent to us are dropped; a query with zero or several questions is FORMERR (RFC 9619).
      if (q.type !== "query") return undefined;
      metrics.malformed.inc({ network: this.network, transport });
      return formerr(raw);
    }
    const question = q.questions[0];
    const limit = transport === "tcp" ? MAX_TCP_MESSAGE : this.udpLimit(q);
    try {
      const local = this.local(q, question);
      if (local) return this.finish(local, question, limit);
      return await this.forwarded(raw, q, question, transport, limit);
    } catch (err) {
      this.opts.log.warn({ network: this.network, name: question.name, err: String(err) }, "DNS query failed");
      return this.finish(this.reply(q, question, "SERVFAIL"), question, limit);
    }
  }

  private udpLimit(q: DecodedPacket): number {
    const opt = q.additionals?.find((a) => a.type === "OPT") as { udpPayloadSize?: number } | undefined;
    return opt?.udpPayloadSize ? Math.min(Math.max(opt.udpPayloadSize, CLASSIC_UDP_LIMIT), MAX_UDP_LIMIT) : CLASSIC_UDP_LIMIT;
  }

  private reply(q: DecodedPacket, question: Question, rcode: Rcode, answers: Answer[] = [], authorities: Answer[] = [], authoritative = false): Packet {
    return { type: "response", id: q.id, flags: ((q.flags ?? 0) & RD) | RA | (authoritative ? AA : 0) | RCODE[rcode], questions: [question], answers, authorities };
  }

  private soa(): Answer {
    const zone = this.opts.records.zone;
    return { type: "SOA", name: zone, ttl: RECORD_TTL_SECONDS, data: { mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 60, retry: 10, expire: 3600, minimum: RECORD_TTL_SECONDS } };
  }

  /** The answer from this network's names, or undefined when the name is not ours. */
  private local(q: DecodedPacket, question: Question): Packet | undefined {
    const type = question.type;
    const res = this.opts.records.lookup(question.name, type === "AAAA" ? 6 : 4);
    if (res.kind === "forward") return undefined;
    if (res.kind === "nxdomain") return this.reply(q, question, "NXDOMAIN", [], [this.soa()], true);
    if ((question.class ?? "IN") !== "IN") return this.reply(q, question, "REFUSED");
    if (type === "SOA" && question.name.toLowerCase().replace(/\.$/, "") === this.opts.records.zone) return this.reply(q, question, "NOERROR", [this.soa()], [], true);
    const answers: Answer[] = type === "A" || type === "AAAA" ? res.addresses.map((ip) => ({ type, name: question.name, ttl: RECORD_TTL_SECONDS, data: ip })) : [];
    // No record of this type: NODATA (NOERROR, empty answer, SOA for negative caching).
    return this.reply(q, question, "NOERROR", answers, answers.length === 0 ? [this.soa()] : [], true);
  }

  private async forwarded(raw: Buffer, q: DecodedPacket, question: Question, transport: "udp" | "tcp", limit: number): Promise<Buffer | undefined> {
    const { metrics } = this.opts;
    const network = this.network;
    if (this.forwarding >= MAX_FORWARDS_IN_FLIGHT) {
      metrics.forwarded.inc({ network, result: "overload" });
      return this.finish(this.reply(q, question, "SERVFAIL"), question, limit);
    }
    this.forwarding++;
    const end = metrics.forwardSeconds.startTimer({ network });
    try {
      const { answer, truncatedRetry } = await forward(this.opts.upstreams(), raw, this.opts.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS, transport === "tcp");
      end();
      metrics.forwarded.inc({ network, result: truncatedRetry ? "truncated_tcp" : "ok" });
      metrics.queries.inc({ network, type: question.type, rcode: rcodeName(answer) });
      if (answer.length <= limit) return answer;
      // Too large for this UDP client: tell it to ask again over TCP.
      const head = Buffer.from(answer.subarray(0, 12));
      head.writeUInt16BE(head.readUInt16BE(2) | TC, 2);
      head.writeUInt32BE(0, 6); // ancount, nscount = 0
      head.writeUInt16BE(0, 10); // arcount = 0
      head.writeUInt16BE(1, 4);
      return Buffer.concat([head, dnsPacket.encode({ type: "query", id: 0, questions: [question] }).subarray(12)]);
    } catch (err) {
      metrics.forwarded.inc({ network, result: err instanceof ForwardError ? err.reason : "error" });
      return this.finish(this.reply(q, question, "SERVFAIL"), question, limit);
    } finally {
      this.forwarding--;
    }
  }

  /** Encodes, truncating to the client's limit (TC set, answers dropped) when needed; counts it. */
  private finish(p: Packet, question: Question, limit: number): Buffer {
    let out = dnsPacket.encode(p);
    if (out.length > limit) out = dnsPacket.encode({ ...p, flags: (p.flags ?? 0) | TC, answers: [], authorities: [] });
    this.opts.metrics.queries.inc({ network: this.network, type: question.type, rcode: rcodeName(out) });
    return out;
  }
}

function rcodeName(msg: Buffer): string {
  const code = msg.length >= 4 ? msg.readUInt16BE(2) & 0xf : -1;
  return (Object.keys(RCODE) as Rcode[]).find((k) => RCODE[k] === code) ?? String(code);
}
