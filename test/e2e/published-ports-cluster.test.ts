// Published ports and names, full stack, in both network models: real etcd,
// controller and agents, pods attached through the agents' conflists with a
// portMappings runtime config (what kubelet passes for hostPort, `-p 8080:80`).
// `<host underlay IP>:8080` must reach the pod's port 80 from another host and
// from the outside world; removing the pod removes the mapping. The switched
// network has dns on too: a pod on another host resolves the published pod by
// name through its node's distributed gateway.
import assert from "node:assert/strict";
import { LabProcess } from "../../pkg/lab/process.js";
import { waitFor } from "../../pkg/lab/ports.js";
import type { Pod } from "../../pkg/lab/cluster.js";
import { useCluster } from "../harness/cluster.js";

const MODELS = [
  { mode: "routed", network: { vni: 48, cidr: "10.248.0.0/16" } },
  { mode: "switched", network: { mode: "switched", dns: true, vni: 49, cidr: "10.249.0.0/16" } },
] as const;

for (const model of MODELS) describe(`e2e: published port in a ${model.mode} network (full stack)`, function () {
  this.timeout(180_000);
  const c = useCluster({ hosts: 2, podsPerHost: 0, network: model.network });
  let web: Pod;
  let server: LabProcess | undefined;
  const url = () => `http://${c.hosts[0].ip}:8080/`;
  const fetchFrom = async (netns: string) => (await c.cluster.execIn(netns, ["curl", "-s", "--max-time", "2", url()])).stdout.trim();

  before(async () => {
    web = await c.cluster.addPodWith(c.hosts[0], { dnsName: "web", portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] });
    server = new LabProcess("web-server", web.netns, [process.execPath, "-e", `require("http").createServer((q, s) => s.end("pod ${web.ip}")).listen(80)`], c.cluster.runDir);
    server.start();
    await waitFor("the pod's web server", () => c.cluster.httpOk(c.hosts[0].netns, `http://${web.ip}:80/`), 20_000, 100);
  });

  after(async () => {
    await server?.stop("SIGKILL");
  });

  it("<host IP>:8080 reaches the pod's port 80 from another host and from the outside world", async () => {
    assert.equal(await fetchFrom(c.hosts[1].netns), `pod ${web.ip}`, "from the other host");
    assert.equal(await fetchFrom(c.cluster.outsideNs), `pod ${web.ip}`, "from the outside world");
  });

  if (model.mode === "switched") {
    it("a pod on another host resolves the pod by name through its node's gateway, and reaches it at L2", async () => {
      const client = await c.cluster.addPodWith(c.hosts[1], { dnsName: "client" });
      const gateway = "10.249.0.1";
      let answer = "";
      await waitFor("web in the client's resolver", async () => {
        answer = (await c.cluster.execIn(client.netns, ["dig", "+tries=1", "+time=1", "+short", `@${gateway}`, "web"])).stdout.trim();
        return answer !== "";
      }, 20_000, 200).catch(() => undefined);
      assert.equal(answer, web.ip);
      assert.equal((await c.cluster.ping(client.netns, web.ip, 2, 0.2, 1)).received > 0, true);
    });
  }

  it("removing the pod removes the mapping", async () => {
    await server?.stop("SIGKILL");
    server = undefined;
    await c.cluster.removePod(web);
    const nat = (await c.cluster.execIn(c.hosts[0].netns, ["iptables", "-t", "nat", "-S"])).stdout;
    assert.doesNotMatch(nat, /--dport 8080/);
    assert.equal(await fetchFrom(c.hosts[1].netns), "");
  });
});
