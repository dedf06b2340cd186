// Weft on the kube-lab cluster, installed the way deploy/README.md tells an
// operator to: `kubectl apply -k` (an overlay that only sets the image and its
// pull policy), hack/gen-certs.sh, the Secrets, the example OverlayNetwork.
// Weft's etcd is "your own etcd" of the README, run in the control-plane
// namespace with the certificates gen-certs.sh makes for it.
import fs from "node:fs";
import path from "node:path";
import { LabProcess } from "../../pkg/lab/process.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { CONTROL_PLANE_IP, WEFT_ETCD_PORT, type KubeLab } from "./cluster.js";
import { sh } from "./node.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
export const NAMESPACE = "weft-system";
export const TEST_NAMESPACE = "weft-kube-lab";

/** The overlay: deploy/ plus the image tag and `imagePullPolicy: Never` (every image is imported, none pulled). */
export function writeOverlay(dir: string, tag: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const rel = path.relative(dir, path.join(ROOT, "deploy"));
  const never = (kind: string, name: string, init: boolean) => ({
    target: { kind, name },
    patch: JSON.stringify([
      { op: "add", path: "/spec/template/spec/containers/0/imagePullPolicy", value: "Never" },
      ...(init ? [{ op: "add", path: "/spec/template/spec/initContainers/0/imagePullPolicy", value: "Never" }] : []),
    ]),
  });
  const k = {
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    resources: [rel],
    images: [{ name: "localhost/weft", newTag: tag }],
    patches: [never("DaemonSet", "weft-agent", true), never("Deployment", "weft-controller", false)],
  };
  fs.writeFileSync(path.join(dir, "kustomization.yaml"), JSON.stringify(k, null, 2));
  return dir;
}

export class WeftOnLab {
  etcd?: LabProcess;
  readonly certs: string;
  readonly overlay: string;
  constructor(readonly lab: KubeLab) {
    this.certs = path.join(lab.opts.runDir, "weft-certs");
    this.overlay = path.join(lab.opts.runDir, "overlay");
  }

  async apply(tag: string): Promise<void> {
    writeOverlay(this.overlay, tag);
    await this.lab.kubectl(["apply", "-k", this.overlay]);
  }

  /** gen-certs.sh for the controller Service's ClusterIP (no node list: no node holds a key), Weft's etcd with its certificate, then the Secrets. */
  async certificatesAndEtcd(): Promise<void> {
    const svcIp = (await this.lab.kubectl(["-n", NAMESPACE, "get", "svc", "weft-controller", "-o", "jsonpath={.spec.clusterIP}"])).stdout.trim();
    await sh(path.join(ROOT, "hack/gen-certs.sh"), ["--out", this.certs, "--etcd-endpoints", `https://${CONTROL_PLANE_IP}:${WEFT_ETCD_PORT}`, "--etcd-ip", CONTROL_PLANE_IP, "--controller-ip", svcIp]);
    const c = (f: string) => path.join(this.certs, f);
    this.etcd = new LabProcess("weft-etcd", this.lab.cpNs, [
      "etcd", "--name=weft", `--data-dir=${path.join(this.lab.opts.runDir, "weft-etcd")}`,
      `--listen-client-urls=https://${CONTROL_PLANE_IP}:${WEFT_ETCD_PORT}`, `--advertise-client-urls=https://${CONTROL_PLANE_IP}:${WEFT_ETCD_PORT}`,
      "--listen-peer-urls=http://127.0.0.1:22380", "--initial-advertise-peer-urls=http://127.0.0.1:22380", "--initial-cluster=weft=http://127.0.0.1:22380",
      "--listen-metrics-urls=http://127.0.0.1:22381",
      `--cert-file=${c("etcd-server.crt")}`, `--key-file=${c("etcd-server.key")}`, "--client-cert-auth", `--trusted-ca-file=${c("etcd-ca.crt")}`,
      "--log-level=warn",
    ], this.lab.opts.runDir);
    this.etcd.start();
    await waitFor("Weft's etcd", async () => {
      if (!this.etcd!.running) throw new Error(`etcd exited:\n${this.etcd!.tail()}`);
      return (await sh("ip", ["netns", "exec", this.lab.cpNs, "curl", "-sf", "--max-time", "1", "http://127.0.0.1:22381/health"], { reject: false })).exitCode === 0;
    }, 30_000, 200);
    await this.lab.kubectl(["apply", "-f", c("secrets.yaml")]);
  }

  async network(): Promise<void> {
    await this.lab.kubectl(["apply", "-f", path.join(ROOT, "deploy/examples/overlaynetwork.yaml")]);
  }

  /** Every agent pod Ready, the controller Deployment available, every Node Ready. */
  async waitReady(timeoutMs = 240_000): Promise<void> {
    const want = this.lab.nodes.length;
    await waitFor("the weft-agent DaemonSet on every node", async () => {
      const ds = await this.lab.kubectlJson(["-n", NAMESPACE, "get", "ds", "weft-agent"]);
      const s = ds.status ?? {};
      return s.numberReady === want && s.updatedNumberScheduled === want && (s.observedGeneration ?? 0) >= ds.metadata.generation;
    }, timeoutMs, 1000);
    await waitFor("every Node Ready", async () => {
      const nodes = await this.lab.kubectlJson(["get", "nodes"]);
      return nodes.items.length === want && nodes.items.every((n: any) => n.status.conditions?.some((c: any) => c.type === "Ready" && c.status === "True"));
    }, timeoutMs, 1000);
  }
}

/** A Deployment of the busybox test image spread over the nodes (one pod per node at most per `perNode`). */
export async function deployTestPods(lab: KubeLab, replicas: number): Promise<void> {
  await lab.kubectl(["create", "namespace", TEST_NAMESPACE], { reject: false });
  const manifest = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "pinger", namespace: TEST_NAMESPACE },
    spec: {
      replicas,
      selector: { matchLabels: { app: "pinger" } },
      template: {
        metadata: { labels: { app: "pinger" } },
        spec: {
          terminationGracePeriodSeconds: 1,
          topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "DoNotSchedule", labelSelector: { matchLabels: { app: "pinger" } } }],
          containers: [{ name: "pinger", image: "localhost/weft-test:1", imagePullPolicy: "Never", command: ["sh", "-c", "httpd -p 8080 -h /www; exec sleep infinity"], ports: [{ containerPort: 8080 }] }],
        },
      },
    },
  };
  await lab.kubectl(["apply", "-f", "-"], { input: JSON.stringify(manifest) });
  await waitFor("the test pods", async () => {
    const d = await lab.kubectlJson(["-n", TEST_NAMESPACE, "get", "deploy", "pinger"]);
    return d.status?.readyReplicas === replicas;
  }, 180_000, 1000);
}

export interface TestPod {
  name: string;
  node: string;
  ip: string;
}

export async function testPods(lab: KubeLab): Promise<TestPod[]> {
  const pods = await lab.kubectlJson(["-n", TEST_NAMESPACE, "get", "pods", "-l", "app=pinger"]);
  return pods.items
    .filter((p: any) => p.status.phase === "Running" && p.status.podIP)
    .map((p: any) => ({ name: p.metadata.name, node: p.spec.nodeName, ip: p.status.podIP }))
    .sort((a: TestPod, b: TestPod) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name));
}

/** ping from every pod to every other (kubectl exec, through kubelet and containerd): true where replies came back. */
export async function pingMatrix(lab: KubeLab, pods: TestPod[]): Promise<boolean[][]> {
  return Promise.all(
    pods.map(async (from) => {
      const row: boolean[] = [];
      for (const to of pods) {
        if (to === from) {
          row.push(true);
          continue;
        }
        const res = await lab.kubectl(["-n", TEST_NAMESPACE, "exec", from.name, "--", "ping", "-c", "2", "-W", "2", to.ip], { reject: false, timeout: 30_000 });
        row.push(res.exitCode === 0);
      }
      return row;
    }),
  );
}
