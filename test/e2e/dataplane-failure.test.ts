// Netlink failures (flannel#958: ENOBUFS when many peers arrive at once) on a
// real kernel: the FDB batch is made to fail at the command boundary, the way
// `bridge -batch` reports a netlink error; everything else is the real kernel
// in a namespace of this test.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CommandError, Dataplane, Runner, type NodeDesired, type PeerSpec } from "../../pkg/dataplane/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { execa } from "execa";
import { pino } from "pino";
import { Netns, uniqueNetnsPrefix } from "../harness/netns.js";

const VNI = 4343;
const DEV = `weft.${VNI}`;

/** The real runner, except that the next `failBridge` FDB batches fail as netlink would. */
class FlakyRunner extends Runner {
  failBridge = 0;
  bridgeBatches = 0;
  override async batch(cmd: "ip" | "bridge", lines: string[]): Promise<void> {
    if (cmd === "bridge" && lines.length > 0) {
      this.bridgeBatches++;
      if (this.failBridge > 0) {
        this.failBridge--;
        throw new CommandError("bridge -batch -", "RTNETLINK answers: No buffer space available");
      }
    }
    return super.batch(cmd, lines);
  }
}

function peers(n: number): PeerSpec[] {
  return Array.from({ length: n }, (_, i) => ({ nodeName: `n${i}`, underlayIp: `192.168.88.${10 + i}`, vtepMac: `02:00:00:00:01:${(16 + i).toString(16)}`, subnet: `10.251.${10 + i}.0/24` }));
}

function desired(n: number): NodeDesired {
  return {
    uplink: "eth0",
    underlayIp: "192.168.88.1",
    networks: [{ name: "red", vni: VNI, cidr: "10.251.0.0/16", mode: "routed", mtu: 0, port: 4789, natOutgoing: false, isolated: false, flood: false, isDefault: true, subnet: "10.251.1.0/24", peers: peers(n) }],
  };
}

describe("e2e: dataplane under netlink failures (real kernel, injected batch errors)", function () {
  this.timeout(60_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-dpf-e2e-"));
  let ns: Netns;
  let runner: FlakyRunner;
  let dp: Dataplane;
  const registry = newRegistry(false);

  before(async () => {
    ns = await Netns.create(uniqueNetnsPrefix("dpf"));
    // A veth pair stands for the uplink (this kernel has no dummy driver).
    await ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p");
    await ns.ip("link", "set", "eth0p", "up");
    await ns.ip("addr", "add", "192.168.88.1/24", "dev", "eth0");
    await ns.ip("link", "set", "eth0", "up");
    runner = new FlakyRunner(ns.name);
    dp = new Dataplane({ log: silentLogger(), registry, netns: ns.name, runner, cniConfDir: path.join(tmp, "net.d"), stateDir: path.join(tmp, "state") });
  });

  after(async () => {
    await ns?.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function kernelPeers() {
    const neigh = await ns.ipJson<{ dst: string }>("neigh", "show", "dev", DEV, "nud", "permanent");
    const fdb = (await ns.bridgeJson<{ mac: string; dst?: string }>("fdb", "show", "dev", DEV)).filter((e) => e.dst);
    const routes = (await ns.ipJson<{ dst: string; gateway?: string }>("route", "show", "dev", DEV)).filter((r) => r.gateway);
    return { neigh: neigh.length, fdb: fdb.length, route: routes.length };
  }

  it("retries a failed batch and converges, counting the whole difference once", async () => {
    runner.failBridge = 1;
    const r = await dp.apply(desired(5));
    assert.equal(runner.bridgeBatches, 2, "the FDB batch ran again after the failure");
    assert.deepEqual({ neigh: r.byKind.neigh, fdb: r.byKind.fdb, route: r.byKind.route }, { neigh: 5, fdb: 5, route: 5 });
    assert.deepEqual(await kernelPeers(), { neigh: 5, fdb: 5, route: 5 });
    assert.equal((await dp.apply(desired(5))).changes, 0);
  });

  it("gives up after its attempts without leaving a half-applied peer, and counts the failure", async () => {
    runner.failBridge = 100;
    await assert.rejects(dp.apply(desired(8)), /No buffer space available/);
    // The three new peers' neighbours were written before the FDB batch failed: they must be gone again,
    // and no route may exist for them; the five complete peers stay untouched.
    assert.deepEqual(await kernelPeers(), { neigh: 5, fdb: 5, route: 5 });
    const failures = (await registry.getSingleMetric("weft_agent_apply_failures_total")!.get()).values[0]?.value;
    assert.equal(failures, 1);
  });

  it("converges on the next apply once netlink works again", async () => {
    runner.failBridge = 0;
    const r = await dp.apply(desired(8));
    assert.deepEqual({ neigh: r.byKind.neigh, fdb: r.byKind.fdb, route: r.byKind.route }, { neigh: 3, fdb: 3, route: 3 });
    assert.deepEqual(await kernelPeers(), { neigh: 8, fdb: 8, route: 8 });
    await dp.cleanup();
    assert.deepEqual((await ns.ipJson<{ ifname: string }>("link", "show")).map((l) => l.ifname).sort(), ["eth0", "eth0p", "lo"]);
  });

  it("turns tx checksum offload off when asked (flannel#1279), or says why it could not", async () => {
    const logged: string[] = [];
    const log = pino({ level: "warn" }, { write: (line: string) => logged.push(line) });
    const withOffload = new Dataplane({ log, netns: ns.name, cniConfDir: path.join(tmp, "net.d"), stateDir: path.join(tmp, "state"), disableTxChecksumOffload: true });
    try {
      await withOffload.apply(desired(1));
      const hasEthtool = (await execa("sh", ["-c", "command -v ethtool"], { reject: false })).exitCode === 0;
      if (hasEthtool) {
        const features = String((await ns.exec("ethtool", ["-k", DEV])).stdout);
        assert.match(features, /^\s*tx-checksum-ip-generic: off$/m);
      } else {
        assert.ok(logged.some((l) => l.includes("tx checksum offload")), "a missing ethtool is logged, and the apply still succeeds");
      }
    } finally {
      await withOffload.cleanup();
    }
  });
});
