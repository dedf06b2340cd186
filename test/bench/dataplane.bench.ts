// Dataplane benchmark: programming N peers from empty on the real kernel (in a
// fresh namespace), and one added peer on top of 5000, against the floor: the
// same entries written by one raw `ip -batch` + `bridge -batch` call.
import os from "node:os";
import type { NodeDesired, PeerSpec } from "../../pkg/dataplane/index.js";
import { addOneSamples, applyFromEmpty, fromEmptyRows, rawBatches, withNamespace } from "./kernel.js";
import { percentile, publish } from "./table.js";

const VNI = 77;
const DEV = `weft.${VNI}`;

function peer(i: number): PeerSpec {
  const mac = `02:${[(i >> 16) & 255, (i >> 8) & 255, i & 255, 0, 1].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  return { nodeName: `n${i}`, underlayIp: `10.${100 + ((i >> 16) & 255)}.${(i >> 8) & 255}.${i & 255}`, vtepMac: mac, subnet: `172.${16 + (i >> 14)}.${(i >> 6) & 255}.${(i & 63) << 2}/30` };
}

function desired(n: number): NodeDesired {
  return {
    uplink: "eth0",
    underlayIp: "192.168.99.1",
    networks: [{ name: "bench", vni: VNI, cidr: "172.16.0.0/12", mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, flood: false, isDefault: true, subnet: "172.31.255.0/30", peers: Array.from({ length: n }, (_, i) => peer(i + 1)) }],
  };
}



/** The floor: the same device and per-peer entries in one raw ip batch and one bridge batch. */
async function rawFloor(n: number): Promise<number> {
  return withNamespace(async (ns) => {
    const d = desired(n).networks[0];
    const ip1 = [`link add ${DEV} type vxlan id ${VNI} local 192.168.99.1 dev eth0 dstport 4789 nolearning`, `link set dev ${DEV} mtu 1450 up`, `addr add 172.31.255.0/32 dev ${DEV}`];
    const ip2: string[] = [];
    const br: string[] = [];
    for (const p of d.peers) {
      const gw = p.subnet.split("/")[0];
      ip1.push(`neigh replace ${gw} lladdr ${p.vtepMac} dev ${DEV} nud permanent`);
      br.push(`fdb append ${p.vtepMac} dev ${DEV} dst ${p.underlayIp} self permanent`);
      ip2.push(`route replace ${p.subnet} via ${gw} dev ${DEV} onlink`);
    }
    return rawBatches(ns, ip1, br, ip2);
  });
}

export async function run(): Promise<void> {
  const rows = await fromEmptyRows([100, 1000, 5000], (n) => `${n} peers from empty`, (n) => applyFromEmpty(desired(n), 3 * n), rawFloor);
  // One peer added on top of 5000: what an agent does when a node joins a big cluster.
  const base = desired(5000);
  const one = await addOneSamples(base, 10, (dp, s) => dp.setPeer(base.networks[0].name, peer(5000 + 1 + s)));
  rows.push(["1 peer added on top of 5000", one.length, percentile(one, 50), "-", "-"]);
  publish({
    id: "dataplane-programming",
    title: "Dataplane: programming peers on a real kernel (network namespace), median ms",
    columns: ["operation", "runs", "weft ms", "floor ms", "weft / floor"],
    rows,
    notes: [
      "weft from empty: Dataplane.apply = scoped read-back (Weft devices, then per-device neigh/route/FDB), diff, 3 batches through long-lived ip/bridge processes; own iptables chains read with -S and restored, sysctl alongside; conflist; the first apply also detects the iptables backend",
      "1 peer added: setPeer + flush, the agent's path: only the new peer's keys are planned against the kernel model, written through long-lived ip/bridge batch processes",
      "floor: the same device + neigh/FDB/route entries written by one raw `ip -batch` + `bridge -batch` + `ip -batch`",
      "target: 1000 peers under 300 ms and within 2x the floor",
      `node ${process.version}, ${os.cpus().length} cores`,
    ],
  });
}
