// The conflist file: content for a NetworkDesired, atomic write that leaves
// unchanged content alone, and removal. Plugin invocation is covered against
// the real plugins in test/e2e/dataplane.test.ts.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildConflist, cniDns, CONFLIST_NAME, conflistName, isWeftConflist, removeConflist, syncConflists, writeConflist } from "../../pkg/cni/index.js";
import type { NetworkDesired } from "../../pkg/dataplane/index.js";

const net: NetworkDesired = { name: "blue", vni: 7, cidr: "10.244.0.0/16", mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: "10.244.5.0/24", peers: [] };

describe("cni: conflist file", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-cni-unit-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("builds from a NetworkDesired: no MTU written when it is 0 (default), the given one otherwise", () => {
    const c = buildConflist(net, "/var/lib/weft") as { name: string; plugins: Record<string, unknown>[] };
    assert.equal(c.name, "weft-blue");
    assert.equal(c.plugins[0].bridge, "weftbr7");
    assert.equal("mtu" in c.plugins[0], false);
    assert.deepEqual((c.plugins[0].ipam as { ranges: unknown }).ranges, [[{ subnet: "10.244.5.0/24", gateway: "10.244.5.1" }]]);
    assert.equal((buildConflist({ ...net, mtu: 1400 }, "/s") as { plugins: Record<string, unknown>[] }).plugins[0].mtu, 1400);
  });

  it("the resolver handed to pods of a dns network: its gateway, then <network>.<domain> and <domain> to search", () => {
    assert.deepEqual(cniDns(net, "weft.internal"), { nameservers: ["10.244.5.1"], search: ["blue.weft.internal", "weft.internal"] });
    assert.deepEqual(cniDns({ ...net, mode: "switched" }, "lab.test."), { nameservers: ["10.244.0.1"], search: ["blue.lab.test", "lab.test"] }, "switched: the CIDR's first host, the same on every node");
    const weft = (c: Record<string, unknown>) => (c.plugins as Record<string, unknown>[]).find((p) => p.type === "weft")!;
    assert.deepEqual(weft(buildConflist({ ...net, resolver: cniDns(net, "weft.internal") }, "/s")).dns, cniDns(net, "weft.internal"), "the weft plugin puts it into the result");
    assert.equal("dns" in weft(buildConflist(net, "/s")), false, "dns off: no resolver handed out");
  });

  it("rejects a subnet that is not a CIDR, naming it", () => {
    assert.throws(() => buildConflist({ ...net, subnet: "10.244.5.1/24" }, "/s"), /10\.244\.5\.1\/24/);
  });

  it("writes atomically into a created directory, leaves unchanged content alone, rewrites changed content", async () => {
    const target = path.join(dir, "net.d");
    const c = buildConflist(net, dir);
    assert.equal(await writeConflist(target, c), true);
    const file = path.join(target, CONFLIST_NAME);
    assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")), c);
    assert.deepEqual(fs.readdirSync(target), [CONFLIST_NAME], "no temp file left behind");
    const mtime = fs.statSync(file).mtimeMs;
    assert.equal(await writeConflist(target, c), false);
    assert.equal(fs.statSync(file).mtimeMs, mtime);
    assert.equal(await writeConflist(target, buildConflist({ ...net, subnet: "10.244.6.0/24" }, dir)), true);
    assert.match(fs.readFileSync(file, "utf8"), /10\.244\.6\.0\/24/);
  });

  it("removes the file, and says when there was nothing to remove", async () => {
    await writeConflist(dir, buildConflist(net, dir));
    assert.equal(await removeConflist(dir), true);
    assert.equal(fs.existsSync(path.join(dir, CONFLIST_NAME)), false);
    assert.equal(await removeConflist(dir), false);
  });
});

describe("conflists per network", () => {
  it("names the default's file 10-weft.conflist and the others weft-<network>.conflist", () => {
    assert.equal(conflistName("pods", true), "10-weft.conflist");
    assert.equal(conflistName("blue", false), "weft-blue.conflist");
    assert.ok(["10-weft.conflist", "weft-blue.conflist"].sort()[0] === "10-weft.conflist", "the default sorts first");
    for (const f of ["10-weft.conflist", "weft-blue.conflist", "weft-a-1.conflist"]) assert.ok(isWeftConflist(f), f);
    for (const f of ["10-flannel.conflist", "weft-.conflist", "weft-Blue.conflist", "weft-blue.conf", "99-weft-blue.conflist"]) assert.ok(!isWeftConflist(f), f);
  });

  it("syncConflists writes the wanted files, removes Weft's others, and never touches foreign files", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-conflists-"));
    try {
      fs.writeFileSync(path.join(dir, "05-other.conflist"), "{}");
      fs.writeFileSync(path.join(dir, "weft-old.conflist"), "{}");
      const want = new Map<string, object>([["10-weft.conflist", { name: "weft-pods" }], ["weft-blue.conflist", { name: "weft-blue" }]]);
      assert.equal(await syncConflists(dir, want), 3);
      assert.deepEqual(fs.readdirSync(dir).sort(), ["05-other.conflist", "10-weft.conflist", "weft-blue.conflist"]);
      assert.equal(await syncConflists(dir, want), 0, "unchanged files are not rewritten");
      assert.equal(await syncConflists(dir, new Map()), 2);
      assert.deepEqual(fs.readdirSync(dir), ["05-other.conflist"]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("conflist IPAM for switched networks", () => {
  const sw = { name: "l2", vni: 9, mode: "switched" as const, cidr: "10.50.0.0/16", mtu: 1450 };
  const ipam = (subnet: string) => (buildConflist({ ...sw, subnet }, "/s") as { plugins: { ipam: { ranges: unknown[][]; routes: unknown[] } }[] }).plugins[0].ipam;

  it("the CIDR as subnet, the lease without network and broadcast as range, the distributed gateway, default route via it", () => {
    assert.deepEqual(ipam("10.50.7.0/24").ranges, [[{ subnet: "10.50.0.0/16", rangeStart: "10.50.7.1", rangeEnd: "10.50.7.254", gateway: "10.50.0.1" }]]);
    assert.deepEqual(ipam("10.50.7.0/24").routes, [{ dst: "0.0.0.0/0", gw: "10.50.0.1" }]);
  });

  it("never hands out the gateway: the lease holding it starts after it", () => {
    assert.deepEqual(ipam("10.50.0.0/24").ranges[0][0], { subnet: "10.50.0.0/16", rangeStart: "10.50.0.2", rangeEnd: "10.50.0.254", gateway: "10.50.0.1" });
  });

  it("rejects a lease with no address left, and a switched network without its cidr, naming them", () => {
    assert.throws(() => ipam("10.50.0.0/31"), /lease 10\.50\.0\.0\/31 leaves no pod addresses/);
    assert.throws(() => buildConflist({ ...sw, cidr: undefined, subnet: "10.50.7.0/24" }, "/s"), /needs its cidr/);
  });

  it("routed conflists route the network's CIDR through their own interface too (pods in several networks)", () => {
    assert.deepEqual((buildConflist(net, "/s") as { plugins: { ipam: { routes: unknown } }[] }).plugins[0].ipam.routes, [{ dst: "0.0.0.0/0" }, { dst: "10.244.0.0/16" }]);
  });
});
