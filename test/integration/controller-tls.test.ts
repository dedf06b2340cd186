import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store } from "../../pkg/store/index.js";
import { makePki, type TestPki } from "../harness/certs.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";

describe("controller with mTLS", function () {
  this.timeout(60_000);
  const etcd = useEtcd();
  let pki: TestPki;
  let controller: RunningController;
  const agents: SimAgent[] = [];

  before(async () => {
    pki = makePki();
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: "/weft-tls/" });
    await store.saveNetwork(netSpec("blue", "10.70.0.0/16", 70), () => {});
    await store.close();
    controller = await startController({
      etcdEndpoints: [etcd.endpoint],
      etcdPrefix: "/weft-tls/",
      listen: "127.0.0.1:0",
      tls: { ...pki.server, ca: pki.ca },
      log: silentLogger(),
    });
  });
  after(async () => {
    agents.forEach((a) => a.close());
    await controller?.stop();
    pki?.remove();
  });

  function agentWithCert(certName: string | undefined, nodeName: string): SimAgent {
    const client = certName ? pki.client(certName) : undefined;
    const creds = grpc.credentials.createSsl(pki.ca, client?.key ?? null, client?.cert ?? null);
    const a = new SimAgent(`127.0.0.1:${controller.port}`, simJoinRequest(nodeName, 1, ["blue"]), { credentials: creds });
    agents.push(a);
    return a;
  }

  it("lets an agent join as the node named in its certificate", async () => {
    const a = agentWithCert("node-a", "node-a");
    await a.connect();
    assert.match(a.subnet("blue") ?? "", /^10\.70\./);
  });

  it("refuses an agent whose certificate names another node", async () => {
    const a = agentWithCert("node-a", "node-b");
    await assert.rejects(a.connect(), (err: { code?: number; message: string }) => {
      assert.equal(err.code, grpc.status.PERMISSION_DENIED);
      assert.match(err.message, /certificate is for node "node-a", not "node-b"/);
      return true;
    });
  });

  it("refuses a client without a certificate", async () => {
    const a = agentWithCert(undefined, "node-c");
    await assert.rejects(a.connect(10_000), (err: { code?: number }) => {
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      return true;
    });
    const store = Store.connect({ endpoints: [etcd.endpoint], prefix: "/weft-tls/" });
    try {
      assert.deepEqual((await store.listNodes()).map((n) => n.name), ["node-a"], "nothing was registered for refused clients");
    } finally {
      await store.close();
    }
  });
});
