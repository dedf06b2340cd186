// Restart safety under SIGKILL: a real agent process is killed at random
// moments while a stream of peer additions and removals flows from a real
// controller (etcd-backed), then restarted while the controller is down. The
// peer set it restores into the kernel must be the controller's set after
// some prefix of the operations (nothing invented, nothing half-applied) and
// no earlier than what the kernel already held when it died (no regression).
// When the controller returns, it converges to the final set.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { execa } from "execa";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store } from "../../pkg/store/index.js";
import { Netns, uniqueNetnsPrefix } from "../harness/netns.js";
import { netSpec } from "../harness/specs.js";
import { preloadNode } from "../harness/preload.js";

const VNI = 4747;
const DEV = `weft.${VNI}`;
const NET = "kill";

describe("e2e: agent SIGKILLed during a stream of peer updates, restarted while the controller is down", function () {
  this.timeout(240_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-kill-"));
  let etcd: EtcdProcess;
  let store: Store;
  let ns: Netns;
  let controller: RunningController | undefined;
  let agent: { proc: ChildProcess; idle: boolean } | undefined;
  // Peers are told apart by subnet and each needs its own underlay address: a /12
  // of /24s (4096) and addresses over several /24s outlast any run of the stream.
  const spec = netSpec(NET, "10.80.0.0/12", VNI);
  const taken = new Set<string>();
  const subnetOf = new Map<string, string>();

  before(async () => {
    etcd = await EtcdProcess.start();
    store = Store.connect({ endpoints: [etcd.endpoint] });
    await store.saveNetwork(spec, () => {});
    ns = await Netns.create(uniqueNetnsPrefix("kill"));
    await ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p");
    await ns.ip("link", "set", "eth0p", "up");
    await ns.ip("addr", "add", "192.168.67.1/24", "dev", "eth0");
    await ns.ip("link", "set", "eth0", "up");
  });
  after(async () => {
    agent?.proc.kill("SIGKILL");
    await controller?.stop();
    await store?.close();
    await etcd?.stop();
    await ns?.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  let port = 0;
  async function startCtl(): Promise<void> {
    controller = await startController({ etcdEndpoints: [etcd.endpoint], listen: `127.0.0.1:${port}`, log: silentLogger() });
    port = controller.port;
  }
  function startAgent(): void {
    const opts = { nodeName: "victim", controllers: [`127.0.0.1:${port}`], uplink: "eth0", underlayIp: "192.168.67.1", netns: ns.name, stateDir: path.join(tmp, "state"), cniConfDir: path.join(tmp, "net.d"), resyncIntervalMs: 0, stateCompactMs: 300 };
    const proc = spawn(process.execPath, ["--import", "tsx", path.resolve("test/harness/agent-proc.ts")], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, WEFT_AGENT_OPTS: JSON.stringify(opts) } });
    const a = { proc, idle: false };
    readline.createInterface({ input: proc.stdout! }).on("line", (l) => (a.idle = (JSON.parse(l) as { idle: boolean }).idle));
    agent = a;
  }
  async function kernelPeers(): Promise<Set<string>> {
    const { stdout } = await execa("ip", ["-n", ns.name, "route", "show", "dev", DEV], { reject: false });
    const bySubnet = new Map([...subnetOf].map(([n, s]) => [s, n]));
    return new Set(stdout.split("\n").filter((l) => l.includes(" via ")).map((l) => bySubnet.get(l.split(" ")[0]) ?? `unknown:${l.split(" ")[0]}`));
  }
  let counter = 0;
  async function addPeer(): Promise<string> {
    const name = `p${counter++}`;
    const i = counter + 10;
    const vtepMac = `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    const subnet = await preloadNode(store, spec, { name, underlayIP: `192.168.${67 + Math.floor(i / 250)}.${1 + (i % 250)}`, vtepMac }, taken, 3600);
    subnetOf.set(name, subnet);
    return name;
  }

  it("restores a prefix of the stream, never less than the kernel held, then converges", async () => {
    const current = new Set<string>();
    for (let i = 0; i < 5; i++) current.add(await addPeer());
    await startCtl();
    startAgent();
    await waitFor("first convergence", async () => agent!.idle && (await kernelPeers()).size === current.size, 60_000, 50);

    for (let round = 0; round < 3; round++) {
      // The stream: adds and removals, back to back, recording the set after each completed operation.
      const states: Set<string>[] = [new Set(current)];
      let stop = false;
      const stream = (async () => {
        while (!stop) {
          const victims = [...current];
          if (victims.length > 3 && Math.random() < 0.4) {
            const v = victims[Math.floor(Math.random() * victims.length)];
            await store.removeNode(v);
            current.delete(v);
          } else current.add(await addPeer());
          states.push(new Set(current));
        }
      })();
      await new Promise((r) => setTimeout(r, 300 + Math.random() * 1500));
      agent!.proc.kill("SIGKILL");
      stop = true;
      await new Promise((r) => agent!.proc.once("exit", r));
      await stream;
      const died = await kernelPeers();
      await controller!.stop();
      controller = undefined;

      startAgent();
      await waitFor("restored apply", () => agent!.idle, 60_000, 20);
      const restored = await kernelPeers();
      assert.ok(states.length > 1, "the stream was running when the agent died");
      if (process.env.WEFT_TEST_DEBUG) console.log({ round, ops: states.length - 1, died: died.size, restored: restored.size });
      const k = states.findIndex((s) => s.size === restored.size && [...s].every((p) => restored.has(p)));
      assert.ok(k >= 0, `round ${round}: restored set ${[...restored].sort()} is no state the controller ever had`);
      // No regression: every peer added by an operation whose result the kernel showed at death is still there.
      for (let i = 1; i < states.length; i++) {
        const added = [...states[i]].find((p) => !states[i - 1].has(p));
        if (added && died.has(added)) assert.ok(k >= i, `round ${round}: restored state ${k} is older than state ${i} the kernel had reached (${added})`);
      }

      await startCtl();
      await waitFor(`round ${round}: convergence to the final set`, async () => {
        const now = await kernelPeers();
        return agent!.idle && now.size === current.size && [...current].every((p) => now.has(p));
      }, 60_000, 50);
    }
  });
});
