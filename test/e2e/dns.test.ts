// Names on Weft networks, end to end: real etcd, controller and agents on 3
// hosts, pods attached by the real CNI plugins (the weft plugin reporting
// them), `dig` run inside pod namespaces against their gateway. A stand-in
// upstream resolver runs in the outside-world namespace; nothing leaves the
// test's namespaces.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { OUTSIDE_IP, type Pod } from "../../pkg/lab/cluster.js";
import { LabProcess } from "../../pkg/lab/process.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { metricValue, REPO_ROOT, useCluster } from "../harness/cluster.js";

const DOMAIN = "weft.internal";

describe("e2e: DNS on Weft networks (dig in pod namespaces)", function () {
  this.timeout(120_000);
  const c = useCluster({ hosts: 3, podsPerHost: 0, network: { dns: true }, agentArgs: ["--dns-upstream", `${OUTSIDE_IP}:53`] });
  let upstream: LabProcess | undefined;
  const pods: Record<string, Pod> = {};

  const gateway = (p: Pod): string => p.ip.replace(/\.\d+$/, ".1");
  /** dig in the pod's namespace; `server` default: the resolver from its resolv.conf. */
  const dig = async (p: Pod, name: string, ...opts: string[]): Promise<string> => (await c.cluster.execIn(p.netns, ["dig", "+tries=1", "+time=2", ...opts, name])).stdout;
  const short = async (p: Pod, name: string, server = gateway(p)): Promise<string[]> => (await dig(p, name, `@${server}`, "+short")).split("\n").filter(Boolean);
  const status = (out: string): string | undefined => /status: (\w+)/.exec(out)?.[1];

  before(async function () {
    this.timeout(180_000);
    const cluster = c.cluster;
    upstream = new LabProcess("dns-upstream", cluster.outsideNs, [process.execPath, "--import", "tsx", path.join(REPO_ROOT, "test/harness/dns-upstream.ts"), OUTSIDE_IP, "53"], cluster.runDir);
    upstream.start();
    await waitFor("the upstream resolver", () => fs.readFileSync(upstream!.logFile, "utf8").includes("listening"), 30_000, 100);
    // A second network with dns on (its names must stay its own) and a third without.
    for (const spec of ["name: other\ncidr: 10.245.0.0/16\nvni: 43\nnodePrefixLength: 24\ndns: true\n", "name: quiet\ncidr: 10.246.0.0/16\nvni: 44\nnodePrefixLength: 24\n"]) {
      const res = await cluster.execIn(cluster.controlNs, ["node", cluster.bin("weftctl"), "--etcd-endpoints", cluster.etcdEndpoint, "network", "apply", "-f", "-"], spec);
      assert.ok(res.ok, res.stderr);
    }
    const [h1, h2, h3] = c.hosts;
    await waitFor("every host's conflists", () => c.hosts.every((h) => ["weft-other.conflist", "weft-quiet.conflist"].every((f) => fs.existsSync(path.join(h.cniConfDir, f)))), 60_000, 100);
    pods.a = await cluster.addPodWith(h1, { dnsName: "alpha", aliases: ["web"] });
    pods.b = await cluster.addPodWith(h2, { dnsName: "bravo", aliases: ["web"] });
    pods.c = await cluster.addPodWith(h3, { dnsName: "charlie", aliases: ["web"] });
    pods.secret = await cluster.addPodWith(h2, { networks: ["other"], dnsName: "secret" });
    pods.quiet = await cluster.addPodWith(h3, { networks: ["quiet"], dnsName: "hush" });
  });

  after(async () => {
    await upstream?.stop();
  });

  it("the pod's resolv.conf comes from the CNI result and points at its gateway", async () => {
    const text = fs.readFileSync(`/etc/netns/${pods.a.netns}/resolv.conf`, "utf8");
    assert.match(text, new RegExp(`^nameserver ${gateway(pods.a).replaceAll(".", "\\.")}$`, "m"));
    assert.match(text, new RegExp(`^search e2e\\.${DOMAIN} ${DOMAIN}$`, "m"));
    assert.deepEqual(pods.a.attachments?.[0].dns, { nameservers: [gateway(pods.a)], search: [`e2e.${DOMAIN}`, DOMAIN] });
    // `ip netns exec` bind-mounts it: a bare `dig` uses the network's resolver.
    assert.match(await dig(pods.a, "bravo.e2e.weft.internal"), /SERVER: 10\.244\.\d+\.1#53/);
  });

  it("a pod resolves <name>, <name>.<network>.<domain> and aliases of pods on other hosts", async () => {
    await waitFor("bravo in alpha's resolver", async () => (await short(pods.a, "bravo")).length > 0, 20_000, 100);
    assert.deepEqual(await short(pods.a, "bravo"), [pods.b.ip]);
    assert.deepEqual(await short(pods.a, `charlie.e2e.${DOMAIN}`), [pods.c.ip]);
    assert.deepEqual(await short(pods.c, "alpha"), [pods.a.ip], "from another host, through its own agent");
    // The search path from the CNI result: a bare `dig +search` finds the name in the network's zone.
    assert.deepEqual((await dig(pods.b, "charlie", "+search", "+short")).split("\n").filter(Boolean), [pods.c.ip]);
  });

  it("an alias held by 3 endpoints on 3 hosts answers all 3 addresses, rotated", async () => {
    const all = [pods.a.ip, pods.b.ip, pods.c.ip].sort();
    await waitFor("web to have 3 addresses", async () => (await short(pods.b, "web")).length === 3, 20_000, 100);
    const first = await short(pods.b, `web.e2e.${DOMAIN}`);
    const second = await short(pods.b, `web.e2e.${DOMAIN}`);
    assert.deepEqual([...first].sort(), all);
    assert.deepEqual([...second].sort(), all);
    assert.notDeepEqual(first, second, "the order rotates across queries");
  });

  it("names of another network do not resolve, and a pod of another network gets no answer", async () => {
    for (const name of [`secret.other.${DOMAIN}`, `secret.e2e.${DOMAIN}`, `nobody.e2e.${DOMAIN}`]) {
      const out = await dig(pods.a, name, `@${gateway(pods.a)}`);
      assert.equal(status(out), "NXDOMAIN", `${name}: ${out}`);
      assert.match(out, new RegExp(`AUTHORITY SECTION:\\ne2e\\.weft\\.internal\\.\\s+\\d+\\s+IN\\s+SOA`), "NXDOMAIN carries the zone's SOA");
    }
    // other's own resolver knows its pod, and nothing of e2e.
    assert.deepEqual(await short(pods.secret, "secret"), [pods.secret.ip]);
    assert.equal(status(await dig(pods.secret, `alpha.e2e.${DOMAIN}`, `@${gateway(pods.secret)}`)), "NXDOMAIN");
    // The e2e resolver on secret's host is reachable through the host's INPUT path, but answers only its own network's sources.
    const e2eOnH2 = gateway(pods.b);
    const cross = await dig(pods.secret, "bravo", `@${e2eOnH2}`);
    assert.match(cross, /timed out|no servers could be reached/, cross);
    const refused = metricValue(await c.cluster.agentMetrics(pods.b.host), "weft_agent_dns_refused_total", 'network="e2e"');
    assert.ok((refused ?? 0) >= 1, `refused counter: ${refused}`);
  });

  it("with dns off nothing listens on the network's gateway", async () => {
    const out = await dig(pods.quiet, "hush", `@${gateway(pods.quiet)}`);
    assert.match(out, /connection refused|timed out|no servers could be reached/, out);
    assert.equal(fs.existsSync(`/etc/netns/${pods.quiet.netns}/resolv.conf`), false, "no resolver handed to the pod");
  });

  it("an external name is forwarded to the upstream", async () => {
    assert.deepEqual(await short(pods.c, "www.example.test"), ["192.0.2.1"]);
    assert.equal(status(await dig(pods.c, "nothing.invalid", `@${gateway(pods.c)}`)), "NXDOMAIN", "the upstream's own answer passes through");
  });

  it("a new pod on another host resolves within the deadline; a removed one is gone", async () => {
    const fresh = await c.cluster.addPodWith(c.hosts[2], { dnsName: "delta" });
    await waitFor("delta at alpha's resolver", async () => (await short(pods.a, "delta")).join() === fresh.ip, 10_000, 50);
    await c.cluster.removePod(fresh);
    await waitFor("delta gone at alpha's resolver", async () => status(await dig(pods.a, `delta.e2e.${DOMAIN}`, `@${gateway(pods.a)}`)) === "NXDOMAIN", 10_000, 50);
  });
});
