// `make kube-lab` / `make kube-lab-down`: a real Kubernetes cluster in
// namespaces on this machine (hack/kube-lab/cluster.ts), Weft installed on it
// as an operator would, checked with a pod-to-pod ping matrix, left running.
import path from "node:path";
import { Command, envOption, parsePositiveInt, runMain } from "../pkg/cli/index.js";
import { KubeLab, buildImages, destroyLab, toolBinary } from "./kube-lab/cluster.js";
import { WeftOnLab, deployTestPods, pingMatrix, testPods } from "./kube-lab/weft.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const RUN_DIR = path.join(ROOT, ".kube-lab");
const PREFIX = "weft-kl";

const tty = process.stdout.isTTY;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const green = (s: string) => (tty ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s: string) => (tty ? `\x1b[31m${s}\x1b[0m` : s);
const t0 = Date.now();
let stepStart = Date.now();
const step = (msg: string) => {
  stepStart = Date.now();
  process.stdout.write(`${bold("==>")} ${msg}\n`);
};
const done = (detail = "") => process.stdout.write(`    ok (${((Date.now() - stepStart) / 1000).toFixed(1)}s)${detail ? ` ${detail}` : ""}\n`);

function table(headers: string[], rows: string[][]): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => c.padEnd(w[i])).join("   ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

async function down(): Promise<void> {
  const r = await destroyLab(PREFIX, RUN_DIR);
  process.stdout.write(`kube-lab removed: ${r.namespaces} namespaces, ${r.processes} processes, ${RUN_DIR}\n`);
}

async function up(o: { nodes: number }): Promise<void> {
  if (o.nodes < 1 || o.nodes > 10) throw new Error("--nodes: 1 to 10");
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    process.stdout.write("\ninterrupted: removing everything the kube-lab created\n");
    await down().catch((err) => process.stdout.write(`cleanup: ${String(err)}\n`));
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    step("Kubernetes binaries (built once from the Go module proxy, cached)");
    for (const b of ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"]) await toolBinary(b);
    done();
    step("images, built here without pulling: pause, test, Weft (deploy/Dockerfile on a Debian-assembled base)");
    const images = await buildImages(["0.1.0"]);
    done();
    step(`underlay switch and control-plane namespace (${PREFIX}-sw, ${PREFIX}-cp)`);
    const lab = await KubeLab.create({ prefix: PREFIX, runDir: RUN_DIR, nodes: o.nodes, progress: (m) => process.stdout.write(`    ${m}\n`) });
    done();
    step("etcd, kube-apiserver, kube-controller-manager, kube-scheduler");
    await lab.startControlPlane(o.nodes);
    done(lab.server);
    step(`${o.nodes} nodes: containerd (images imported), kubelet, kube-proxy`);
    await Promise.all(Array.from({ length: o.nodes }, (_, i) => lab.addNode(i + 1, images)));
    for (const n of lab.nodes) await lab.waitRegistered(n);
    done(lab.nodes.map((n) => `${n.name}=${n.ip}`).join(" "));
    const weft = new WeftOnLab(lab);
    step("kubectl apply -k deploy/ (overlay: image tag, imagePullPolicy Never)");
    await weft.apply("0.1.0");
    done();
    step("hack/gen-certs.sh, Weft's etcd, kubectl apply -f weft-certs/secrets.yaml");
    await weft.certificatesAndEtcd();
    done();
    step("kubectl apply -f deploy/examples/overlaynetwork.yaml; waiting for the DaemonSet and Nodes Ready");
    await weft.network();
    await weft.waitReady();
    done();
    process.stdout.write((await lab.kubectl(["get", "nodes", "-o", "wide"])).stdout + "\n");
    process.stdout.write((await lab.kubectl(["-n", "weft-system", "get", "pods", "-o", "wide"])).stdout + "\n");
    step(`test Deployment, ${2 * o.nodes} pods spread over the nodes`);
    await deployTestPods(lab, 2 * o.nodes);
    const pods = await testPods(lab);
    done();
    process.stdout.write(table(["POD", "NODE", "IP"], pods.map((p) => [p.name, p.node, p.ip])));
    step("ping matrix (kubectl exec ... ping)");
    const m = await pingMatrix(lab, pods);
    done();
    const short = (p: { name: string }) => p.name.replace(/^pinger-[a-z0-9]+-/, "");
    process.stdout.write(table(["from \\ to", ...pods.map(short)], pods.map((p, i) => [short(p), ...m[i].map((ok) => (ok ? green("ok") : red("FAIL")))])));
    const failed = m.flat().filter((ok) => !ok).length;
    process.stdout.write(`\n${failed === 0 ? green("every pod reaches every pod") : red(`${failed} pairs failed`)} (${((Date.now() - t0) / 1000).toFixed(0)}s in all)\n`);
    process.stdout.write(`kubectl: ip netns exec ${lab.cpNs} kubectl --kubeconfig ${lab.kubeconfig} get pods -A\nremove: make kube-lab-down\n`);
    if (failed) process.exitCode = 1;
  } catch (err) {
    if (interrupted) return; // the signal handler is removing everything
    process.stdout.write(`${red("failed")}: ${(err as Error).message}\nthe cluster is left for inspection (logs in ${RUN_DIR}); make kube-lab-down removes it\n`);
    process.exitCode = 1;
  }
}

const program = new Command("kube-lab").description("a real Kubernetes cluster in namespaces on this machine, with Weft as its pod network");
program
  .command("up")
  .description("create (or replace) the cluster, install Weft, print nodes, pods and a ping matrix")
  .addOption(envOption("--nodes <n>", "number of nodes", 3).argParser(parsePositiveInt))
  .action((o) => runMain(() => up(o)));
program.command("down").description("remove everything `up` created").action(() => runMain(down));
await program.parseAsync();
