// Re-registration keeps what the agent declared (issue #11, item 3): after
// the node's etcd lease is gone, the node comes back with its underlay IP,
// VTEP MACs and labels, from the agent's last Join, not from the view entry
// the expiry deleted.
import assert from "node:assert/strict";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { Store } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

describe("controller re-registration (real etcd, real gRPC)", function () {
  this.timeout(60_000);
  const etcd = useEtcd();
  let store: Store;
  let controller: RunningController | undefined;
  const agents: SimAgent[] = [];
  after(async () => {
    agents.forEach((a) => a.close());
    await controller?.stop();
    await store?.close();
  });

  it("brings a node whose etcd lease vanished back with its underlay IP, MACs and labels", async () => {
    const prefix = "/weft-rejoin/";
    store = Store.connect({ endpoints: [etcd.endpoint], prefix });
    await store.saveNetwork(netSpec("blue", "10.60.0.0/16", 60), () => {});
    controller = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, listen: "127.0.0.1:0", log: silentLogger(), leaseTtlSeconds: 3 });
    const addr = `127.0.0.1:${controller.port}`;
    const req = { ...simJoinRequest("node-r", 7, ["blue"]), labels: { rack: "r1" } };
    const a = new SimAgent(addr, req);
    const b = new SimAgent(addr, simJoinRequest("node-s", 8, ["blue"]));
    agents.push(a, b);
    await a.connect();
    await b.connect();
    const before = (await store.getNode("node-r"))!;

    // The lease disappears (as after an etcd outage longer than the TTL): its keys go with it.
    await store.revokeLease(before.lease);
    // Either the controller re-registers the connected node itself, or it ends the stream and the agent joins again.
    await waitFor(
      "node-r registered again",
      async () => {
        if (a.ended) await a.connect().catch(() => undefined);
        const n = await store.getNode("node-r");
        return !!n && n.lease !== before.lease && !!n.value.subnets.blue;
      },
      30_000,
      100,
    );
    const after = (await store.getNode("node-r"))!.value;
    assert.equal(after.underlayIP, req.underlayIp);
    assert.deepEqual(after.vtepMacs, req.vtepMacs);
    assert.deepEqual(after.labels, { rack: "r1" });
    const lease = (await store.listLeases("blue")).find((l) => l.node === "node-r")!;
    assert.equal(lease.vtepIP, req.underlayIp);
    assert.equal(lease.vtepMac, req.vtepMacs.blue);
    await waitFor("node-s to have node-r's entry again", () => b.desired.networks.get("blue")?.peers.get("node-r")?.vtepMac === req.vtepMacs.blue, 15_000, 50);
  });
});
