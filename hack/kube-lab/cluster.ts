// A real Kubernetes cluster on this machine, the way kind builds one but with
// namespaces instead of containers: an underlay switch, a control-plane
// namespace (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
// the etcd Weft's controller uses), and N nodes, each with its own containerd,
// kubelet and kube-proxy (hack/kube-lab/node.ts). Every image is imported from
// archives built here (hack/kube-lab/images.sh); nothing is pulled. Used by
// `make kube-lab` (hack/kube-lab.ts) and test/kube-nodes.
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { LabProcess, killRecorded } from "../../pkg/lab/process.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { credential, LabPki, type Credential } from "./pki.js";
import { KubeNode, destroyCgroup, sh } from "./node.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
export const UNDERLAY = "192.168.79";
export const CONTROL_PLANE_IP = `${UNDERLAY}.1`;
export const API_PORT = 6443;
export const SERVICE_CIDR = "10.96.0.0/16";
export const KUBERNETES_SERVICE_IP = "10.96.0.1";
export const WEFT_ETCD_PORT = 22379;
export const KUBE_VERSION = process.env.KUBE_VERSION ?? "v1.34.4";
export const PAUSE_IMAGE = "registry.k8s.io/pause:3.10";

export interface KubeLabOptions {
  /** Names: `<prefix>-cp`, `<prefix>-sw`, `<prefix>-n<i>`; cgroups under /<prefix>. */
  prefix: string;
  runDir: string;
  nodes: number;
  progress?: (msg: string) => void;
}

export interface Images {
  pause: string;
  test: string;
  /** The Weft image's archive (tagged localhost/weft:<tags[0]>). */
  weft: string;
  /** Every tag the nodes get for it (extra tags are added in each node's containerd: same image, new tag, as a rollout needs). */
  weftTags: string[];
}

export async function toolBinary(name: string): Promise<string> {
  const res = await execa("bash", [path.join(ROOT, "hack/build-kube-apiserver.sh"), name], { reject: false, stdin: "ignore" });
  if (res.exitCode !== 0) throw new Error(`hack/build-kube-apiserver.sh ${name} failed (exit ${res.exitCode}):\n${res.stderr.slice(-3000)}`);
  return res.stdout.trim().split("\n").pop()!;
}

/** Builds (or finds cached) the lab's images; `tags` are the Weft image tags wanted. */
export async function buildImages(tags: string[]): Promise<Images> {
  const res = await execa(path.join(ROOT, "hack/kube-lab/images.sh"), ["--weft-tag", tags[0]], { reject: false, stdin: "ignore", cwd: ROOT });
  if (res.exitCode !== 0) throw new Error(`hack/kube-lab/images.sh failed (exit ${res.exitCode}):\n${res.stderr.slice(-3000)}`);
  const kv = new Map(res.stdout.trim().split("\n").map((l) => l.split("=", 2) as [string, string]));
  return { pause: kv.get("pause")!, test: kv.get("test")!, weft: kv.get("weft")!, weftTags: tags };
}

/** Removes everything a kube-lab of this prefix left: node cgroups and namespaces, control-plane processes, mounts, the run dir. */
export async function destroyLab(prefix: string, runDir: string): Promise<{ namespaces: number; processes: number }> {
  let processes = await killRecorded(runDir);
  const nodesDir = path.join(runDir, "nodes");
  for (const name of fs.existsSync(nodesDir) ? fs.readdirSync(nodesDir) : []) processes += await KubeNode.destroy(prefix, name, path.join(nodesDir, name));
  processes += await destroyCgroup(prefix);
  const { stdout } = await sh("ip", ["netns", "list"]);
  const names = stdout.split("\n").map((l) => l.split(" ")[0]).filter((n) => n === `${prefix}-cp` || n === `${prefix}-sw` || n.startsWith(`${prefix}-n`));
  for (const ns of names) {
    // Processes that still run in a namespace (a crashed run's): only ever those inside our own namespaces.
    const pids = (await sh("ip", ["netns", "pids", ns], { reject: false })).stdout.split("\n").filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), "SIGKILL");
        processes++;
      } catch {
        /* gone */
      }
    }
    await sh("ip", ["netns", "del", ns], { reject: false });
  }
  fs.rmSync(runDir, { recursive: true, force: true });
  return { namespaces: names.length, processes };
}

export class KubeLab {
  readonly cpNs: string;
  readonly switchNs: string;
  readonly pki: LabPki;
  readonly nodes: KubeNode[] = [];
  readonly server = `https://${CONTROL_PLANE_IP}:${API_PORT}`;
  kubeconfig = "";
  private readonly creds = new Map<string, Credential>();
  private readonly cp: LabProcess[] = [];
  weftEtcd?: LabProcess;

  private constructor(readonly opts: KubeLabOptions) {
    this.cpNs = `${opts.prefix}-cp`;
    this.switchNs = `${opts.prefix}-sw`;
    this.pki = new LabPki(path.join(opts.runDir, "pki"));
  }

  private say(msg: string): void {
    this.opts.progress?.(msg);
  }

  nodeName(i: number): string {
    return `${this.opts.prefix}-n${i}`;
  }

  /** Underlay switch and control-plane namespace; stale state of the same prefix removed first. */
  static async create(opts: KubeLabOptions): Promise<KubeLab> {
    const stale = await destroyLab(opts.prefix, opts.runDir);
    if (stale.namespaces || stale.processes) opts.progress?.(`removed an earlier run: ${stale.namespaces} namespaces, ${stale.processes} processes`);
    fs.mkdirSync(opts.runDir, { recursive: true });
    const lab = new KubeLab(opts);
    await sh("ip", ["netns", "add", lab.switchNs]);
    await sh("ip", ["-n", lab.switchNs, "link", "add", "br0", "type", "bridge"]);
    await sh("ip", ["-n", lab.switchNs, "link", "set", "br0", "up"]);
    await sh("ip", ["netns", "add", lab.cpNs]);
    await sh("ip", ["-n", lab.switchNs, "link", "add", "cp", "type", "veth", "peer", "name", "eth0", "netns", lab.cpNs]);
    await sh("ip", ["-n", lab.switchNs, "link", "set", "cp", "master", "br0", "up"]);
    await sh("ip", ["-n", lab.cpNs, "link", "set", "lo", "up"]);
    await sh("ip", ["-n", lab.cpNs, "addr", "add", `${CONTROL_PLANE_IP}/24`, "dev", "eth0"]);
    await sh("ip", ["-n", lab.cpNs, "link", "set", "eth0", "up"]);
    return lab;
  }

  private cred(user: string, groups: string[] = []): Credential {
    let c = this.creds.get(user);
    if (!c) this.creds.set(user, (c = credential(user, groups)));
    return c;
  }

  /** etcd, kube-apiserver, kube-controller-manager, kube-scheduler in the control-plane namespace. */
  async startControlPlane(maxNodes: number): Promise<void> {
    const [apiserver, kcm, scheduler] = await Promise.all(["kube-apiserver", "kube-controller-manager", "kube-scheduler"].map(toolBinary));
    this.pki.write([CONTROL_PLANE_IP, KUBERNETES_SERVICE_IP]);
    const admin = this.cred("weft-kube-lab-admin", ["system:masters"]);
    // The controller-manager and scheduler as masters: a lab shortcut, their RBAC is not what is under test.
    const kcmCred = this.cred("kube-controller-manager", ["system:masters"]);
    const schedCred = this.cred("kube-scheduler", ["system:masters"]);
    this.cred("system:kube-proxy");
    for (let i = 1; i <= maxNodes; i++) this.cred(`system:node:${this.nodeName(i)}`, ["system:nodes"]);
    this.pki.writeTokens([...this.creds.values()]);
    this.kubeconfig = this.pki.kubeconfig("admin", this.server, admin);
    const local = `https://127.0.0.1:${API_PORT}`;
    const kcmKc = this.pki.kubeconfig("kube-controller-manager", local, kcmCred);
    const schedKc = this.pki.kubeconfig("kube-scheduler", local, schedCred);

    const f = (n: string) => this.pki.file(n);
    const start = (name: string, argv: string[]) => {
      const p = new LabProcess(name, this.cpNs, argv, this.opts.runDir);
      p.start();
      this.cp.push(p);
      return p;
    };
    // Detached like every lab process: the cluster outlives `make kube-lab`.
    const etcd = start("kube-etcd", ["etcd", "--name=kube", `--data-dir=${path.join(this.opts.runDir, "kube-etcd")}`,
      "--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
      "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380", "--initial-cluster=kube=http://127.0.0.1:2380",
      "--log-level=warn"]);
    await waitFor("kube etcd", async () => {
      if (!etcd.running) throw new Error(`etcd exited:\n${etcd.tail()}`);
      return (await sh("ip", ["netns", "exec", this.cpNs, "etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"], { reject: false })).exitCode === 0;
    }, 30_000, 200);
    const api = start("kube-apiserver", [
      apiserver,
      "--etcd-servers=http://127.0.0.1:2379",
      `--cert-dir=${f("cert")}`,
      `--tls-cert-file=${f("apiserver.crt")}`,
      `--tls-private-key-file=${f("apiserver.key")}`,
      `--client-ca-file=${f("ca.crt")}`,
      `--kubelet-client-certificate=${f("apiserver-kubelet-client.crt")}`,
      `--kubelet-client-key=${f("apiserver-kubelet-client.key")}`,
      // Node names do not resolve; the underlay address does.
      "--kubelet-preferred-address-types=InternalIP",
      `--secure-port=${API_PORT}`,
      "--bind-address=0.0.0.0",
      `--advertise-address=${CONTROL_PLANE_IP}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${f("sa.pub")}`,
      `--service-account-signing-key-file=${f("sa.key")}`,
      `--token-auth-file=${f("tokens.csv")}`,
      "--authorization-mode=Node,RBAC",
      "--enable-admission-plugins=NodeRestriction",
      "--allow-privileged=true",
      "--enable-priority-and-fairness=false",
      "--profiling=false",
      "--v=1",
    ]);
    await waitFor("kube-apiserver /readyz", async () => {
      if (!api.running) throw new Error(`kube-apiserver exited:\n${api.tail()}`);
      return (await this.kubectl(["get", "--raw", "/readyz"], { reject: false })).exitCode === 0;
    }, 120_000, 500);
    start("kube-controller-manager", [
      kcm,
      `--kubeconfig=${kcmKc}`,
      `--authentication-kubeconfig=${kcmKc}`,
      `--authorization-kubeconfig=${kcmKc}`,
      "--bind-address=127.0.0.1",
      `--service-account-private-key-file=${f("sa.key")}`,
      `--root-ca-file=${f("ca.crt")}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      "--cluster-name=weft-kube-lab",
      // Weft hands out pod subnets; Kubernetes' node IPAM stays off.
      "--allocate-node-cidrs=false",
      "--configure-cloud-routes=false",
      "--leader-elect=false",
      "--profiling=false",
      "--v=1",
    ]);
    start("kube-scheduler", [scheduler, `--kubeconfig=${schedKc}`, `--authentication-kubeconfig=${schedKc}`, `--authorization-kubeconfig=${schedKc}`, "--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1"]);
    // The default ServiceAccount appears once the controller-manager runs: pods can be admitted from then on.
    await waitFor("the default ServiceAccount", async () => (await this.kubectl(["-n", "default", "get", "sa", "default"], { reject: false })).exitCode === 0, 120_000, 500);
  }

  /** kubectl as the admin, run inside the control-plane namespace (the API server is reachable only on the underlay). */
  kubectl(args: string[], opts: { reject?: boolean; input?: string; timeout?: number } = {}) {
    return sh("ip", ["netns", "exec", this.cpNs, "kubectl", `--kubeconfig=${this.kubeconfig}`, ...args], opts);
  }

  async kubectlJson<T = any>(args: string[]): Promise<T> {
    return JSON.parse((await this.kubectl([...args, "-o", "json"])).stdout) as T;
  }

  /** A node namespace with containerd (images imported), kubelet and kube-proxy. */
  async addNode(i: number, images: Images): Promise<KubeNode> {
    const name = this.nodeName(i);
    const dir = path.join(this.opts.runDir, "nodes", name);
    const node = new KubeNode({ prefix: this.opts.prefix, name, ip: `${UNDERLAY}.${10 + i}`, gateway: CONTROL_PLANE_IP, switchNs: this.switchNs, port: `n${i}`, dir });
    this.nodes.push(node);
    await node.create();
    const [kubelet, kubeProxy] = await Promise.all(["kubelet", "kube-proxy"].map(toolBinary));
    const conf = path.join(dir, "conf");
    fs.mkdirSync(conf, { recursive: true });
    fs.writeFileSync(path.join(conf, "containerd.toml"), containerdConfig());
    const containerd = node.daemon("containerd", ["containerd", `--config=${path.join(conf, "containerd.toml")}`]);
    await waitFor(`${name} containerd`, async () => {
      if (containerd.pid === undefined) throw new Error("not started");
      return (await node.exec(["ctr", "version"], { reject: false })).exitCode === 0;
    }, 30_000, 200).catch((err) => {
      throw new Error(`${(err as Error).message}\n${containerd.tail()}`);
    });
    await this.importImages(node, [images.pause, images.test, images.weft]);
    for (const t of images.weftTags.slice(1)) await node.exec(["ctr", "-n", "k8s.io", "images", "tag", "--force", `localhost/weft:${images.weftTags[0]}`, `localhost/weft:${t}`]);
    await node.exec(["ctr", "-n", "k8s.io", "images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned"]);

    const kubeletKc = this.pki.kubeconfig(`kubelet-${name}`, this.server, this.creds.get(`system:node:${name}`)!);
    fs.writeFileSync(path.join(conf, "kubelet.yaml"), kubeletConfig(node, this.pki.file("ca.crt")));
    node.daemon("kubelet", [
      kubelet,
      `--config=${path.join(conf, "kubelet.yaml")}`,
      `--kubeconfig=${kubeletKc}`,
      `--hostname-override=${name}`,
      `--node-ip=${node.ip}`,
      // -999 by default, which needs CAP_SYS_RESOURCE (not granted here).
      "--oom-score-adj=0",
      "--v=1",
    ]);
    const proxyKc = this.pki.kubeconfig(`kube-proxy-${name}`, this.server, this.creds.get("system:kube-proxy")!);
    fs.writeFileSync(path.join(conf, "kube-proxy.yaml"), kubeProxyConfig(node, proxyKc));
    node.daemon("kube-proxy", [kubeProxy, `--config=${path.join(conf, "kube-proxy.yaml")}`, "--v=1"]);
    return node;
  }

  async importImages(node: KubeNode, archives: string[]): Promise<void> {
    for (const a of archives) {
      const res = await node.exec(["ctr", "-n", "k8s.io", "images", "import", "--no-unpack=false", a], { reject: false, timeout: 300_000 });
      if (res.exitCode !== 0) throw new Error(`${node.name}: ctr images import ${a}: ${res.stderr}`);
    }
  }

  /** Waits until the Node object exists (registered); Ready needs the pod network, which Weft provides. */
  async waitRegistered(node: KubeNode, timeoutMs = 120_000): Promise<void> {
    await waitFor(`${node.name} to register`, async () => {
      const k = node.daemons.get("kubelet");
      if (k?.pid === undefined) throw new Error("kubelet not started");
      return (await this.kubectl(["get", "node", node.name], { reject: false })).exitCode === 0;
    }, timeoutMs, 500).catch((err) => {
      throw new Error(`${(err as Error).message}\n--- kubelet log ---\n${node.daemons.get("kubelet")?.tail(30)}`);
    });
  }

  async teardown(): Promise<void> {
    await destroyLab(this.opts.prefix, this.opts.runDir);
  }
}

export function containerdConfig(): string {
  // Defaults are the standard paths: the node's mount namespace makes them its own.
  return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${PAUSE_IMAGE}"
    # Pod network namespaces under /run/containerd (node-private), not /run/netns.
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    # This machine's bounding set lacks CAP_SYS_RESOURCE: nothing may lower its
    # oom_score_adj (runc failed with "failed to update /proc/self/oom_score_adj:
    # Permission denied" for the pause container's -998). Clamp instead.
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # cgroup v1 with the cgroupfs driver: no systemd on this machine.
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
`;
}

function kubeletConfig(node: KubeNode, caFile: string): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${node.ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${caFile}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# This machine: cgroup v1, cgroupfs (no systemd), no swap. Set explicitly: kubelet
# 1.34 refuses cgroup v1 unless told, and swap must not fail the start.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
memorySwap:
  swapBehavior: NoSwap
# Pods of this node in their own cgroup subtree, beside the other nodes'.
cgroupRoot: /${node.cgroup}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
# Never write the machine-wide kernel tunables (node-setup.sh shows kubelet the values it wants).
protectKernelDefaults: true
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Disk is shared with the machine: evict only when it is nearly full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`;
}

function kubeProxyConfig(node: KubeNode, kubeconfig: string): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${kubeconfig}
mode: iptables
hostnameOverride: ${node.name}
bindAddress: ${node.ip}
healthzBindAddress: ${node.ip}:10256
metricsBindAddress: 127.0.0.1:10249
# Its default -999 needs CAP_SYS_RESOURCE, which this machine does not grant.
oomScoreAdj: 0
clusterCIDR: 10.244.0.0/16
# conntrack limits are machine-wide (or per-netns defaults): leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`;
}
