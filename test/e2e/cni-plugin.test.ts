// The `weft` CNI plugin on the real kernel: chained after Debian's bridge and
// host-local plugins in a host namespace, reporting to the agent's endpoint
// socket (the real EndpointServer). Namespaces are weft-cni-<random>-….
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { cniAdd, cniDel } from "../../pkg/cni/index.js";
import { EndpointServer, ENDPOINTS_FILE } from "../../pkg/cni/endpoint-server.js";
import type { Endpoint } from "../../pkg/cni/endpoint.js";
import { cniBinDir } from "../harness/cli.js";
import { deleteNamespacesWithPrefix, Netns, uniqueNetnsPrefix } from "../harness/netns.js";

const SUBNET = "10.251.7.0/24";

describe("e2e: the weft CNI plugin reports endpoints to the agent", function () {
  this.timeout(60_000);
  const prefix = uniqueNetnsPrefix("cni");
  let dir: string;
  let binDir: string;
  let host: Netns;
  let conflistPath: string;
  let server: EndpointServer | undefined;
  const events: { changed: Endpoint[]; removed: Endpoint[] }[] = [];
  let refused: string | undefined;

  const startServer = async (): Promise<EndpointServer> => {
    const s = new EndpointServer({ stateDir: path.join(dir, "state"), refuse: (n) => (n === refused ? `node is no member of network ${n}` : undefined), onChange: (changed, removed) => events.push({ changed, removed }) });
    await s.start();
    return s;
  };

  const pod = async (name: string): Promise<{ ns: Netns; inv: Parameters<typeof cniAdd>[0] }> => {
    const ns = await Netns.create(`${prefix}-${name}`);
    return { ns, inv: { conflistPath, netnsPath: ns.path, containerId: `ctr-${name}`, hostNetns: host.name, binDir, args: { weft: { name, aliases: ["svc"] } } } };
  };

  const podLink = async (ns: Netns): Promise<{ address: string; ip?: string }> => {
    const [link] = await ns.ipJson<{ address: string }>("link", "show", "eth0");
    const [addr] = await ns.ipJson<{ addr_info: { family: string; local: string }[] }>("addr", "show", "eth0");
    return { address: link.address, ip: addr?.addr_info.find((a) => a.family === "inet")?.local };
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-cni-"));
    binDir = cniBinDir(path.join(dir, "bin"));
    host = await Netns.create(`${prefix}-h`);
    conflistPath = path.join(dir, "weft-pods.conflist");
    fs.writeFileSync(
      conflistPath,
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "weft-pods",
        plugins: [
          { type: "bridge", bridge: "weftbr9", isGateway: true, ipam: { type: "host-local", ranges: [[{ subnet: SUBNET }]], dataDir: path.join(dir, "ipam") } },
          { type: "weft", network: "pods", socket: path.join(dir, "state", "cni.sock") },
        ],
      }),
    );
    server = await startServer();
  });

  after(async () => {
    await server?.stop();
    await deleteNamespacesWithPrefix(prefix);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("ADD registers the pod's address and MAC; CHECK passes; DEL removes it (twice is fine)", async () => {
    const { ns, inv } = await pod("web1");
    const res = await cniAdd(inv);
    const link = await podLink(ns);
    const eps = server!.list();
    assert.equal(eps.length, 1);
    assert.deepEqual(
      { ip: eps[0].ips[0], mac: eps[0].mac, name: eps[0].name, aliases: eps[0].aliases, network: eps[0].network, netns: eps[0].netns, id: eps[0].id },
      { ip: link.ip, mac: link.address, name: "web1", aliases: ["svc"], network: "pods", netns: ns.path, id: "ctr-web1/eth0" },
    );
    assert.equal(res.ip, link.ip);
    // Saved before the plugin was answered, so a crash right after keeps it.
    const saved = JSON.parse(fs.readFileSync(path.join(dir, "state", ENDPOINTS_FILE), "utf8")) as Endpoint[];
    assert.deepEqual(saved.map((e) => e.id), ["ctr-web1/eth0"]);

    const check = await execa("ip", ["netns", "exec", host.name, path.join(binDir, "weft")], {
      input: JSON.stringify({ cniVersion: "1.0.0", name: "weft-pods", type: "weft", network: "pods", socket: path.join(dir, "state", "cni.sock"), args: inv.args, prevResult: res.raw }),
      env: { CNI_COMMAND: "CHECK", CNI_CONTAINERID: inv.containerId, CNI_NETNS: ns.path, CNI_IFNAME: "eth0", CNI_PATH: binDir },
      reject: false,
    });
    assert.equal(check.exitCode, 0, String(check.stdout));

    await cniDel(inv);
    assert.deepEqual(server!.list(), []);
    await cniDel(inv);
    assert.equal(events.at(-1)!.removed[0].id, "ctr-web1/eth0");
  });

  it("ADD fails with a CNI error when the agent is unreachable, and leaves nothing attached", async () => {
    await server!.stop();
    server = undefined;
    try {
      const { ns, inv } = await pod("web2");
      await assert.rejects(cniAdd(inv), /CNI ADD weft: weft agent unreachable/);
      assert.deepEqual(await ns.ipJson("link", "show", "eth0").catch(() => []), [], "the pod's interface was rolled back");
      const leases = fs.readdirSync(path.join(dir, "ipam", "weft-pods")).filter((f) => f.startsWith("10.251."));
      assert.deepEqual(leases, [], "host-local released the address");
      // DEL with the agent away still succeeds (the agent reconciles later).
      await cniDel(inv);
    } finally {
      server = await startServer();
    }
  });

  it("an endpoint for a network the node is no member of is refused, and rolled back", async () => {
    refused = "pods";
    try {
      const { ns, inv } = await pod("web3");
      await assert.rejects(cniAdd(inv), /node is no member of network pods/);
      assert.deepEqual(await ns.ipJson("link", "show", "eth0").catch(() => []), []);
      assert.deepEqual(server!.list(), []);
    } finally {
      refused = undefined;
    }
  });

  it("a report with a bad MAC or IP over the socket is refused with the field named, nothing stored", async () => {
    const ask = (body: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const c = net.createConnection(server!.socketPath);
        let out = "";
        c.on("connect", () => c.end(body));
        c.on("data", (d) => (out += d));
        c.on("end", () => resolve(out));
        c.on("error", reject);
      });
    const ep = { containerId: "x1", netns: "/var/run/netns/none", ifName: "eth0", network: "pods", ips: ["10.251.7.9"], mac: "02:00:00:00:00:09" };
    assert.match(await ask(JSON.stringify({ op: "add", endpoint: { ...ep, mac: "not-a-mac" } })), /"ok":false.*endpoint\.mac/);
    assert.match(await ask(JSON.stringify({ op: "add", endpoint: { ...ep, ips: ["10.251.7.999"] } })), /"ok":false.*endpoint\.ips\[0\]/);
    assert.match(await ask("garbage"), /"ok":false.*request: not JSON/);
    assert.match(await ask("x".repeat(70_000)), /"ok":false.*larger than/);
    assert.deepEqual(server!.list(), []);
  });

  it("after a restart the agent keeps its endpoints and drops those whose netns is gone", async () => {
    const a = await pod("web4");
    const b = await pod("web5");
    await cniAdd(a.inv);
    await cniAdd(b.inv);
    await server!.stop();
    await b.ns.delete(); // the pod vanished while the agent was down
    server = await startServer();
    assert.deepEqual(server.list().map((e) => e.id).sort(), ["ctr-web4/eth0", "ctr-web5/eth0"]);
    const gone = await server.reconcile();
    assert.deepEqual(gone.map((e) => e.id), ["ctr-web5/eth0"]);
    assert.deepEqual(server.list().map((e) => e.id), ["ctr-web4/eth0"]);
    await cniDel(a.inv);
  });
});
