// The resolver's name index and the upstream list: pure logic.
import assert from "node:assert/strict";
import { dnsNameOf, NetworkRecords, parseUpstream, upstreamsFromResolvConf } from "../../pkg/dns/index.js";

describe("dns records", () => {
  const recs = (): NetworkRecords => {
    const r = new NetworkRecords("pods");
    r.put({ id: "a/eth0", name: "default/web-1", aliases: ["web"], ips: ["10.244.1.2"] });
    r.put({ id: "b/eth0", name: "db", aliases: ["web", "DB-Primary"], ips: ["10.244.2.2"] });
    r.put({ id: "c/eth0", name: "", aliases: ["web"], ips: ["10.244.3.2"] });
    return r;
  };

  it("maps namespace/pod to pod.namespace", () => {
    assert.equal(dnsNameOf("default/Web-1"), "web-1.default");
    assert.equal(dnsNameOf("db"), "db");
  });

  it("answers names and aliases, short and under the network's zone, case-insensitively", () => {
    const r = recs();
    assert.deepEqual(r.lookup("db", 4), { kind: "answer", addresses: ["10.244.2.2"] });
    assert.deepEqual(r.lookup("DB.pods.weft.internal.", 4), { kind: "answer", addresses: ["10.244.2.2"] });
    assert.deepEqual(r.lookup("web-1.default", 4), { kind: "answer", addresses: ["10.244.1.2"] });
    assert.deepEqual(r.lookup("web-1.default.pods.weft.internal", 4), { kind: "answer", addresses: ["10.244.1.2"] });
    assert.deepEqual(r.lookup("db-primary", 4), { kind: "answer", addresses: ["10.244.2.2"] });
    assert.deepEqual(r.lookup("db", 6), { kind: "answer", addresses: [] }, "IPv4-only endpoint: NODATA for AAAA");
  });

  it("an alias held by 3 endpoints returns all 3, rotated on every query", () => {
    const r = recs();
    const orders = [0, 1, 2, 3].map(() => (r.lookup("web", 4) as { addresses: string[] }).addresses);
    for (const o of orders) assert.deepEqual([...o].sort(), ["10.244.1.2", "10.244.2.2", "10.244.3.2"]);
    assert.notDeepEqual(orders[0], orders[1]);
    assert.notDeepEqual(orders[1], orders[2]);
    assert.deepEqual(orders[0], orders[3], "a full turn comes back to the start");
    assert.equal(new Set(orders.slice(0, 3).map((o) => o[0])).size, 3, "each address leads once per turn");
  });

  it("unknown names in the zone or another network's zone are NXDOMAIN; other names are forwarded", () => {
    const r = recs();
    assert.deepEqual(r.lookup("nope.pods.weft.internal", 4), { kind: "nxdomain" });
    assert.deepEqual(r.lookup("db.other.weft.internal", 4), { kind: "nxdomain" }, "names of other networks do not resolve");
    assert.deepEqual(r.lookup("weft.internal", 4), { kind: "answer", addresses: [] });
    assert.deepEqual(r.lookup("example.org", 4), { kind: "forward" });
    assert.deepEqual(r.lookup("nope", 4), { kind: "forward" });
  });

  it("removing and replacing endpoints updates every name they held", () => {
    const r = recs();
    r.remove("b/eth0");
    assert.deepEqual(r.lookup("db.pods.weft.internal", 4), { kind: "nxdomain" });
    assert.equal((r.lookup("web", 4) as { addresses: string[] }).addresses.length, 2);
    r.put({ id: "a/eth0", name: "default/web-1", aliases: [], ips: ["10.244.9.9"] });
    assert.deepEqual(r.lookup("web", 4), { kind: "answer", addresses: ["10.244.3.2"] });
    assert.deepEqual(r.lookup("web-1.default", 4), { kind: "answer", addresses: ["10.244.9.9"] });
    r.remove("a/eth0");
    r.remove("c/eth0");
    r.remove("c/eth0");
    assert.equal(r.size, 0);
    assert.deepEqual(r.lookup("web", 4), { kind: "forward" });
  });

  it("a custom domain moves the zone", () => {
    const r = new NetworkRecords("blue", "corp.example.");
    r.put({ id: "x", name: "api", aliases: [], ips: ["10.9.0.2"] });
    assert.equal(r.zone, "blue.corp.example");
    assert.deepEqual(r.lookup("api.blue.corp.example", 4), { kind: "answer", addresses: ["10.9.0.2"] });
    assert.deepEqual(r.lookup("api.pods.weft.internal", 4), { kind: "forward" });
  });
});

describe("dns upstreams", () => {
  it("parses IP and IP:PORT, refusing the rest with the value named", () => {
    assert.deepEqual(parseUpstream("10.0.0.2"), { host: "10.0.0.2", port: 53 });
    assert.deepEqual(parseUpstream("127.0.0.1:5353"), { host: "127.0.0.1", port: 5353 });
    assert.deepEqual(parseUpstream("[fd00::1]:53"), { host: "fd00::1", port: 53 });
    for (const bad of ["dns.google", "10.0.0.2:0", "10.0.0.2:70000", "10.0.0"]) assert.throws(() => parseUpstream(bad), new RegExp(`"${bad.replace(/\./g, "\\.")}"`));
  });

  it("reads nameserver lines, skipping the resolver's own address and what cannot be used", () => {
    const conf = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver 10.244.1.1\n  nameserver fd00::53\nnameserver fe80::1%eth0\noptions ndots:5\n";
    assert.deepEqual(upstreamsFromResolvConf(conf, ["10.244.1.1"]), [
      { host: "10.0.0.2", port: 53 },
      { host: "fd00::53", port: 53 },
    ]);
  });
});
