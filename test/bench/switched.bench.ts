// Switched dataplane benchmark: programming N remote endpoints (spread over
// 100 peers) from empty on the real kernel, and one endpoint added on top of
// 5000, against the floor: the same device, port and per-endpoint entries
// (master FDB, VXLAN FDB, bridge neighbour) written by one raw `ip -batch` +
// `bridge -batch` + `ip -batch`.
import os from "node:os";
import type { EndpointSpec, NodeDesired, PeerSpec } from "../../pkg/dataplane/index.js";
import { addOneSamples, applyFromEmpty, fromEmptyRows, rawBatches, withNamespace } from "./kernel.js";
import { percentile, publish } from "./table.js";

const VNI = 78;
const DEV = `weft.${VNI}`;
const BR = `weftbr${VNI}`;
const PEERS = 100;

const peer = (i: number): PeerSpec => ({ nodeName: `n${i}`, underlayIp: `10.100.${i >> 8}.${i & 255}`, vtepMac: "", subnet: `172.16.${i}.0/24` });

function endpoint(i: number): EndpointSpec {
  const node = 1 + (i % PEERS);
  const mac = `02:${[(i >> 16) & 255, (i >> 8) & 255, i & 255, 0, 2].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  return { key: `n${node}/c${i}/eth0`, nodeName: `n${node}`, ips: [`172.17.${(i >> 8) & 255}.${i & 255}`], mac };
}

function desired(n: number): NodeDesired {
  return {
    uplink: "eth0",
    underlayIp: "192.168.99.1",
    networks: [{
      name: "bench", vni: VNI, cidr: "172.16.0.0/12", mode: "switched", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: "172.31.255.0/24",
      peers: Array.from({ length: PEERS }, (_, i) => peer(i + 1)),
      endpoints: Array.from({ length: n }, (_, i) => endpoint(i + 1)),
    }],
  };
}



async function rawFloor(n: number): Promise<number> {
  return withNamespace(async (ns) => {
    const d = desired(n).networks[0];
    const ip1 = [
      `link add ${DEV} type vxlan id ${VNI} local 192.168.99.1 dev eth0 dstport 4789 nolearning`, `link add ${BR} address 02:57:46:00:00:4e type bridge`,
      `link set dev ${DEV} mtu 1450 up master ${BR}`, `link set dev ${BR} mtu 1450 up`, `link set dev ${DEV} type bridge_slave learning off neigh_suppress on`, `addr add 172.16.0.1/12 dev ${BR}`,
    ];
    const br: string[] = [];
    const ip2: string[] = [];
    const underlay = new Map(d.peers.map((p) => [p.nodeName, p.underlayIp]));
    for (const e of d.endpoints!) {
      br.push(`fdb replace ${e.mac} dev ${DEV} master static`, `fdb append ${e.mac} dev ${DEV} dst ${underlay.get(e.nodeName)} self permanent`);
      ip2.push(`neigh replace ${e.ips[0]} lladdr ${e.mac} dev ${BR} nud permanent`);
    }
    return rawBatches(ns, ip1, br, ip2);
  });
}

export async function run(): Promise<void> {
  const rows = await fromEmptyRows([100, 1000, 5000], (n) => `${n} endpoints (${PEERS} peers) from empty`, (n) => applyFromEmpty(desired(n), 3 * n), rawFloor);
  // One endpoint added on top of 5000: a pod started somewhere in a big switched network.
  const one = await addOneSamples(desired(5000), 10, (dp, s) => dp.setEndpoint("bench", endpoint(5000 + 1 + s)));
  rows.push(["1 endpoint added on top of 5000", one.length, percentile(one, 50), "-", "-"]);
  publish({
    id: "switched-programming",
    title: "Switched dataplane: programming remote endpoints on a real kernel (network namespace), median ms",
    columns: ["operation", "runs", "weft ms", "floor ms", "weft / floor"],
    rows,
    notes: [
      "weft from empty: Dataplane.apply = scoped read-back (Weft devices; per device neigh/route/FDB; bridge neighbours), diff, 3 batches through long-lived ip/bridge processes, rules, conflist",
      "per endpoint: bridge FDB master static + VXLAN FDB self permanent + permanent neighbour on the bridge (3 entries)",
      "1 endpoint added: setEndpoint + flush, the agent's path: only that endpoint's keys are planned",
      "floor: the same device, port settings and entries written by one raw `ip -batch` + `bridge -batch` + `ip -batch`",
      "measured on a 2-core machine shared with other helpers' builds and tests: noisy",
      `node ${process.version}, ${os.cpus().length} cores`,
    ],
  });
}
