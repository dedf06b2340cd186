import { strict as assert } from "node:assert";
import { applyConfigUpdate, emptyDesired, endpointKey, type ConfigUpdate, type Endpoint, type NetworkConfig } from "../../pkg/api/index.js";

function net(name: string, extra: Partial<NetworkConfig> = {}): NetworkConfig {
  return {
    name, vni: 77, cidr: "10.50.0.0/16", mode: "switched", mtu: 1450, port: 4789, natOutgoing: true, isolated: true,
    default: false, flood: false, dns: true, subnet: "10.50.1.0/24", error: "", peers: [], ...extra,
  };
}
function ep(node: string, id: string, ip: string): Endpoint {
  return { id, nodeName: node, network: "l2", name: `default/${id}`, aliases: [], ips: [ip], mac: "02:00:00:00:00:01" };
}
const update = (u: Partial<ConfigUpdate>): ConfigUpdate => ({ revision: 1, snapshot: false, networks: [], removedNetworks: [], peerUpdates: [], endpointUpdates: [], ...u });

describe("api: endpoints in the desired config", () => {
  it("a snapshot carries the set; deltas add, replace and remove by node + id; the input is never modified", () => {
    const a = ep("h1", "c1/eth0", "10.50.1.2");
    const b = ep("h2", "c1/eth0", "10.50.2.2");
    const s = applyConfigUpdate(emptyDesired(), update({ revision: 5, snapshot: true, networks: [net("l2")], endpointUpdates: [{ network: "l2", endpoint: a, removed: false }, { network: "l2", endpoint: b, removed: false }] }));
    assert.deepEqual([...s.networks.get("l2")!.endpoints.keys()].sort(), ["h1/c1/eth0", "h2/c1/eth0"], "same id on two nodes: two endpoints");
    const moved = { ...a, ips: ["10.50.1.9"] };
    const d = applyConfigUpdate(s, update({ revision: 6, endpointUpdates: [{ network: "l2", endpoint: moved, removed: false }, { network: "l2", endpoint: { ...b, ips: [], mac: "" }, removed: true }, { network: "nowhere", endpoint: a, removed: false }] }));
    assert.deepEqual([...d.networks.get("l2")!.endpoints.values()], [moved]);
    assert.equal(s.networks.get("l2")!.endpoints.size, 2, "the earlier config is unchanged");
    assert.equal(endpointKey(moved), "h1/c1/eth0");
  });

  it("a delta's NetworkConfig for a known network keeps its endpoints; a removed and re-added network starts empty", () => {
    const a = ep("h1", "c1/eth0", "10.50.1.2");
    const s = applyConfigUpdate(emptyDesired(), update({ snapshot: true, networks: [net("l2")], endpointUpdates: [{ network: "l2", endpoint: a, removed: false }] }));
    const header = applyConfigUpdate(s, update({ revision: 2, networks: [net("l2", { mtu: 1400 })] }));
    assert.equal(header.networks.get("l2")!.mtu, 1400);
    assert.equal(header.networks.get("l2")!.endpoints.size, 1);
    const gone = applyConfigUpdate(header, update({ revision: 3, removedNetworks: ["l2"] }));
    const back = applyConfigUpdate(gone, update({ revision: 4, networks: [net("l2")] }));
    assert.equal(back.networks.get("l2")!.endpoints.size, 0);
    const snap = applyConfigUpdate(header, update({ revision: 5, snapshot: true, networks: [net("l2")] }));
    assert.equal(snap.networks.get("l2")!.endpoints.size, 0, "a snapshot replaces the endpoint set");
  });
});
