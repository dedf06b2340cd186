// The agent's switched-network glue on a real kernel, with its controller
// down: host A runs a real Agent that restores the controller's last config —
// a switched network, its peers and its endpoints — from the state dir; host B
// is programmed by a Dataplane directly. A pod on each host, attached by the
// real CNI plugins through the conflists written. The agent programs B's
// endpoint (never its own), and a restart of the agent under a 50 pps ping
// between the pods loses nothing: the endpoints come back from the state dir,
// so the restarted agent's full diff finds the kernel already right.
// Namespaces weft-swa-<random>-….
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { Agent, loadState, saveState, stateFromConfig } from "../../pkg/agent/index.js";
import { applyConfigUpdate, emptyDesired, type Endpoint, type NetworkConfig } from "../../pkg/api/index.js";
import { cniAdd, CONFLIST_NAME } from "../../pkg/cni/index.js";
import { EndpointServer } from "../../pkg/cni/endpoint-server.js";
import { Dataplane, type NodeDesired } from "../../pkg/dataplane/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { cniBinDir } from "../harness/cli.js";
import { deleteNamespacesWithPrefix, Netns, uniqueNetnsPrefix } from "../harness/netns.js";

const VNI = 4545;
const DEV = `weft.${VNI}`;
const BR = `weftbr${VNI}`;
const CIDR = "10.253.0.0/16";
const A_IP = "192.168.79.1";
const B_IP = "192.168.79.2";

describe("e2e: agent programs a switched network's endpoints from its state dir (controller down)", function () {
  this.timeout(120_000);
  const prefix = uniqueNetnsPrefix("swa");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weft-swa-"));
  const stateDir = path.join(tmp, "a-state");
  let a: Netns;
  let b: Netns;
  let podA: Netns;
  let podB: Netns;
  let dpB: Dataplane;
  /** B's side of the weft plugin (no agent runs on B). */
  let endpointsB: EndpointServer;
  const binDir = cniBinDir(path.join(tmp, "bin"));
  let agent: Agent | undefined;
  let epA: Endpoint;
  let epB: Endpoint;

  const l2 = (subnet: string, peer: { nodeName: string; underlayIp: string; subnet: string }): NetworkConfig => ({
    name: "l2", vni: VNI, cidr: CIDR, mode: "switched", mtu: 1450, port: 4789, natOutgoing: true, isolated: true, default: true, flood: false, dns: false, subnet, error: "",
    peers: [{ ...peer, vtepMac: "" }],
  });
  const desiredB = (): NodeDesired => ({
    uplink: "eth0", underlayIp: B_IP,
    networks: [{ name: "l2", vni: VNI, cidr: CIDR, mode: "switched", mtu: 1450, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: "10.253.2.0/24",
      peers: [{ nodeName: "a", underlayIp: A_IP, vtepMac: "", subnet: "10.253.1.0/24" }],
      endpoints: epA ? [{ key: `a/${epA.id}`, nodeName: "a", ips: epA.ips, mac: epA.mac }] : [] }],
  });
  const startAgent = async (): Promise<Agent> => {
    const ag = new Agent({
      nodeName: "a", controllers: ["127.0.0.1:1"], uplink: "eth0", stateDir, cniConfDir: path.join(tmp, "a-net.d"), netns: a.name,
      registry: newRegistry(false), log: silentLogger(), resyncIntervalMs: 0, reconnectBaseMs: 5000, reconnectCapMs: 5000,
    });
    await ag.start();
    return ag;
  };
  const neighOnA = async () => (await a.ipJson<{ dst: string; lladdr?: string }>("neigh", "show", "dev", BR, "nud", "permanent")).map((n) => `${n.dst} ${n.lladdr}`).sort();

  before(async () => {
    a = await Netns.create(`${prefix}-a`);
    b = await Netns.create(`${prefix}-b`);
    await a.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name);
    await a.ip("addr", "add", `${A_IP}/24`, "dev", "eth0");
    await b.ip("addr", "add", `${B_IP}/24`, "dev", "eth0");
    await a.ip("link", "set", "eth0", "up");
    await b.ip("link", "set", "eth0", "up");
    // B first, with its pod: A's restored state names that pod's endpoint.
    dpB = new Dataplane({ log: silentLogger(), netns: b.name, cniConfDir: path.join(tmp, "b-net.d"), stateDir: path.join(tmp, "b-state") });
    await dpB.apply(desiredB());
    endpointsB = new EndpointServer({ stateDir: path.join(tmp, "b-state") });
    await endpointsB.start();
    podB = await Netns.create(`${prefix}-pb`);
    const rb = await cniAdd({ conflistPath: path.join(tmp, "b-net.d", CONFLIST_NAME), netnsPath: podB.path, containerId: "pb", hostNetns: b.name, binDir, args: { weft: { name: "pb" } } });
    epB = { id: "pb/eth0", nodeName: "b", network: "l2", name: "pb", aliases: [], ips: [rb.ip], mac: rb.mac!.toLowerCase() };
  });

  after(async () => {
    await agent?.stop();
    dpB?.close();
    await endpointsB?.stop();
    await deleteNamespacesWithPrefix(prefix);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("programs the remote endpoint from the restored state, and none for the node's own", async () => {
    // The node's own endpoint is in the config too (the controller sends every member every endpoint): never programmed here.
    const own: Endpoint = { id: "pa/eth0", nodeName: "a", network: "l2", name: "pa", aliases: [], ips: ["10.253.1.200"], mac: "02:00:00:00:01:c8" };
    const config = applyConfigUpdate(emptyDesired(), {
      revision: 3, snapshot: true, removedNetworks: [], peerUpdates: [],
      networks: [l2("10.253.1.0/24", { nodeName: "b", underlayIp: B_IP, subnet: "10.253.2.0/24" })],
      endpointUpdates: [{ network: "l2", endpoint: epB, removed: false }, { network: "l2", endpoint: own, removed: false }],
    });
    await saveState(stateDir, stateFromConfig(config, { l2: "02:aa:00:00:45:01" }, { l2: "10.253.1.0/24" }));
    agent = await startAgent();
    await waitFor("B's endpoint programmed on A", async () => (await neighOnA()).includes(`${epB.ips[0]} ${epB.mac}`), 30_000, 100);
    assert.deepEqual(await neighOnA(), [`${epB.ips[0]} ${epB.mac}`], "only the remote endpoint, not the node's own");
    const fdb = await a.bridgeJson<{ mac: string; dst?: string; master?: string }>("fdb", "show", "dev", DEV);
    assert.ok(fdb.some((e) => e.mac === epB.mac && e.master === BR) && fdb.some((e) => e.mac === epB.mac && e.dst === B_IP), JSON.stringify(fdb));
    assert.ok(!fdb.some((e) => e.mac === own.mac));

    podA = await Netns.create(`${prefix}-pa`);
    const ra = await cniAdd({ conflistPath: path.join(tmp, "a-net.d", CONFLIST_NAME), netnsPath: podA.path, containerId: "pa", hostNetns: a.name, binDir, args: { weft: { name: "pa" } } });
    assert.deepEqual(agent!.endpoints.map((e) => [e.id, e.mac]), [["pa/eth0", ra.mac!.toLowerCase()]], "the weft plugin reported pod A to the agent");
    assert.ok(ra.ip.startsWith("10.253.1."), `pod A's address ${ra.ip} from A's lease`);
    epA = { id: "pa/eth0", nodeName: "a", network: "l2", name: "pa", aliases: [], ips: [ra.ip], mac: ra.mac!.toLowerCase() };
    await dpB.apply(desiredB());
    const r = await podA.exec("ping", ["-c", "1", "-w", "5", epB.ips[0]]);
    assert.equal(r.exitCode, 0, `pod A -> pod B: ${r.stdout}`);
  });

  it("an agent restart under a 50 pps ping between the pods loses nothing; the endpoints stay in the state dir", async () => {
    const ping = podA.exec("ping", ["-i", "0.02", "-c", "250", "-W", "1", epB.ips[0]]);
    await new Promise((r) => setTimeout(r, 1000));
    await agent!.stop();
    agent = undefined;
    const saved = await loadState(stateDir);
    assert.deepEqual(saved?.endpoints.l2?.map((e) => e.id).sort(), ["pa/eth0", "pb/eth0"], "endpoints persisted");
    agent = await startAgent();
    await waitFor("the restarted agent's first apply", async () => agent!.idle && agent!.lastApplied !== undefined, 30_000, 50);
    const res = await ping;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(String(res.stdout));
    assert.ok(m, String(res.stdout));
    console.log(`      ${m[1]} sent, ${m[2]} received across the restart`);
    assert.equal(Number(m[2]), Number(m[1]), "0 lost");
    assert.deepEqual(await neighOnA(), [`${epB.ips[0]} ${epB.mac}`], "entries kept");
  });
});
