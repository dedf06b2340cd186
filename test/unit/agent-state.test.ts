import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { applyConfigUpdate, emptyDesired, type NetworkConfig } from "../../pkg/api/index.js";
import { configFromState, loadState, parseState, removeState, saveState, serializeState, stateFromConfig, statePath } from "../../pkg/agent/state.js";

function net(name: string, peers = 2): NetworkConfig {
  return {
    name, vni: 42, cidr: "10.244.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: false,
    default: true, flood: false, dns: false, subnet: "10.244.1.0/24", error: "",
    peers: Array.from({ length: peers }, (_, i) => ({ nodeName: `n${i}`, underlayIp: `192.168.1.${i + 2}`, vtepMac: `02:00:00:00:00:0${i + 2}`, subnet: `10.244.${i + 2}.0/24` })),
  };
}

describe("agent: persisted state", () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-state-"))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const config = () => applyConfigUpdate(emptyDesired(), { revision: 41, snapshot: true, networks: [net("red", 0), net("blue")], removedNetworks: [], peerUpdates: [], endpointUpdates: [] });

  it("round-trips config, MACs, subnets and revision through the file", async () => {
    const state = stateFromConfig(config(), { blue: "02:11:22:33:44:55" }, { blue: "10.244.1.0/24" });
    await saveState(dir, state);
    const loaded = await loadState(dir);
    assert.deepEqual(loaded, state);
    const back = configFromState(loaded!);
    assert.equal(back.revision, 41);
    assert.deepEqual([...back.networks.keys()], ["blue", "red"]);
    assert.deepEqual(back.networks.get("blue"), config().networks.get("blue"));
  });

  it("missing file: no state; nothing left but the file after a save", async () => {
    assert.equal(await loadState(dir), undefined);
    assert.equal(await loadState(path.join(dir, "does-not-exist")), undefined);
    await saveState(path.join(dir, "sub"), stateFromConfig(config(), {}, {}));
    assert.deepEqual(fs.readdirSync(path.join(dir, "sub")), ["agent-state.json"], "the temp file was renamed away");
    assert.equal(fs.statSync(statePath(path.join(dir, "sub"))).mode & 0o777, 0o600);
  });

  it("replaces the previous file whole", async () => {
    await saveState(dir, stateFromConfig(config(), {}, {}));
    const small = applyConfigUpdate(emptyDesired(), { revision: 50, snapshot: true, networks: [], removedNetworks: [], peerUpdates: [], endpointUpdates: [] });
    await saveState(dir, stateFromConfig(small, {}, {}));
    const loaded = await loadState(dir);
    assert.equal(loaded?.revision, 50);
    assert.deepEqual(loaded?.networks, []);
  });

  it("removeState deletes the file and tolerates its absence", async () => {
    await saveState(dir, stateFromConfig(config(), {}, {}));
    await removeState(dir);
    assert.equal(fs.existsSync(statePath(dir)), false);
    await removeState(dir);
  });

  const good = () => JSON.parse(serializeState(stateFromConfig(config(), { blue: "02:11:22:33:44:55" }, {})));
  for (const [what, mutate, expect] of [
    ["not JSON", () => "{", /not JSON/],
    ["an array", () => "[]", /not a JSON object/],
    ["wrong format", (o: any) => ((o.format = 2), o), /format: expected 1/],
    ["negative revision", (o: any) => ((o.revision = -1), o), /revision/],
    ["networks not an array", (o: any) => ((o.networks = {}), o), /networks: not an array/],
    ["a network without a name", (o: any) => ((o.networks[0].name = ""), o), /networks\[0\]\.name/],
    ["a network that is not an object", (o: any) => ((o.networks[1] = 5), o), /networks\[1\]/],
    ["a bad MAC", (o: any) => ((o.vtepMacs.blue = "zz"), o), /vtepMacs\.blue/],
    ["subnets not strings", (o: any) => ((o.subnets = { blue: 1 }), o), /subnets\.blue/],
  ] as const) {
    it(`rejects a file with ${what}, naming the field`, async () => {
      const out = (mutate as (o: unknown) => unknown)(good());
      const text = typeof out === "string" ? out : JSON.stringify(out);
      assert.throws(() => parseState(text), expect);
      fs.writeFileSync(statePath(dir), text);
      await assert.rejects(loadState(dir), (err: Error) => err.message.startsWith(statePath(dir)) && expect.test(err.message));
    });
  }
});

describe("agent: persisted endpoints (a switched network's entries survive a restart without the controller)", () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-state-ep-"))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const ep = (node: string, id: string, ip: string) => ({ id, nodeName: node, network: "l2", name: `pod-${id}`, aliases: [], ips: [ip], mac: `02:00:00:00:0${node.length}:${ip.split(".")[3].padStart(2, "0")}` });
  const l2 = (): NetworkConfig => ({ ...net("l2", 1), mode: "switched" });

  it("keeps every endpoint through the state file and through the journal", async () => {
    const config = applyConfigUpdate(emptyDesired(), {
      revision: 5, snapshot: true, networks: [l2()], removedNetworks: [], peerUpdates: [],
      endpointUpdates: [{ network: "l2", endpoint: ep("n0", "c1/eth0", "10.244.2.5"), removed: false }, { network: "l2", endpoint: ep("me", "c2/eth0", "10.244.1.5"), removed: false }],
    });
    const state = stateFromConfig(config, {}, {});
    assert.equal(state.endpoints.l2.length, 2);
    await saveState(dir, state);
    assert.deepEqual(await loadState(dir), state);
    const back = configFromState((await loadState(dir))!);
    assert.deepEqual([...back.networks.get("l2")!.endpoints.keys()].sort(), ["me/c2/eth0", "n0/c1/eth0"]);
    // The journal's deltas (an endpoint removed, one added) replay on top of the file.
    fs.writeFileSync(path.join(dir, "agent-state.journal"), JSON.stringify({ revision: 6, snapshot: false, endpointUpdates: [
      { network: "l2", endpoint: { id: "c1/eth0", nodeName: "n0" }, removed: true },
      { network: "l2", endpoint: ep("n0", "c3/eth0", "10.244.2.6") },
    ] }) + "\n");
    const replayed = configFromState((await loadState(dir))!);
    assert.deepEqual([...replayed.networks.get("l2")!.endpoints.keys()].sort(), ["me/c2/eth0", "n0/c3/eth0"]);
    assert.equal(replayed.revision, 6);
  });

  it("a file written before endpoints were kept loads with none; a malformed endpoints field is rejected, naming it", () => {
    const text = serializeState(stateFromConfig(applyConfigUpdate(emptyDesired(), { revision: 1, snapshot: true, networks: [l2()], removedNetworks: [], peerUpdates: [], endpointUpdates: [] }), {}, {}));
    const o = JSON.parse(text);
    delete o.endpoints;
    assert.deepEqual(parseState(JSON.stringify(o)).endpoints, {});
    assert.throws(() => parseState(JSON.stringify({ ...o, endpoints: [] })), /endpoints: not an object/);
    assert.throws(() => parseState(JSON.stringify({ ...o, endpoints: { l2: {} } })), /endpoints\.l2: not an array/);
  });
});
