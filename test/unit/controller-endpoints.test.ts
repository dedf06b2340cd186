// The controller's endpoint logic without I/O: validating reported endpoints,
// the key layout, the write a (full) report needs, and the per-network feed.
import assert from "node:assert/strict";
import { ConfigUpdate } from "../../pkg/api/index.js";
import { EndpointFeed, wantsEndpoints } from "../../pkg/controller/endpoint-feed.js";
import { EndpointView } from "../../pkg/controller/endpoint-view.js";
import { membershipProblem, planEndpointWrite, reportedEndpoint } from "../../pkg/controller/endpoints.js";
import { Model } from "../../pkg/controller/model.js";
import { encodeUpdateHead } from "../../pkg/controller/wire.js";
import { decodeRecord, Keys, type EndpointRecord, type Versioned } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";

const rec = (id: string, extra: Partial<EndpointRecord> = {}): EndpointRecord => ({ id, network: "blue", node: "node-a", name: "web", aliases: [], ips: ["10.1.0.5"], mac: "02:00:00:00:00:05", ...extra });
const stored = (r: EndpointRecord, lease = "7"): Versioned<EndpointRecord> => ({ value: r, modRevision: 1, createRevision: 1, lease });

describe("controller: endpoints (pure)", () => {
  it("encodes the id's slash in the key and parses it back", () => {
    const keys = new Keys("/weft/v1/");
    const key = keys.endpoint("blue", "node-a", "abc123/eth0");
    assert.equal(key, "/weft/v1/endpoints/blue/node-a/abc123%2Feth0");
    assert.deepEqual(keys.parse(key), { kind: "endpoint", network: "blue", node: "node-a", id: "abc123/eth0" });
    assert.deepEqual(keys.parse("/weft/v1/endpoints/blue/node-a"), { kind: "other" });
  });

  it("decodes stored values by schema, refusing a bad one or one that does not match its key, naming the field", () => {
    const key = { kind: "endpoint" as const, network: "blue", node: "node-a", id: "c1/eth0" };
    const ok = decodeRecord(key, JSON.stringify(rec("c1/eth0")));
    assert.equal(ok?.ok, true);
    const bad = decodeRecord(key, JSON.stringify({ ...rec("c1/eth0"), mac: "ZZ" }));
    assert.deepEqual(bad?.ok === false && [bad.kind, /mac/.test(bad.error)], ["endpoint", true]);
    const moved = decodeRecord(key, JSON.stringify(rec("c1/eth0", { node: "node-b" })));
    assert.match(moved?.ok === false ? moved.error : "", /node: "node-b" does not match its key/);
  });

  it("validates a reported endpoint, every problem naming its field", () => {
    const e = { id: "c1/eth0", nodeName: "ignored", network: "blue", name: "ns/web", aliases: ["www"], ips: ["10.1.0.5"], mac: "02:00:00:00:00:AA" };
    assert.deepEqual(reportedEndpoint(e, "node-a"), { id: "c1/eth0", network: "blue", node: "node-a", name: "ns/web", aliases: ["www"], ips: ["10.1.0.5"], mac: "02:00:00:00:00:aa" });
    assert.deepEqual(reportedEndpoint({ ...e, mac: "01:00:5e:00:00:01", ips: ["10.1.0.300"] }, "node-a", "endpoints[3]"), [
      'endpoints[3].ips[0]: "10.1.0.300" is not an IPv4 address',
      'endpoints[3].mac: "01:00:5e:00:00:01" is not a unicast MAC address',
    ]);
    assert.deepEqual(reportedEndpoint({ ...e, id: "nope" }, "node-a"), ['endpoint.id: "nope" is not <containerId>/<ifName>']);
    assert.match((reportedEndpoint({ ...e, aliases: ["bad alias"] }, "n") as string[])[0], /^endpoint\.aliases\[0\]/);
  });

  it("refuses an endpoint whose node holds no subnet of its network, or whose address is outside the CIDR", () => {
    const m = new Model();
    m.load({ revision: 1, networks: [{ value: netSpec("blue", "10.1.0.0/16", 1), modRevision: 1, createRevision: 1, lease: "0" }], nodes: [], leases: [{ value: { network: "blue", subnet: "10.1.0.0/24", node: "node-a", vtepIP: "192.0.2.1", vtepMac: "", acquired: "", renewed: "" }, modRevision: 1, createRevision: 1, lease: "7" }] });
    assert.equal(membershipProblem(m, rec("c1/eth0")), undefined);
    assert.match(membershipProblem(m, rec("c1/eth0", { ips: ["10.2.0.5"] }))!, /^ips\[0\]: 10\.2\.0\.5 is outside/);
    assert.match(membershipProblem(m, rec("c1/eth0", { node: "node-b" }))!, /^network: node node-b holds no subnet/);
    assert.match(membershipProblem(m, rec("c1/eth0", { network: "red" }))!, /^network: "red" does not exist/);
  });

  it("plans only what differs: new and changed puts, deletes of what is no longer wanted, rewrites on a new etcd lease", () => {
    const desired = new Map([["c1/eth0", rec("c1/eth0")], ["c2/eth0", rec("c2/eth0", { ips: ["10.1.0.6"] })], ["c3/eth0", rec("c3/eth0", { network: "red" })]]);
    const held = new Map([
      ["blue/c1/eth0", stored(rec("c1/eth0"))], // unchanged
      ["blue/c2/eth0", stored(rec("c2/eth0"))], // changed address
      ["blue/c3/eth0", stored(rec("c3/eth0"))], // moved to red
      ["blue/c4/eth0", stored(rec("c4/eth0"))], // gone
    ]);
    const slots = ["blue/c1/eth0", "blue/c2/eth0", "blue/c3/eth0", "red/c3/eth0", "blue/c4/eth0"];
    const w = planEndpointWrite(slots, desired, held, "7", () => true);
    assert.deepEqual(w.puts.map((p) => `${p.record.network}/${p.record.id}@${p.lease}`), ["blue/c2/eth0@7", "red/c3/eth0@7"]);
    assert.deepEqual(w.deletes.map((d) => `${d.network}/${d.id}`), ["blue/c3/eth0", "blue/c4/eth0"]);
    const relet = planEndpointWrite(["blue/c1/eth0"], desired, held, "8", () => true);
    assert.deepEqual(relet.puts.map((p) => p.lease), ["8"], "bound to the node's new lease");
    const refused = planEndpointWrite(["blue/c1/eth0"], desired, held, "7", () => false);
    assert.deepEqual([refused.puts.length, refused.deletes.length], [0, 1], "one no longer allowed is deleted");
  });

  it("the view indexes endpoints by network and by node", () => {
    const v = new EndpointView();
    v.put(stored(rec("c1/eth0")));
    v.put(stored(rec("c1/eth0", { network: "red" })));
    assert.deepEqual([...v.ofNode("node-a").keys()].sort(), ["blue/c1/eth0", "red/c1/eth0"]);
    assert.equal(v.delete("blue", "node-a", "c1/eth0"), true);
    assert.deepEqual([...v.of("blue").keys()], []);
    assert.deepEqual([...v.of("red").keys()], ["node-a/c1/eth0"]);
    assert.equal(v.delete("blue", "node-a", "c1/eth0"), false);
  });

  it("the feed logs each change once, coalesces a reader's catch-up per endpoint, and snapshots the whole set", () => {
    assert.deepEqual([wantsEndpoints({ mode: "routed", dns: false }), wantsEndpoints({ mode: "routed", dns: true }), wantsEndpoints({ mode: "switched", dns: false })], [false, true, true]);
    const f = new EndpointFeed("blue");
    assert.equal(f.set("node-a/c1/eth0", rec("c1/eth0")), true);
    assert.equal(f.set("node-a/c1/eth0", rec("c1/eth0")), false, "unchanged: not logged");
    f.set("node-a/c2/eth0", rec("c2/eth0"));
    f.set("node-a/c1/eth0", rec("c1/eth0", { ips: ["10.1.0.9"] }));
    f.set("node-a/c2/eth0", undefined);
    const decode = (pieces: Buffer[]) => ConfigUpdate.decode(Buffer.concat([encodeUpdateHead(1, false), ...pieces])).endpointUpdates.map((u) => `${u.endpoint!.nodeName}/${u.endpoint!.id}${u.removed ? " removed" : ` ${u.endpoint!.ips}`}`);
    assert.deepEqual(decode(f.since(0)), ["node-a/c1/eth0 10.1.0.9", "node-a/c2/eth0 removed"]);
    assert.equal(f.since(0), f.since(0), "readers at one cursor share the pieces");
    const snap = f.snapshot();
    assert.equal(snap.seq, f.seq);
    assert.deepEqual(decode(snap.pieces), ["node-a/c1/eth0 10.1.0.9"]);
    assert.equal(f.bytesSince(f.seq), 0);
  });

  it("a feed with a small byte bound drops old entries, and a reader behind them needs a snapshot", () => {
    const f = new EndpointFeed("blue", 200);
    for (let i = 0; i < 20; i++) f.set(`node-a/c${i}/eth0`, rec(`c${i}/eth0`));
    assert.equal(f.bytesSince(0), undefined);
    assert.ok(f.logBytes <= 200 + 100);
    assert.equal(f.size, 20);
  });
});
