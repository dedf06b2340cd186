// Pod-to-pod throughput across two hosts (network namespaces joined by a veth
// "underlay"), one TCP stream of iperf3 (Debian's), side by side in one run,
// interleaved: a hand-built VXLAN path with no rules, the same with Weft's NAT
// rule set (so conntrack runs), Weft's dataplane itself, and Weft plus a raw
// table NOTRACK for pod-to-pod traffic inside the network (measured, not
// offered: see the notes for why it is unsafe on Kubernetes nodes).
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { Dataplane, type NodeDesired } from "../../pkg/dataplane/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { percentile, publish } from "./table.js";

const VNI = 88;
const CIDR = "10.88.0.0/16";
const SECONDS = Number(process.env.IPERF_SECONDS ?? 4);
const ROUNDS = Number(process.env.IPERF_ROUNDS ?? 3);

type Variant = "hand-built VXLAN" | "hand-built + MASQUERADE rules" | "weft" | "weft + raw NOTRACK pod↔pod";

interface Host {
  ns: string;
  pod: string;
  underlay: string;
  subnet: string;
  mac: string;
}

const sh = (ns: string, ...args: string[]) => execa("ip", ["netns", "exec", ns, ...args]);

async function topology(tag: string): Promise<Host[]> {
  const id = crypto.randomBytes(2).toString("hex");
  const hosts: Host[] = [1, 2].map((i) => ({ ns: `weft-tp-${tag}-${id}-h${i}`, pod: `weft-tp-${tag}-${id}-p${i}`, underlay: `192.168.88.${i}`, subnet: `10.88.${i}.0/24`, mac: `02:00:00:88:00:0${i}` }));
  for (const h of hosts) {
    await execa("ip", ["netns", "add", h.ns]);
    await execa("ip", ["netns", "add", h.pod]);
    await execa("ip", ["-n", h.ns, "link", "set", "lo", "up"]);
    await execa("ip", ["-n", h.pod, "link", "set", "lo", "up"]);
  }
  await execa("ip", ["-n", hosts[0].ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", hosts[1].ns]);
  for (const h of hosts) {
    await execa("ip", ["-n", h.ns, "addr", "add", `${h.underlay}/24`, "dev", "eth0"]);
    await execa("ip", ["-n", h.ns, "link", "set", "eth0", "up"]);
    await sh(h.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
  }
  return hosts;
}

async function attachPod(h: Host, bridge: string, mtu: number): Promise<string> {
  const ip = h.subnet.replace(/0\/24$/, "10");
  await execa("ip", ["-n", h.ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", h.pod]);
  await execa("ip", ["-n", h.ns, "link", "set", "vpod", "master", bridge, "mtu", String(mtu), "up"]);
  await execa("ip", ["-n", h.pod, "addr", "add", `${ip}/24`, "dev", "eth0"]);
  await execa("ip", ["-n", h.pod, "link", "set", "eth0", "mtu", String(mtu), "up"]);
  await execa("ip", ["-n", h.pod, "route", "add", "default", "via", h.subnet.replace(/0\/24$/, "1")]);
  return ip;
}

async function handBuilt(hosts: Host[], rules: boolean): Promise<void> {
  for (const [h, other] of [[hosts[0], hosts[1]], [hosts[1], hosts[0]]] as const) {
    const dev = `vx${VNI}`;
    const gw = other.subnet.split("/")[0];
    const lines = [
      `link add ${dev} address ${h.mac} type vxlan id ${VNI} local ${h.underlay} dev eth0 dstport 4789 nolearning`,
      `link set dev ${dev} mtu 1450 up`,
      `addr add ${h.subnet.split("/")[0]}/32 dev ${dev}`,
      `link add br${VNI} type bridge`,
      `link set dev br${VNI} mtu 1450 up`,
      `addr add ${h.subnet.replace(/0\/24$/, "1")}/24 dev br${VNI}`,
      `neigh replace ${gw} lladdr ${other.mac} dev ${dev} nud permanent`,
      `route replace ${other.subnet} via ${gw} dev ${dev} onlink`,
    ];
    await execa("ip", ["-n", h.ns, "-batch", "-"], { input: lines.join("\n") + "\n" });
    await execa("bridge", ["-n", h.ns, "fdb", "append", other.mac, "dev", dev, "dst", other.underlay, "self", "permanent"]);
    if (rules) {
      await sh(h.ns, "iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-s", CIDR, "-d", CIDR, "-j", "RETURN");
      await sh(h.ns, "iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-s", CIDR, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully");
      await sh(h.ns, "iptables-nft", "-A", "FORWARD", "-s", CIDR, "-j", "ACCEPT");
      await sh(h.ns, "iptables-nft", "-A", "FORWARD", "-d", CIDR, "-j", "ACCEPT");
    }
    await attachPod(h, `br${VNI}`, 1450);
  }
}

async function weft(hosts: Host[], dir: string, notrack: boolean): Promise<Dataplane[]> {
  const dps: Dataplane[] = [];
  for (const [h, other] of [[hosts[0], hosts[1]], [hosts[1], hosts[0]]] as const) {
    const dp = new Dataplane({ log: silentLogger(), netns: h.ns, cniConfDir: path.join(dir, h.ns), stateDir: path.join(dir, h.ns) });
    const desired: NodeDesired = {
      uplink: "eth0",
      underlayIp: h.underlay,
      networks: [{ name: "tp", vni: VNI, cidr: CIDR, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: h.subnet, vtepMac: h.mac, peers: [{ nodeName: other.ns, underlayIp: other.underlay, vtepMac: other.mac, subnet: other.subnet }] }],
    };
    await dp.apply(desired);
    dps.push(dp);
    if (notrack) {
      await sh(h.ns, "iptables-nft", "-t", "raw", "-A", "PREROUTING", "-s", CIDR, "-d", CIDR, "-j", "NOTRACK");
      await sh(h.ns, "iptables-nft", "-t", "raw", "-A", "OUTPUT", "-s", CIDR, "-d", CIDR, "-j", "NOTRACK");
    }
    await attachPod(h, `weftbr${VNI}`, 1450);
  }
  return dps;
}

async function iperf(hosts: Host[]): Promise<number> {
  const server = spawn("ip", ["netns", "exec", hosts[1].pod, "iperf3", "-s", "-1"], { stdio: "ignore" });
  try {
    const target = hosts[1].subnet.replace(/0\/24$/, "10");
    for (let i = 0; ; i++) {
      const r = await execa("ip", ["netns", "exec", hosts[0].pod, "iperf3", "-c", target, "-t", String(SECONDS), "-J"], { reject: false });
      const out = (() => {
        try {
          return JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
        } catch {
          return { error: r.stderr || r.stdout };
        }
      })();
      if (out.end?.sum_received) return out.end.sum_received.bits_per_second / 1e9;
      if (i > 20) throw new Error(`iperf3 failed: ${out.error ?? r.stderr}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  } finally {
    server.kill("SIGKILL");
  }
}

async function measure(variant: Variant): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-tp-"));
  const hosts = await topology(String(["hand-built VXLAN", "hand-built + MASQUERADE rules", "weft", "weft + raw NOTRACK pod↔pod"].indexOf(variant)));
  let dps: Dataplane[] = [];
  try {
    if (variant.startsWith("hand-built")) await handBuilt(hosts, variant !== "hand-built VXLAN");
    else dps = await weft(hosts, dir, variant.includes("NOTRACK"));
    return await iperf(hosts);
  } finally {
    for (const dp of dps) dp.close();
    for (const h of hosts) {
      await execa("ip", ["netns", "del", h.pod], { reject: false });
      await execa("ip", ["netns", "del", h.ns], { reject: false });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  const variants: Variant[] = ["hand-built VXLAN", "hand-built + MASQUERADE rules", "weft", "weft + raw NOTRACK pod↔pod"];
  const results = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  // Interleaved, so drift in the machine's load hits every variant alike.
  for (let r = 0; r < ROUNDS; r++) for (const v of variants) results.get(v)!.push(await measure(v));
  const base = percentile([...results.get("hand-built VXLAN")!].sort((a, b) => a - b), 50);
  const withRules = percentile([...results.get("hand-built + MASQUERADE rules")!].sort((a, b) => a - b), 50);
  publish({
    id: "dataplane-throughput",
    title: `Pod-to-pod throughput across two hosts, one TCP stream (iperf3, ${SECONDS} s, median of ${ROUNDS} interleaved runs), Gbit/s`,
    columns: ["path", "Gbit/s", "runs", "vs hand-built", "vs hand-built + rules"],
    rows: variants.map((v) => {
      const m = percentile([...results.get(v)!].sort((a, b) => a - b), 50);
      return [v, m, results.get(v)!.map((x) => x.toFixed(1)).join(" "), (m / base).toFixed(2), (m / withRules).toFixed(2)];
    }),
    notes: [
      "hosts and pods are network namespaces on this machine; the underlay is a veth pair; MTU 1450 in the overlay",
      "hand-built + rules: the same NAT/filter rules Weft writes (RETURN pod→pod, MASQUERADE --random-fully otherwise, FORWARD accepts), so conntrack runs",
      "NOTRACK (raw PREROUTING/OUTPUT -s cidr -d cidr) is measured, not offered: it also untracks the reply of a Kubernetes Service connection (backend pod → client pod), which then misses kube-proxy's reverse DNAT, and any conntrack-state rule (NetworkPolicy, ESTABLISHED accepts) sees UNTRACKED packets",
      `node ${process.version}, ${os.cpus().length} cores shared with other builds and tests: noisy`,
    ],
  });
}
