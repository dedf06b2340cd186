// The agent and dataplane against a hostile host, on the real kernel in
// namespaces: a hung `ip` (a wrapper on PATH that sleeps), a host full of
// other software's iptables rules and routes, and hosts whose rules live in
// iptables-legacy or in iptables-nft.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { Agent, saveState, stateFromConfig } from "../../pkg/agent/index.js";
import { applyConfigUpdate, emptyDesired } from "../../pkg/api/index.js";
import { Dataplane, type NodeDesired, type PeerSpec } from "../../pkg/dataplane/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { Netns, uniqueNetnsPrefix } from "../harness/netns.js";

const VNI = 4646;
const DEV = `weft.${VNI}`;
const IP = "/usr/sbin/ip";

function peers(n: number): PeerSpec[] {
  return Array.from({ length: n }, (_, i) => ({ nodeName: `n${i}`, underlayIp: `192.168.66.${10 + i}`, vtepMac: `02:00:00:00:02:${(16 + i).toString(16)}`, subnet: `10.252.${10 + i}.0/24` }));
}

function desired(n: number, extra: Partial<NodeDesired["networks"][0]> = {}): NodeDesired {
  return {
    uplink: "eth0",
    underlayIp: "192.168.66.1",
    networks: [{ name: "green", vni: VNI, cidr: "10.252.0.0/16", mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: false, flood: false, isDefault: true, subnet: "10.252.1.0/24", peers: peers(n), ...extra }],
  };
}

async function host(tag: string): Promise<Netns> {
  const ns = await Netns.create(uniqueNetnsPrefix(tag));
  await ns.ip("link", "set", "lo", "up");
  await ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p");
  await ns.ip("link", "set", "eth0p", "up");
  await ns.ip("addr", "add", "192.168.66.1/24", "dev", "eth0");
  await ns.ip("link", "set", "eth0", "up");
  await ns.ip("route", "add", "default", "via", "192.168.66.254");
  return ns;
}

async function routesVia(ns: string): Promise<string[]> {
  const { stdout } = await execa(IP, ["-n", ns, "route", "show", "dev", DEV]);
  return stdout.split("\n").filter((l) => l.includes(" via ")).map((l) => l.split(" ")[0]).sort();
}

describe("e2e: agent against a hostile host (real kernel in namespaces)", function () {
  this.timeout(120_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-kernel-"));
  const namespaces: Netns[] = [];
  after(async () => {
    for (const ns of namespaces) await ns.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("a hung `ip` is timed out and retried, turns /healthz red, and the agent converges once it recovers", async () => {
    const ns = await host("hung");
    namespaces.push(ns);
    const stateDir = path.join(tmp, "hung-state");
    // The agent restores this config (its controller is not reachable): the kernel work starts at once.
    const config = applyConfigUpdate(emptyDesired(), {
      revision: 5, snapshot: true, removedNetworks: [], peerUpdates: [], endpointUpdates: [],
      networks: [{ name: "green", vni: VNI, cidr: "10.252.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: false, default: true, flood: false, dns: false, subnet: "10.252.1.0/24", error: "", peers: peers(3) }],
    });
    await saveState(stateDir, stateFromConfig(config, { green: "02:aa:00:00:00:01" }, { green: "10.252.1.0/24" }));
    // A wrapper `ip` that hangs on every batch while the flag file exists (rtnl lock contention, say).
    const bin = path.join(tmp, "bin");
    const flag = path.join(tmp, "hang");
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, "ip"), `#!/bin/sh\ncase "$*" in *-batch*) while [ -e ${flag} ]; do sleep 0.05; done;; esac\nexec ${IP} "$@"\n`, { mode: 0o755 });
    fs.writeFileSync(flag, "");
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath}`;
    const registry = newRegistry(false);
    const agent = new Agent({
      nodeName: "hung", controllers: ["127.0.0.1:1"], stateDir, cniConfDir: path.join(tmp, "hung-net.d"), netns: ns.name, metricsAddr: "127.0.0.1:0",
      registry, log: silentLogger(), commandTimeoutMs: 300, stuckThresholdMs: 1500, retryBaseMs: 100, reconnectBaseMs: 5000, reconnectCapMs: 5000,
    });
    try {
      await agent.start();
      const health = async () => (await fetch(`http://127.0.0.1:${agent.metricsPort}/healthz`)).status;
      await waitFor("/healthz to turn red", async () => (await health()) === 503, 20_000, 100);
      const value = async (name: string) => (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
      await waitFor("hung commands to be timed out", async () => (await value("weft_agent_kernel_command_timeouts_total")) >= 2, 20_000, 100);
      await waitFor("the failed apply to be counted (and retried)", async () => (await value("weft_agent_apply_failures_total")) >= 1, 20_000, 100);
      assert.equal(await health(), 503, "still red while ip hangs");
      assert.deepEqual(await routesVia(ns.name).catch(() => []), [], "nothing programmed while ip hangs");

      fs.rmSync(flag);
      await waitFor("all three peers programmed", async () => (await routesVia(ns.name).catch(() => [])).length === 3, 30_000, 100);
      await waitFor("/healthz green again", async () => (await health()) === 200, 20_000, 100);
      const { stdout } = await execa(IP, ["-n", ns.name, "link", "show", "dev", DEV]);
      assert.match(stdout, /02:aa:00:00:00:01/, "the device was created with the persisted MAC");
    } finally {
      fs.rmSync(flag, { force: true });
      process.env.PATH = oldPath;
      await agent.stop();
    }
  });

  it("a resync with 20 000 unrelated iptables rules and 5000 unrelated routes changes none of them and still repairs Weft's entries", async () => {
    const ns = await host("noise");
    namespaces.push(ns);
    const rules = ["*filter", ":NOISE-FWD - [0:0]", "-A FORWARD -j NOISE-FWD"];
    for (let i = 0; i < 15_000; i++) rules.push(`-A NOISE-FWD -s 10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32 -j ACCEPT`);
    rules.push("COMMIT", "*nat", ":NOISE-SVC - [0:0]", "-A PREROUTING -j NOISE-SVC", "-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE");
    for (let i = 0; i < 5000; i++) rules.push(`-A NOISE-SVC -d 10.96.${(i >> 8) & 255}.${i & 255}/32 -p tcp --dport 80 -j DNAT --to-destination 10.250.0.1:8080`);
    rules.push("COMMIT");
    await execa("ip", ["netns", "exec", ns.name, "iptables-nft-restore", "--noflush"], { input: rules.join("\n") + "\n" });
    await execa(IP, ["-n", ns.name, "-batch", "-"], { input: Array.from({ length: 5000 }, (_, i) => `route add 10.210.${i >> 8}.${i & 255}/32 via 192.168.66.254 dev eth0`).join("\n") + "\n" });
    const theirs = async () => ({
      filter: (await execa("ip", ["netns", "exec", ns.name, "iptables-nft", "-S", "NOISE-FWD"])).stdout,
      nat: (await execa("ip", ["netns", "exec", ns.name, "iptables-nft", "-t", "nat", "-S", "NOISE-SVC"])).stdout,
      natPost: (await execa("ip", ["netns", "exec", ns.name, "iptables-nft", "-t", "nat", "-S", "POSTROUTING"])).stdout.split("\n").filter((l) => !l.includes("WEFT")).join("\n"),
      routes: (await execa(IP, ["-n", ns.name, "route", "show", "dev", "eth0"])).stdout,
    });

    const dp = new Dataplane({ log: silentLogger(), netns: ns.name, cniConfDir: path.join(tmp, "noise-net.d"), stateDir: path.join(tmp, "noise-state") });
    try {
      await dp.apply(desired(4));
      const before = await theirs();
      assert.equal(before.filter.split("\n").length, 15_001);
      // Drift in Weft's own objects: a route and the masquerade rule gone.
      await execa(IP, ["-n", ns.name, "route", "del", "10.252.11.0/24", "dev", DEV]);
      await execa("ip", ["netns", "exec", ns.name, "iptables-nft", "-t", "nat", "-F", "WEFT-POSTRTG"]);
      const r = await dp.apply(desired(4), "resync");
      assert.equal(r.full, true);
      assert.deepEqual({ route: r.byKind.route, rule: r.byKind.rule }, { route: 1, rule: 1 });
      assert.deepEqual(await routesVia(ns.name), ["10.252.10.0/24", "10.252.11.0/24", "10.252.12.0/24", "10.252.13.0/24"]);
      assert.match((await execa("ip", ["netns", "exec", ns.name, "iptables-nft", "-t", "nat", "-S", "WEFT-POSTRTG"])).stdout, /MASQUERADE --random-fully/);
      assert.deepEqual(await theirs(), before, "other software's rules and routes are exactly as they were");
      assert.equal((await dp.apply(desired(4), "resync")).changes, 0);
    } finally {
      dp.close();
    }
  });

  for (const backend of ["legacy", "nft"] as const) {
    it(`a host whose rules are in iptables-${backend} gets Weft's rules there, and pod traffic leaving the network is masqueraded`, async () => {
      const ns = await host(`ipt${backend}`);
      namespaces.push(ns);
      const exec = (...args: string[]) => execa("ip", ["netns", "exec", ns.name, ...args]);
      await execa("ip", ["netns", "exec", ns.name, `iptables-${backend}-restore`, "--noflush"], { input: "*filter\n:HOST-RULES - [0:0]\n-A INPUT -j HOST-RULES\n-A HOST-RULES -p tcp --dport 22 -j ACCEPT\n-A HOST-RULES -p tcp --dport 80 -j ACCEPT\nCOMMIT\n" });
      const registry = newRegistry(false);
      const dp = new Dataplane({ log: silentLogger(), registry, netns: ns.name, cniConfDir: path.join(tmp, `${backend}-net.d`), stateDir: path.join(tmp, `${backend}-state`) });
      // An "outside" host on the uplink with no route back to the pods: replies only come if the source was masqueraded.
      const out = await Netns.create(uniqueNetnsPrefix(`out${backend}`));
      namespaces.push(out);
      const pod = await Netns.create(uniqueNetnsPrefix(`pod${backend}`));
      namespaces.push(pod);
      try {
        await ns.ip("link", "set", "eth0p", "netns", out.name);
        await out.ip("addr", "add", "192.168.66.254/24", "dev", "eth0p");
        await out.ip("link", "set", "eth0p", "up");
        await dp.apply(desired(0));
        const other = backend === "legacy" ? "nft" : "legacy";
        assert.match((await exec(`iptables-${backend}`, "-t", "nat", "-S", "WEFT-POSTRTG")).stdout, /MASQUERADE/);
        assert.match((await exec(`iptables-${backend}`, "-t", "nat", "-S", "POSTROUTING")).stdout, /-j WEFT-POSTRTG/);
        const elsewhere = await exec(`iptables-${other}`, "-t", "nat", "-S", "WEFT-POSTRTG").then(() => true, () => false);
        assert.equal(elsewhere, false, `nothing written to iptables-${other}`);
        const m = await registry.getSingleMetric("weft_agent_iptables_backend")!.get();
        assert.deepEqual(m.values.map((v) => [v.labels.backend, v.value]), [[backend, 1]]);

        await ns.ip("link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", pod.name);
        await ns.ip("link", "set", "veth-pod", "master", `weftbr${VNI}`, "up");
        await pod.ip("addr", "add", "10.252.1.5/24", "dev", "eth0");
        await pod.ip("link", "set", "eth0", "up");
        await pod.ip("route", "add", "default", "via", "10.252.1.1");
        await execa("ip", ["netns", "exec", pod.name, "ping", "-c", "1", "-W", "2", "192.168.66.254"]);
      } finally {
        dp.close();
      }
    });
  }
});
