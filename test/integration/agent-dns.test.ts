// The agent's DNS glue with real sockets on loopback: records follow Join
// stream updates (snapshot, deltas, endpoint changes, dns toggled, network
// removed), servers start on the network's gateway address once the network
// is programmed, retry a bind that cannot succeed yet (and say so on /healthz),
// and stop when dns is turned off. A network whose gateway is 127.0.0.1 stands
// for a bridge's address; dig asks it.
import assert from "node:assert/strict";
import { execa } from "execa";
import type { ConfigUpdate, Endpoint, NetworkConfig } from "../../pkg/api/index.js";
import { AgentDns, type DnsNetwork } from "../../pkg/agent/dns.js";
import { silentLogger } from "../../pkg/log/index.js";
import { newRegistry } from "../../pkg/metrics/index.js";
import { freePort } from "../harness/dns-upstream.js";

const HOST = "127.0.0.1";

function netConfig(name: string, dns: boolean, extra: Partial<NetworkConfig> = {}): NetworkConfig {
  return { name, vni: 42, cidr: "127.0.0.0/8", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true, default: false, flood: false, dns, subnet: "127.0.0.0/24", error: "", peers: [], ...extra };
}

function ep(node: string, id: string, name: string, ips: string[], aliases: string[] = []): Endpoint {
  return { id, nodeName: node, network: "pods", name, aliases, ips, mac: "02:00:00:00:00:01" };
}

function update(u: Partial<ConfigUpdate>): ConfigUpdate {
  return { revision: 1, snapshot: false, networks: [], removedNetworks: [], peerUpdates: [], endpointUpdates: [], ...u };
}

const programmed = (n: NetworkConfig): DnsNetwork => ({ name: n.name, mode: n.mode as "routed", cidr: n.cidr, subnet: n.subnet, dns: n.dns });

describe("integration: agent DNS glue (records from the stream, servers on the gateway)", function () {
  this.timeout(30_000);
  let port: number;
  let dns: AgentDns;
  const registry = newRegistry(false);
  const dig = async (...args: string[]): Promise<string> => String((await execa("dig", [`@${HOST}`, "-p", String(port), "+tries=1", "+time=2", ...args], { reject: false })).stdout);
  const short = async (name: string): Promise<string[]> => (await dig("+short", name)).split("\n").filter(Boolean);
  const until = async (what: string, ok: () => boolean | Promise<boolean>): Promise<void> => {
    const end = Date.now() + 10_000;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    port = await freePort(HOST);
    dns = new AgentDns({ log: silentLogger(), port, upstreams: [{ host: HOST, port: 9 }], bindRetryBaseMs: 20, bindRetryCapMs: 100 });
  });
  after(async () => {
    await dns?.stop();
  });

  it("serves a snapshot's endpoints once the network is programmed, and follows endpoint changes", async () => {
    const pods = netConfig("pods", true);
    dns.onUpdate(update({ snapshot: true, networks: [pods], endpointUpdates: [{ network: "pods", endpoint: ep("a", "c1/eth0", "default/web", ["10.244.1.2"], ["www"]), removed: false }] }));
    assert.equal(dns.listening.length, 0, "nothing listens before an apply");
    dns.sync([programmed(pods)], registry);
    await until("the server to listen", () => dns.listening.length === 1);
    assert.deepEqual(dns.listening, [{ network: "pods", address: "127.0.0.1" }]);
    assert.deepEqual(await short("web.default"), ["10.244.1.2"]);
    assert.deepEqual(await short("www.pods.weft.internal"), ["10.244.1.2"]);

    // Another node's endpoint under the same alias, then one removed: answered per change, no restart.
    dns.onUpdate(update({ endpointUpdates: [{ network: "pods", endpoint: ep("b", "c1/eth0", "db", ["10.244.2.2"], ["www"]), removed: false }] }));
    assert.deepEqual((await short("www")).sort(), ["10.244.1.2", "10.244.2.2"]);
    dns.onUpdate(update({ endpointUpdates: [{ network: "pods", endpoint: ep("a", "c1/eth0", "", []), removed: true }] }));
    assert.deepEqual(await short("www"), ["10.244.2.2"]);
    assert.match(await dig("web.default.pods.weft.internal"), /status: NXDOMAIN/);
    const gauge = await registry.getSingleMetric("weft_agent_dns_records")!.get();
    assert.deepEqual(gauge.values.map((v) => [v.labels.network, v.value]), [["pods", 1]]);
  });

  it("a new snapshot replaces the network's endpoints; a delta header keeps them", async () => {
    const pods = netConfig("pods", true);
    dns.onUpdate(update({ networks: [{ ...pods, mtu: 1400 }] }));
    assert.deepEqual(await short("db"), ["10.244.2.2"], "a delta NetworkConfig keeps the endpoints");
    dns.onUpdate(update({ snapshot: true, networks: [pods], endpointUpdates: [{ network: "pods", endpoint: ep("c", "x/eth0", "cache", ["10.244.3.2"]), removed: false }] }));
    assert.deepEqual(await short("cache"), ["10.244.3.2"]);
    assert.match(await dig("db.pods.weft.internal"), /status: NXDOMAIN/, "the snapshot's set is complete");
  });

  it("dns turned off: the server stops and nothing listens", async () => {
    const off = netConfig("pods", false);
    dns.onUpdate(update({ networks: [off] }));
    dns.sync([programmed(off)], registry);
    assert.equal(dns.listening.length, 0);
    assert.match(await dig("cache"), /timed out|refused|no servers/);
    assert.equal(dns.recordsOf("pods"), undefined, "records of a network without dns are dropped");
  });

  it("dns off and on again between two applies: the server serves the new records, not the dropped ones", async () => {
    const on = netConfig("pods", true);
    dns.onUpdate(update({ snapshot: true, networks: [on], endpointUpdates: [{ network: "pods", endpoint: ep("a", "old/eth0", "old", ["10.244.9.9"]), removed: false }] }));
    dns.sync([programmed(on)], registry);
    await until("the server to listen", () => dns.listening.length === 1);
    assert.deepEqual(await short("old"), ["10.244.9.9"]);
    dns.onUpdate(update({ networks: [netConfig("pods", false)] }));
    dns.onUpdate(update({ networks: [on], endpointUpdates: [{ network: "pods", endpoint: ep("a", "new/eth0", "new", ["10.244.9.10"]), removed: false }] }));
    dns.sync([programmed(on)], registry);
    await until("the new records to be served", async () => dns.listening.length === 1 && (await short("new")).join() === "10.244.9.10");
    assert.match(await dig("old.pods.weft.internal"), /status: NXDOMAIN/);
    dns.onUpdate(update({ networks: [netConfig("pods", false)] }));
    dns.sync([], registry);
  });

  it("a bind that cannot succeed is retried with backoff, counted, and reported once it lasts", async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: EADDRNOTAVAIL, as before the dataplane has put the gateway on the bridge.
    const far = netConfig("far", true, { cidr: "192.0.2.0/24", subnet: "192.0.2.0/24" });
    dns.onUpdate(update({ networks: [far] }));
    dns.sync([programmed(far)], registry);
    await until("several bind attempts", async () => {
      const m = await registry.getSingleMetric("weft_agent_dns_bind_failures_total")!.get();
      return m.values.some((v) => v.labels.network === "far" && v.labels.code === "EADDRNOTAVAIL" && v.value >= 3);
    });
    assert.equal(dns.listening.length, 0);
    assert.equal(dns.unhealthy(60_000), undefined, "a short wait is not unhealthy");
    assert.match(dns.unhealthy(0) ?? "", /network far cannot listen on 192\.0\.2\.1 \(EADDRNOTAVAIL\)/);
    // The network goes: retrying stops, and health is green again.
    dns.onUpdate(update({ removedNetworks: ["far"] }));
    dns.sync([], registry);
    assert.equal(dns.unhealthy(0), undefined);
  });

  it("the restored state alone (no snapshot yet) starts no server", async () => {
    const fresh = new AgentDns({ log: silentLogger(), port });
    fresh.sync([programmed(netConfig("pods", true))], newRegistry(false));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fresh.listening.length, 0, "no records known: answering NXDOMAIN for every pod would be a lie");
    await fresh.stop();
  });
});
