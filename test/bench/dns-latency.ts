// Latency sampler for the DNS benchmark, run in a pod's namespace in its own
// process: `node --import tsx test/bench/dns-latency.ts SERVER NAME COUNT`.
// One query outstanding at a time over UDP (closed loop), so each sample is
// one round trip (after 300 uncounted warm-up queries); prints {"samples":[ms...],"lost":n} as JSON. dnsperf gives
// throughput and the mean; this gives the percentiles.
import dgram from "node:dgram";
import dnsPacket from "dns-packet";

const [server, name, countArg] = process.argv.slice(2);
const count = Number(countArg ?? 2000);
const sock = dgram.createSocket("udp4");
const samples: number[] = [];
let lost = 0;

function ask(id: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const q = dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] });
    const t0 = process.hrtime.bigint();
    const timer = setTimeout(() => {
      sock.off("message", onMessage);
      resolve(undefined);
    }, 1000);
    const onMessage = (msg: Buffer) => {
      if (msg.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      sock.off("message", onMessage);
      resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    };
    sock.on("message", onMessage);
    sock.send(q, 53, server);
  });
}

await new Promise<void>((r) => sock.bind(0, () => r()));
// Warm-up, not counted: the sampler's own first round trips include its JIT.
const WARMUP = 300;
for (let i = 0; i < WARMUP; i++) await ask((count + i) & 0xffff);
for (let i = 0; i < count; i++) {
  const ms = await ask(i & 0xffff);
  if (ms === undefined) lost++;
  else samples.push(ms);
}
sock.close();
process.stdout.write(JSON.stringify({ samples, lost }) + "\n");
