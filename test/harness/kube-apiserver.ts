// A real kube-apiserver for tests, started the way controller-runtime's
// envtest starts one: its own etcd, a throw-away serving certificate and
// service-account keys, RBAC on, an admin token in system:masters, bound to
// 127.0.0.1 on a free port, ready once /readyz answers. No controller-manager
// or scheduler runs: tests create Node objects themselves.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { freePort, waitFor } from "../../pkg/lab/ports.js";
import { stopChild } from "../../pkg/lab/process.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

/** The kube-apiserver binary: $KUBE_APISERVER, else the one hack/build-kube-apiserver.sh builds or finds in its cache. */
export async function kubeApiServerBinary(): Promise<string> {
  const res = await execa("bash", [path.join(ROOT, "hack/build-kube-apiserver.sh")], { reject: false, stdin: "ignore" });
  if (res.exitCode !== 0) throw new Error(`hack/build-kube-apiserver.sh failed (exit ${res.exitCode}):\n${res.stderr.slice(-4000)}`);
  return res.stdout.trim().split("\n").pop()!;
}

export interface KubeUser {
  /** A kubeconfig file that authenticates with this user's bearer token. */
  kubeconfig: string;
  token: string;
}

export class KubeApiServer {
  readonly server: string;
  /** kubeconfig of the admin (system:masters), for kubectl --kubeconfig and KubeConfig.loadFromFile. */
  readonly kubeconfig: string;
  readonly adminToken = crypto.randomBytes(24).toString("hex");
  private child?: ChildProcess;
  private exited: Promise<void> = Promise.resolve();
  private readonly caFile: string;
  private readonly logFile: string;

  private constructor(
    private readonly binary: string,
    readonly dir: string,
    readonly etcd: EtcdProcess,
    readonly port: number,
  ) {
    this.server = `https://127.0.0.1:${port}`;
    this.caFile = path.join(dir, "ca.crt");
    this.logFile = path.join(dir, "kube-apiserver.log");
    this.kubeconfig = path.join(dir, "admin.kubeconfig");
  }

  static async start(binary?: string): Promise<KubeApiServer> {
    const bin = binary ?? (await kubeApiServerBinary());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-kube-"));
    let etcd: EtcdProcess | undefined;
    try {
      etcd = await EtcdProcess.start();
      const api = new KubeApiServer(bin, dir, etcd, await freePort());
      api.writePki();
      fs.writeFileSync(path.join(dir, "tokens.csv"), `${api.adminToken},weft-test-admin,weft-test-admin,"system:masters"\n`, { mode: 0o600 });
      fs.writeFileSync(api.kubeconfig, api.kubeconfigFor("weft-test-admin", api.adminToken), { mode: 0o600 });
      await api.startProcess();
      return api;
    } catch (err) {
      await etcd?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A CA and a serving certificate for 127.0.0.1 (openssl), and the service-account signing key pair (node:crypto). */
  private writePki(): void {
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: this.dir, stdio: "pipe" });
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=weft-test-kube-ca");
    fs.writeFileSync(path.join(this.dir, "serving.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "serving.key", "-out", "serving.csr", "-subj", "/CN=kube-apiserver");
    ssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "serving.crt", "-days", "2", "-extfile", "serving.ext");
    const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    fs.writeFileSync(path.join(this.dir, "sa.key"), privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    fs.writeFileSync(path.join(this.dir, "sa.pub"), publicKey.export({ type: "spki", format: "pem" }));
  }

  kubeconfigFor(user: string, token: string): string {
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: weft-test",
      "  cluster:",
      `    server: ${this.server}`,
      `    certificate-authority: ${this.caFile}`,
      "users:",
      `- name: ${user}`,
      "  user:",
      `    token: ${token}`,
      "contexts:",
      "- name: weft-test",
      "  context:",
      "    cluster: weft-test",
      `    user: ${user}`,
      "current-context: weft-test",
      "",
    ].join("\n");
  }

  private async startProcess(): Promise<void> {
    const f = (name: string) => path.join(this.dir, name);
    const args = [
      `--etcd-servers=${this.etcd.endpoint}`,
      `--cert-dir=${f("cert")}`,
      `--tls-cert-file=${f("serving.crt")}`,
      `--tls-private-key-file=${f("serving.key")}`,
      `--secure-port=${this.port}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      "--service-cluster-ip-range=10.0.0.0/24",
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${f("sa.pub")}`,
      `--service-account-signing-key-file=${f("sa.key")}`,
      `--token-auth-file=${f("tokens.csv")}`,
      "--authorization-mode=RBAC",
      // No controller-manager creates ServiceAccount tokens or namespaces' default accounts.
      "--disable-admission-plugins=ServiceAccount",
      "--allow-privileged=true",
      // Two cores shared with other suites: nothing that only matters under load.
      "--enable-priority-and-fairness=false",
      "--profiling=false",
      "--v=1",
    ];
    const out = fs.openSync(this.logFile, "a");
    const child = spawn(this.binary, args, { stdio: ["ignore", out, out] });
    fs.closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    let failed: Error | undefined;
    child.once("error", (err) => (failed = err));
    child.once("exit", (code, signal) => (failed ??= new Error(`kube-apiserver exited (code ${code}, signal ${signal})`)));
    try {
      await waitFor(`kube-apiserver /readyz at ${this.server}`, async () => {
        if (failed) throw failed;
        return (await this.get("/readyz")).status === 200;
      }, 120_000, 250);
    } catch (err) {
      await this.kill();
      throw new Error(`${(err as Error).message}\n--- kube-apiserver log (tail) ---\n${this.logTail()}`);
    }
  }

  logTail(chars = 4000): string {
    try {
      return fs.readFileSync(this.logFile, "utf8").slice(-chars);
    } catch {
      return "";
    }
  }

  /** An authenticated GET with the admin token; resolves with status and body. */
  get(urlPath: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = https.get(`${this.server}${urlPath}`, { ca: fs.readFileSync(this.caFile), headers: { authorization: `Bearer ${this.adminToken}` }, timeout: 5000 }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", reject);
    });
  }

  /** Runs kubectl as the admin (or with `kubeconfig`); rejects with kubectl's stderr on failure. */
  async kubectl(args: string[], opts: { input?: string; kubeconfig?: string; reject?: boolean } = {}): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const res = await execa("kubectl", [`--kubeconfig=${opts.kubeconfig ?? this.kubeconfig}`, ...args], {
      input: opts.input,
      stdin: opts.input === undefined ? "ignore" : undefined,
      reject: false,
      cwd: ROOT,
      env: { KUBECTL_KUBERC: "false" },
    });
    const out = { exitCode: res.exitCode ?? -1, stdout: String(res.stdout), stderr: String(res.stderr) };
    if (opts.reject !== false && out.exitCode !== 0) throw new Error(`kubectl ${args.join(" ")} failed (exit ${out.exitCode}): ${out.stderr.trim()}`);
    return out;
  }

  /**
   * A token for a ServiceAccount from the TokenRequest API (what a pod would
   * get mounted), with a kubeconfig that uses it. Creates the account if missing.
   */
  async serviceAccountUser(namespace: string, name: string): Promise<KubeUser> {
    await this.kubectl(["create", "namespace", namespace], { reject: false });
    await this.kubectl(["-n", namespace, "create", "serviceaccount", name], { reject: false });
    const token = (await this.kubectl(["-n", namespace, "create", "token", name, "--duration=1h"])).stdout.trim();
    if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
    const kubeconfig = path.join(this.dir, `sa-${namespace}-${name}-${crypto.randomBytes(4).toString("hex")}.kubeconfig`);
    fs.writeFileSync(kubeconfig, this.kubeconfigFor(`system:serviceaccount:${namespace}:${name}`, token), { mode: 0o600 });
    return { kubeconfig, token };
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Stops the apiserver (SIGTERM, SIGKILL after 10 s); etcd keeps running. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await stopChild(this.child, this.exited, signal, 10_000);
  }

  /** Starts the apiserver again on the same port, keys and etcd: clients see a restart, not a new cluster. */
  async restart(): Promise<void> {
    await this.kill();
    await this.startProcess();
  }

  /** Stops the apiserver and its etcd and removes every file. */
  async stop(): Promise<void> {
    try {
      await this.kill();
    } finally {
      await this.etcd.stop();
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
