// Published ports (hostPort, `-p 8080:80`): a pod attached through the
// conflist the agent writes, with a portMappings runtime config, answers on
// its host's address from another host; removing the pod removes the mapping.
// Real kernel, real CNI plugins; namespaces weft-pp-<random>-….
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { buildConflist, cniAdd, cniDel, type CniInvocation } from "../../pkg/cni/index.js";
import { EndpointServer } from "../../pkg/cni/endpoint-server.js";
import { cniBinDir } from "../harness/cli.js";
import { deleteNamespacesWithPrefix, Netns, uniqueNetnsPrefix } from "../harness/netns.js";

const HOST_IP = "10.98.0.1";
const CLIENT_IP = "10.98.0.2";

describe("e2e: published ports through the agent's conflist (portmap)", function () {
  this.timeout(60_000);
  const prefix = uniqueNetnsPrefix("pp");
  let dir: string;
  let host: Netns;
  let client: Netns;
  let pod: Netns;
  let inv: CniInvocation;
  let server: ResultPromise | undefined;
  /** The agent's side of the weft plugin the conflist chains. */
  let endpoints: EndpointServer;

  const curl = async (url: string): Promise<{ code: number; out: string }> => {
    const r = await client.exec("curl", ["-s", "--max-time", "2", url]);
    return { code: r.exitCode ?? -1, out: String(r.stdout) };
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-pp-"));
    host = await Netns.create(`${prefix}-h`);
    client = await Netns.create(`${prefix}-c`);
    pod = await Netns.create(`${prefix}-p`);
    await host.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client.name);
    await host.ip("addr", "add", `${HOST_IP}/24`, "dev", "eth0");
    await client.ip("addr", "add", `${CLIENT_IP}/24`, "dev", "eth0");
    await host.ip("link", "set", "eth0", "up");
    await client.ip("link", "set", "eth0", "up");
    const conflistPath = path.join(dir, "10-weft.conflist");
    fs.writeFileSync(conflistPath, JSON.stringify(buildConflist({ name: "pods", vni: 77, subnet: "10.97.3.0/24", mtu: 1450 }, dir)));
    endpoints = new EndpointServer({ stateDir: dir });
    await endpoints.start();
    inv = { conflistPath, netnsPath: pod.path, containerId: "pp-web", hostNetns: host.name, binDir: cniBinDir(path.join(dir, "bin")), portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] };
  });

  after(async () => {
    server?.kill("SIGKILL");
    await endpoints?.stop();
    await deleteNamespacesWithPrefix(prefix);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("<host IP>:8080 from another host reaches the pod's port 80", async () => {
    const res = await cniAdd(inv);
    server = execa("ip", ["netns", "exec", pod.name, process.execPath, "-e", `require("http").createServer((q, s) => s.end("pod " + ${JSON.stringify(res.ip)})).listen(80, "0.0.0.0")`], { reject: false });
    // Wait for the pod's server, asking from its host (the client has no route to pods: the published port is its way in).
    for (let i = 0; i < 50; i++) {
      if (String((await host.exec("curl", ["-s", "--max-time", "1", `http://${res.ip}:80/`])).stdout).startsWith("pod")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const viaHost = await curl(`http://${HOST_IP}:8080/`);
    assert.equal(viaHost.out, `pod ${res.ip}`, `curl exit ${viaHost.code}`);
    const nat = String((await host.exec("iptables", ["-t", "nat", "-S"])).stdout);
    assert.match(nat, /--dport 8080/, "portmap's DNAT rule is in the host namespace");
  });

  it("removing the pod removes the mapping", async () => {
    await cniDel(inv);
    const nat = String((await host.exec("iptables", ["-t", "nat", "-S"])).stdout);
    assert.doesNotMatch(nat, /--dport 8080/);
    const after = await curl(`http://${HOST_IP}:8080/`);
    assert.notEqual(after.out.startsWith("pod"), true);
  });
});
