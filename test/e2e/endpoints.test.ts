// The endpoint registry end to end: real etcd, controller and agent processes
// in network namespaces, pods attached by the real CNI plugins (bridge,
// host-local, weft, portmap) through the conflists the agents write. A pod's
// endpoint reaches etcd (weftctl endpoint list) and the other host's agent,
// leaves on DEL, leaves when its namespace vanished while the agent was down,
// and leaves with its node.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { cniAdd, conflistName, CONFLIST_NAME } from "../../pkg/cni/index.js";
import { ENDPOINTS_FILE } from "../../pkg/cni/endpoint-server.js";
import { askAgent } from "../../pkg/cni/plugin.js";
import type { Host, Pod } from "../../pkg/lab/cluster.js";
import { waitFor } from "../../pkg/lab/ports.js";
import type { EndpointRecord } from "../../pkg/store/index.js";
import { metricValue, useCluster } from "../harness/cluster.js";

/** What `weftctl endpoint list -o json` prints: the stored records. */
type Listed = EndpointRecord;

describe("e2e: endpoint registry (agents, controller, etcd, CNI plugins in namespaces)", function () {
  this.timeout(240_000);
  // e2e: routed with DNS, so its members are sent endpoints; "plain" (added below): routed without.
  const c = useCluster({ hosts: 2, podsPerHost: 0, network: { dns: true }, agentArgs: ["--resync-interval", "5s"] });
  let h1: Host;
  let h2: Host;

  const list = async (network?: string): Promise<Listed[]> => JSON.parse(await c.cluster.weftctl("endpoint", "list", ...(network ? ["--network", network] : []), "-o", "json")) as Listed[];
  const told = async (host: Host, network: string): Promise<number> => metricValue(await c.cluster.agentMetrics(host), "weft_agent_endpoints", `network="${network}"`) ?? 0;
  const podMac = async (pod: Pod): Promise<string> => (JSON.parse((await execa("ip", ["-n", pod.netns, "-json", "link", "show", "eth0"])).stdout) as { address: string }[])[0].address;
  const startAgent = (h: Host) => c.cluster.startAgent(h, ["--resync-interval", "5s"]);

  before(async () => {
    [h1, h2] = c.hosts;
    await c.cluster.weftctl("network", "create", "plain", "--cidr", "10.245.0.0/16", "--vni", "43", "--node-prefix-length", "24");
    await waitFor("both agents to write weft-plain.conflist", () => c.hosts.every((h) => fs.existsSync(path.join(h.cniConfDir, conflistName("plain", false)))), 30_000, 100);
  });

  it("a pod attached through host 1's conflist is listed with its name, IP, MAC and node, and host 2's agent is told", async () => {
    const pod = await c.cluster.addPod(h1);
    const mac = await podMac(pod);
    await waitFor("the endpoint in etcd", async () => (await list()).length === 1, 20_000, 200);
    const [e] = await list();
    assert.deepEqual({ network: e.network, node: e.node, name: e.name, ips: e.ips, mac: e.mac, id: e.id }, { network: "e2e", node: h1.name, name: pod.name, ips: [pod.ip], mac, id: `${pod.name}/eth0` });
    const table = await c.cluster.weftctl("endpoint", "list");
    assert.match(table, /^NETWORK\s+NAME\s+NODE\s+IP\s+MAC\n/);
    assert.match(table, new RegExp(`e2e\\s+${pod.name}\\s+${h1.name}\\s+${pod.ip.replaceAll(".", "\\.")}\\s+${mac}`));
    await waitFor("host 2's agent to hold the endpoint", async () => (await told(h2, "e2e")) === 1, 20_000, 200);
    await waitFor("host 1's agent to hold its own (DNS answers for it)", async () => (await told(h1, "e2e")) === 1, 20_000, 200);
  });

  it("a pod in a routed network without dns is listed, but no agent is told about it", async () => {
    const pod = await c.cluster.addPod(h1, path.join(h1.cniConfDir, conflistName("plain", false)), "plain");
    await waitFor("the plain endpoint in etcd", async () => (await list("plain")).length === 1, 20_000, 200);
    assert.deepEqual((await list("plain")).map((e) => [e.name, e.ips[0]]), [[pod.name, pod.ip]]);
    // A later change in e2e reaches host 2 after the plain one would have: then it must still have none for plain.
    await c.cluster.addPod(h1);
    await waitFor("host 2 to hold both e2e endpoints", async () => (await told(h2, "e2e")) === 2, 20_000, 200);
    assert.equal(await told(h2, "plain"), 0);
    assert.equal(await told(h1, "plain"), 0);
  });

  it("DEL removes the endpoint from etcd and from the other host", async () => {
    const pod = c.cluster.pods.find((p) => p.host === h1 && p.conflist.endsWith(CONFLIST_NAME))!;
    await c.cluster.removePod(pod);
    await waitFor("the endpoint gone from etcd", async () => !(await list("e2e")).some((e) => e.name === pod.name), 20_000, 200);
    await waitFor("host 2 to drop it", async () => (await told(h2, "e2e")) === 1, 20_000, 200);
  });

  it("an invalid report on the agent's socket is refused with the field named, and nothing is written", async () => {
    const socket = path.join(h1.stateDir, "cni.sock");
    const saved = fs.readFileSync(path.join(h1.stateDir, ENDPOINTS_FILE), "utf8");
    const before = await list();
    const good = { containerId: "bad1", netns: "/var/run/netns/nope", ifName: "eth0", network: "e2e", name: "bad", ips: ["10.244.9.9"], mac: "02:00:00:00:00:09" };
    const badMac = await askAgent(socket, { op: "add", endpoint: { ...good, mac: "zz:00" } as never });
    assert.equal(badMac.ok, false);
    assert.match((badMac as { error: string }).error, /endpoint\.mac: "zz:00" is not a unicast MAC address/);
    const badIp = await askAgent(socket, { op: "add", endpoint: { ...good, ips: ["10.244.9.300"] } as never });
    assert.match((badIp as { error: string }).error, /endpoint\.ips\[0\]: "10\.244\.9\.300" is not an IPv4 address/);
    const notMember = await askAgent(socket, { op: "add", endpoint: { ...good, network: "green", id: undefined } as never });
    assert.match((notMember as { error: string }).error, /network: node .* is not a member of network "green"/);
    assert.equal(fs.readFileSync(path.join(h1.stateDir, ENDPOINTS_FILE), "utf8"), saved, "the agent's endpoint file is unchanged");
    assert.deepEqual(await list(), before, "etcd is unchanged");
  });

  it("the plugin answers with a CNI error (JSON on stdout, non-zero exit) when the agent is unreachable, and the pod is rolled back", async () => {
    await h2.agent!.stop();
    try {
      const out = await execa("ip", ["netns", "exec", h2.netns, path.join(c.cluster.cniBinDir, "weft")], {
        input: JSON.stringify({ cniVersion: "1.0.0", name: "weft-e2e", type: "weft", network: "e2e", socket: path.join(h2.stateDir, "cni.sock"), prevResult: { interfaces: [{ name: "eth0", mac: "02:00:00:00:00:01", sandbox: "/var/run/netns/x" }], ips: [{ address: "10.244.1.5/24", interface: 0 }] } }),
        env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "unreach", CNI_NETNS: "/var/run/netns/x", CNI_IFNAME: "eth0", CNI_PATH: c.cluster.cniBinDir },
        reject: false,
      });
      assert.notEqual(out.exitCode, 0);
      const err = JSON.parse(String(out.stdout)) as { code: number; msg: string };
      assert.equal(err.code, 11);
      assert.match(err.msg, /weft agent unreachable/);

      await execa("ip", ["netns", "add", `${h2.netns}-px`]);
      try {
        await assert.rejects(cniAdd({ conflistPath: path.join(h2.cniConfDir, CONFLIST_NAME), netnsPath: `/var/run/netns/${h2.netns}-px`, containerId: "px", hostNetns: h2.netns, binDir: c.cluster.cniBinDir }), /CNI ADD weft: weft agent unreachable/);
        const links = JSON.parse((await execa("ip", ["-n", `${h2.netns}-px`, "-json", "link", "show"])).stdout) as { ifname: string }[];
        assert.deepEqual(links.map((l) => l.ifname), ["lo"], "no interface left half-attached");
      } finally {
        await execa("ip", ["netns", "del", `${h2.netns}-px`], { reject: false });
      }
    } finally {
      startAgent(h2);
      await c.cluster.waitAgent(h2, 60_000);
    }
  });

  it("an agent restarted after a pod's namespace vanished removes that endpoint everywhere", async () => {
    // Its own name: host-local keeps the vanished pod's address (no DEL ran), under its container ID.
    const pod = await c.cluster.addPod(h2, undefined, "gone1");
    await waitFor("host 2's pod in etcd", async () => (await list("e2e")).some((e) => e.name === pod.name), 20_000, 200);
    await waitFor("host 1 to hold it", async () => (await told(h1, "e2e")) === 2, 20_000, 200);
    await h2.agent!.stop("SIGKILL");
    // The runtime deleted the pod while the agent was down; its DEL never reached the agent.
    await execa("ip", ["netns", "del", pod.netns]);
    c.cluster.pods.splice(c.cluster.pods.indexOf(pod), 1);
    startAgent(h2);
    await c.cluster.waitAgent(h2, 60_000);
    await waitFor("the vanished pod gone from etcd", async () => !(await list("e2e")).some((e) => e.name === pod.name), 20_000, 200);
    await waitFor("host 1 to drop it", async () => (await told(h1, "e2e")) === 1, 20_000, 200);
    assert.ok(!fs.readFileSync(path.join(h2.stateDir, ENDPOINTS_FILE), "utf8").includes(pod.name), "and from the agent's own file");
  });

  it("a pod whose namespace vanishes while the agent runs (its DEL lost) is removed within the agent's resync interval", async () => {
    const pod = await c.cluster.addPod(h2, undefined, "gone2");
    await waitFor("host 2's pod in etcd", async () => (await list("e2e")).some((e) => e.name === pod.name), 20_000, 200);
    await execa("ip", ["netns", "del", pod.netns]);
    c.cluster.pods.splice(c.cluster.pods.indexOf(pod), 1);
    await waitFor("the vanished pod gone from etcd", async () => !(await list("e2e")).some((e) => e.name === pod.name), 30_000, 200);
  });

  it("a node's endpoints vanish when the node is removed", async () => {
    assert.ok((await list()).some((e) => e.node === h1.name));
    await h1.agent!.stop(); // for good: a running agent would join again
    await c.cluster.weftctl("node", "remove", h1.name);
    await waitFor("host 1's endpoints gone", async () => !(await list()).some((e) => e.node === h1.name), 20_000, 200);
  });
});
