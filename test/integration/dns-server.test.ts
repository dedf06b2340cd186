// The embedded resolver on loopback, asked by Debian's `dig`: local names and
// aliases, round-robin, NXDOMAIN with SOA, forwarding (UDP, TCP fallback for
// truncated answers, SERVFAIL when upstreams fail) to an upstream the test
// runs, and fuzzed input that must never stop the server.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";
import { execa } from "execa";
import { DnsServer, dnsMetrics, NetworkRecords, type Upstream as UpstreamAddress } from "../../pkg/dns/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { freePort, startUpstream, type Upstream } from "../harness/dns-upstream.js";

const HOST = "127.0.0.1";

describe("integration: embedded DNS resolver (dig against loopback)", function () {
  this.timeout(60_000);
  let port: number;
  let upstreamPort: number;
  let upstream: Upstream | undefined;
  let upstreams: UpstreamAddress[];
  const records = new NetworkRecords("pods");
  const registry = newRegistry(false);
  let server: DnsServer;

  const dig = async (...args: string[]): Promise<string> => String((await execa("dig", [`@${HOST}`, "-p", String(port), "+tries=1", "+time=4", ...args], { reject: false })).stdout);
  const short = async (...args: string[]): Promise<string[]> => (await dig("+short", ...args)).split("\n").filter(Boolean);
  const status = (out: string): string | undefined => /status: (\w+)/.exec(out)?.[1];

  before(async () => {
    port = await freePort(HOST);
    upstreamPort = await freePort(HOST);
    upstream = await startUpstream(HOST, upstreamPort);
    upstreams = [{ host: HOST, port: upstreamPort }];
    records.put({ id: "a", name: "default/web-1", aliases: ["web"], ips: ["10.244.1.2"] });
    records.put({ id: "b", name: "db", aliases: ["web"], ips: ["10.244.2.2"] });
    records.put({ id: "c", name: "cache", aliases: ["web"], ips: ["10.244.3.2"] });
    server = new DnsServer({ address: HOST, port, records, upstreams: () => upstreams, forwardTimeoutMs: 1500, metrics: dnsMetrics(registry), log: silentLogger() });
    await server.start();
  });

  after(async () => {
    await server?.stop();
    await upstream?.stop();
  });

  it("answers names and zone names over UDP and TCP, authoritatively, with a short TTL", async () => {
    assert.deepEqual(await short("db"), ["10.244.2.2"]);
    assert.deepEqual(await short("+tcp", "db.pods.weft.internal"), ["10.244.2.2"]);
    assert.deepEqual(await short("web-1.default.pods.weft.internal"), ["10.244.1.2"]);
    const full = await dig("+noall", "+answer", "+comments", "db.pods.weft.internal");
    assert.match(full, /flags: qr aa rd ra;/);
    assert.match(full, /db\.pods\.weft\.internal\.\s+5\s+IN\s+A\s+10\.244\.2\.2/);
  });

  it("an alias shared by 3 endpoints returns all 3, in rotating order", async () => {
    const a = await short("web.pods.weft.internal");
    const b = await short("web.pods.weft.internal");
    assert.deepEqual([...a].sort(), ["10.244.1.2", "10.244.2.2", "10.244.3.2"]);
    assert.deepEqual([...b].sort(), [...a].sort());
    assert.notDeepEqual(a, b, "order rotates across queries");
  });

  it("unknown names in the domain, and names of other networks, are NXDOMAIN with the SOA", async () => {
    for (const name of ["nope.pods.weft.internal", "db.other.weft.internal"]) {
      const out = await dig(name);
      assert.equal(status(out), "NXDOMAIN", out);
      assert.match(out, /AUTHORITY SECTION:\npods\.weft\.internal\.\s+5\s+IN\s+SOA/);
    }
  });

  it("follows endpoints as they come and go", async () => {
    records.put({ id: "d", name: "new", aliases: [], ips: ["10.244.4.2"] });
    assert.deepEqual(await short("new.pods.weft.internal"), ["10.244.4.2"]);
    records.remove("d");
    assert.equal(status(await dig("new.pods.weft.internal")), "NXDOMAIN");
  });

  it("forwards other names upstream, falling back to TCP for truncated answers", async () => {
    assert.deepEqual(await short("www.example.test"), ["192.0.2.1"]);
    // 60 records do not fit 512 bytes: the upstream truncates over UDP; the resolver asks again over TCP.
    const big = await short("+tcp", "big.example.test");
    assert.equal(big.length, 60);
    const viaUdp = await dig("+noedns", "+ignore", "big.example.test");
    assert.match(viaUdp, /flags: qr[^;]*tc/, "too large for a plain UDP client: truncated, so it retries over TCP");
    const metrics = await registry.getSingleMetric("weft_agent_dns_forwarded_total")!.get();
    assert.ok(metrics.values.some((v) => v.labels.result === "truncated_tcp" && v.value >= 1), JSON.stringify(metrics.values));
  });

  it("answers SERVFAIL within the timeout when the upstream is down, and local names still answer", async () => {
    await upstream!.stop();
    upstream = undefined;
    const t0 = Date.now();
    const out = await dig("+time=5", "gone.example.test");
    const took = Date.now() - t0;
    assert.equal(status(out), "SERVFAIL", out);
    assert.ok(took < 4000, `SERVFAIL after ${took} ms, the forward timeout is 1500 ms`);
    assert.deepEqual(await short("db"), ["10.244.2.2"]);
    upstream = await startUpstream(HOST, upstreamPort);
  });

  it("a client outside the allowed sources gets no answer, over UDP or TCP, and is counted", async () => {
    const reg = newRegistry(false);
    const m = dnsMetrics(reg);
    const gport = await freePort(HOST);
    const g = new DnsServer({ address: HOST, port: gport, records, upstreams: () => upstreams, metrics: m, log: silentLogger(), allowClient: (a) => a === "127.0.0.9" });
    await g.start();
    try {
      const ask = async (...a: string[]) => String((await execa("dig", [`@${HOST}`, "-p", String(gport), "+tries=1", "+time=1", "+short", ...a], { reject: false })).stdout);
      assert.equal(await ask("-b", "127.0.0.9", "db"), "10.244.2.2");
      assert.match(await ask("db"), /timed out/, "from 127.0.0.1: UDP dropped");
      assert.doesNotMatch(await ask("+tcp", "db"), /10\.244/, "from 127.0.0.1: TCP closed unanswered");
      const refused = await reg.getSingleMetric("weft_agent_dns_refused_total")!.get();
      assert.deepEqual(refused.values.map((v) => v.labels.transport).sort(), ["tcp", "udp"]);
    } finally {
      await g.stop();
    }
  });

  it("fuzzed input gets FORMERR or nothing, and the server keeps answering", async () => {
    const udp = dgram.createSocket("udp4");
    const replies: Buffer[] = [];
    udp.on("message", (m) => replies.push(m));
    await new Promise<void>((r) => udp.bind(0, HOST, () => r()));
    const header = (id: number, qd: number): Buffer => {
      const b = Buffer.alloc(12);
      b.writeUInt16BE(id, 0);
      b.writeUInt16BE(0x0100, 2);
      b.writeUInt16BE(qd, 4);
      return b;
    };
    // Deterministic pseudo-random bytes, so a failure can be replayed.
    let seed = 42;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    const cases: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from([1, 2, 3]),
      header(7, 1), // says one question, has none
      Buffer.concat([header(8, 1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]), // a name pointing at itself
      Buffer.concat([header(9, 2), dnsPacket.encode({ type: "query", id: 9, questions: [{ type: "A", name: "db" }] }).subarray(12)]),
      ...Array.from({ length: 200 }, (_, i) => Buffer.from(Array.from({ length: 1 + (i % 300) }, rnd))),
    ];
    for (const c of cases) udp.send(c, port, HOST);
    await new Promise((r) => setTimeout(r, 500));
    for (const r of replies) assert.equal(r.readUInt16BE(2) & 0xf, 1, `only FORMERR comes back, got rcode ${r.readUInt16BE(2) & 0xf}`);
    assert.ok(replies.some((r) => r.readUInt16BE(0) === 8), "the self-pointing name got FORMERR");
    udp.close();

    // TCP: a 64 KiB frame of junk, a truncated frame, then a good query on a new connection.
    await new Promise<void>((resolve) => {
      const c = net.createConnection(port, HOST, () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(65535);
        c.write(Buffer.concat([len, Buffer.alloc(65535, 0xff), Buffer.from([0, 40, 1, 2])]));
        setTimeout(() => c.destroy(), 300);
      });
      c.on("error", () => undefined);
      c.on("close", () => resolve());
    });
    assert.deepEqual(await short("db"), ["10.244.2.2"]);
    assert.deepEqual(await short("+tcp", "db"), ["10.244.2.2"]);
    const malformed = await registry.getSingleMetric("weft_agent_dns_malformed_total")!.get();
    assert.ok(malformed.values.reduce((s, v) => s + v.value, 0) >= 100);
  });
});
