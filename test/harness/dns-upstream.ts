// A stand-in for the host's resolver, for tests and benchmarks: answers
// *.example.test (big.example.test is truncated over UDP, so a client must
// fall back to TCP), NXDOMAIN for the rest. In-process (startUpstream) or as
// its own process in a namespace: `node --import tsx test/harness/dns-upstream.ts HOST PORT`
// prints "listening" once both sockets are bound.
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket, { type Answer } from "dns-packet";

/** A port free for both UDP and TCP on `host`. */
export async function freePort(host: string): Promise<number> {
  for (;;) {
    const srv = net.createServer();
    const port = await new Promise<number>((resolve) => srv.listen(0, host, () => resolve((srv.address() as net.AddressInfo).port)));
    const udp = dgram.createSocket("udp4");
    const ok = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, host, () => resolve(true));
    });
    udp.close();
    await new Promise((r) => srv.close(r));
    if (ok) return port;
  }
}

export interface Upstream {
  readonly queries: number;
  stop(): Promise<void>;
}

export async function startUpstream(host: string, port: number): Promise<Upstream> {
  const state = { queries: 0 };
  const answerFor = (buf: Buffer, tcp: boolean): Buffer => {
    state.queries++;
    const q = dnsPacket.decode(buf);
    const name = q.questions![0].name;
    const big = name === "big.example.test";
    const answers: Answer[] = name.endsWith("example.test") ? Array.from({ length: big ? 60 : 1 }, (_, i) => ({ type: "A" as const, name, ttl: 30, data: `192.0.2.${i + 1}` })) : [];
    const flags = (big && !tcp ? dnsPacket.TRUNCATED_RESPONSE : 0) | (answers.length ? 0 : 3);
    return dnsPacket.encode({ type: "response", id: q.id, flags, questions: q.questions, answers: big && !tcp ? [] : answers });
  };
  const udp = dgram.createSocket("udp4");
  udp.on("message", (m, r) => {
    try {
      udp.send(answerFor(m, false), r.port, r.address);
    } catch {
      /* not a query we can decode */
    }
  });
  await new Promise<void>((r) => udp.bind(port, host, () => r()));
  const tcp = net.createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const reply = answerFor(buf.subarray(2, 2 + buf.readUInt16BE(0)), true);
        const head = Buffer.alloc(2);
        head.writeUInt16BE(reply.length);
        c.end(Buffer.concat([head, reply]));
      }
    });
    c.on("error", () => c.destroy());
  });
  await new Promise<void>((r) => tcp.listen(port, host, () => r()));
  return {
    get queries() {
      return state.queries;
    },
    stop: async () => {
      udp.close();
      await new Promise((r) => tcp.close(r));
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [host, port] = process.argv.slice(2);
  await startUpstream(host, Number(port));
  process.stdout.write("listening\n");
  process.on("SIGTERM", () => process.exit(0));
}
