// etcd with client-certificate auth, as deploy/etcd runs it, with the
// certificates hack/gen-certs.sh writes: weftctl and the controller process
// get in with the etcd client certificate and nothing else does (not without
// a certificate, and not with an agent's certificate from Weft's own CA).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { EtcdProcess } from "../../pkg/lab/etcd.js";
import { freePort, waitFor } from "../../pkg/lab/ports.js";
import { commandArgv, REPO } from "../harness/cli.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

describe("etcd over mTLS (certificates from hack/gen-certs.sh)", function () {
  this.timeout(120_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-etcd-tls-"));
  const certs = path.join(dir, "certs");
  const f = (name: string) => path.join(certs, name);
  let etcd: EtcdProcess;
  let agent: SimAgent | undefined;

  const tlsFlags = (cert = f("etcd-client.crt"), key = f("etcd-client.key")) => ["--etcd-ca", f("etcd-ca.crt"), "--etcd-cert", cert, "--etcd-key", key];

  async function weftctl(...args: string[]) {
    const res = await execa("node", [...commandArgv("weftctl"), "--etcd-endpoints", etcd.endpoint, "--timeout", "3s", ...args], { reject: false, cwd: REPO });
    return { code: res.exitCode, out: String(res.stdout), err: String(res.stderr) };
  }

  before(async () => {
    await execa("bash", [path.join(REPO, "hack/gen-certs.sh"), "--out", certs, "--nodes", "n1", "--etcd-endpoints", "https://127.0.0.1:2379", "--etcd-ip", "127.0.0.1"]);
    etcd = await EtcdProcess.start({ tls: { certFile: f("etcd-server.crt"), keyFile: f("etcd-server.key"), caFile: f("etcd-ca.crt") } });
  });

  after(async () => {
    agent?.close();
    await etcd?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("gen-certs puts the etcd client certificate into the weft-etcd Secret, under an etcd CA separate from Weft's", async () => {
    const secrets = fs.readFileSync(f("secrets.yaml"), "utf8");
    assert.match(secrets, /name: weft-etcd\n[\s\S]*?endpoints: "https:\/\/127\.0\.0\.1:2379"[\s\S]*?ca\.crt: \S+\n\s+tls\.crt: \S+\n\s+tls\.key: \S+/);
    assert.match(secrets, /name: weft-etcd-server/);
    const wrongCa = await execa("openssl", ["verify", "-CAfile", f("ca.crt"), f("etcd-client.crt")], { reject: false });
    assert.notEqual(wrongCa.exitCode, 0, "the etcd client certificate must not chain to Weft's CA");
    const rightCa = await execa("openssl", ["verify", "-CAfile", f("etcd-ca.crt"), f("etcd-client.crt")], { reject: false });
    assert.equal(rightCa.exitCode, 0, rightCa.stderr);
  });

  it("weftctl with --etcd-ca/--etcd-cert/--etcd-key creates and lists a network", async () => {
    const created = await weftctl(...tlsFlags(), "network", "create", "tls", "--cidr", "10.60.0.0/16", "--vni", "60", "--node-prefix-length", "24", "--default");
    assert.equal(created.code, 0, created.err);
    const list = await weftctl(...tlsFlags(), "network", "list");
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, /^tls\s+10\.60\.0\.0\/16\s+60\b/m);
  });

  it("etcd refuses a client without a certificate, and one with an agent's certificate from Weft's CA", async () => {
    const none = await weftctl("--etcd-ca", f("etcd-ca.crt"), "network", "list");
    assert.notEqual(none.code, 0, "etcd answered a client without a certificate");
    assert.match(none.err, /cannot reach etcd/);
    const agentCert = await weftctl(...tlsFlags(f("n1.crt"), f("n1.key")), "network", "list");
    assert.notEqual(agentCert.code, 0, "etcd answered a client holding an agent's certificate");
    assert.match(agentCert.err, /cannot reach etcd/);
  });

  it("rejects half or mismatched TLS flags with a message naming the flag", async () => {
    const half = await weftctl("--etcd-cert", f("etcd-client.crt"), "network", "list");
    assert.equal(half.code, 1);
    assert.match(half.err, /--etcd-cert and --etcd-key go together/);
    const plain = await execa("node", [...commandArgv("weftctl"), "--etcd-endpoints", "http://127.0.0.1:2379", ...tlsFlags(), "network", "list"], { reject: false, cwd: REPO });
    assert.equal(plain.exitCode, 1);
    assert.match(String(plain.stderr), /--etcd-endpoints: .*https:\/\//);
    const missing = await weftctl("--etcd-ca", path.join(dir, "nope.crt"), "network", "list");
    assert.match(missing.err, /--etcd-ca: cannot read .*nope\.crt: ENOENT/);
  });

  it("the controller process connects with the same flags and hands an agent a subnet", async () => {
    const [grpcPort, metricsPort] = [await freePort(), await freePort()];
    const child = execa("node", [...commandArgv("weft-controller"), "--etcd-endpoints", etcd.endpoint, ...tlsFlags(), "--listen", `127.0.0.1:${grpcPort}`, "--metrics-addr", `127.0.0.1:${metricsPort}`], { reject: false, cwd: REPO, all: true });
    try {
      await waitFor("controller /readyz", async () => {
        if (child.exitCode !== null) throw new Error(`controller exited: ${String((await child).all)}`);
        return (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.ok ?? false;
      }, 30_000, 100);
      agent = new SimAgent(`127.0.0.1:${grpcPort}`, simJoinRequest("n1", 1, ["tls"]));
      await agent.connect();
      assert.match(agent.subnet("tls") ?? "", /^10\.60\.\d+\.0\/24$/);
    } finally {
      agent?.close();
      agent = undefined;
      child.kill("SIGTERM");
      await child;
    }
  });
});
