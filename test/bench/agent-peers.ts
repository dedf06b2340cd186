// The load side of the agent benchmark, in its own process (run inside the
// agent's host namespace so the agent reaches it on loopback): etcd, a real
// controller, N peers preloaded through the store (registered nodes with
// leases, as if N agents had joined and gone quiet), and on request one more
// peer joining over gRPC like a real agent. Protocol: JSON lines on stdout;
// "join <i>" and "quit" on stdin.
import readline from "node:readline";
import { startController } from "../../pkg/controller/index.js";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store } from "../../pkg/store/index.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";
import { netSpec } from "../harness/specs.js";
import { preloadNode } from "../harness/preload.js";

const N = Number(process.env.PEERS ?? 5000);
const NETWORK = "bench";
const say = (o: object) => process.stdout.write(JSON.stringify(o) + "\n");

const etcd = await EtcdProcess.start();
const store = Store.connect({ endpoints: [etcd.endpoint] });
const spec = netSpec(NETWORK, "10.64.0.0/10", 4242);
await store.saveNetwork(spec, () => {});
const t0 = performance.now();
const taken = new Set<string>();
let next = 0;
await Promise.all(
  Array.from({ length: 64 }, async () => {
    while (next < N) {
      const i = next++;
      const req = simJoinRequest(`peer-${i}`, i + 1, [NETWORK]);
      await preloadNode(store, spec, { name: req.nodeName, underlayIP: req.underlayIp, vtepMac: req.vtepMacs[NETWORK] }, taken);
    }
  }),
);
const preloadS = (performance.now() - t0) / 1000;
const controller = await startController({ etcdEndpoints: [etcd.endpoint], listen: "127.0.0.1:0", log: silentLogger() });
say({ ready: true, port: controller.port, preloadS, peers: N });

const joined: SimAgent[] = [];
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, arg] = line.trim().split(" ");
  if (cmd === "join") {
    const i = N + 1000 + Number(arg);
    const a = new SimAgent(`127.0.0.1:${controller.port}`, simJoinRequest(`joiner-${arg}`, i, [NETWORK]));
    await a.connect();
    joined.push(a);
    say({ joined: Number(arg), subnet: a.subnet(NETWORK) });
  } else if (cmd === "quit") break;
}
for (const a of joined) a.close();
await controller.stop();
await store.close();
await etcd.stop();
say({ stopped: true });
process.exit(0);
