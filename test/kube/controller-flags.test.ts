// weft-controller's Kubernetes-mode flags fail fast with a message naming the
// flag, instead of retrying a cluster that is not there.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { commandArgv, REPO } from "../harness/cli.js";

async function controller(args: string[], env: Record<string, string> = {}) {
  const res = await execa("node", [...commandArgv("weft-controller"), ...args], { reject: false, cwd: REPO, env, timeout: 30_000 });
  return { code: res.exitCode, err: String(res.stderr) };
}

describe("weft-controller Kubernetes-mode flags", function () {
  this.timeout(60_000);
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "weft-nohome-"));
  after(() => fs.rmSync(home, { recursive: true, force: true }));

  it("--kubeconfig pointing nowhere: exit 1 naming the flag and the file", async () => {
    const r = await controller(["--kubeconfig", path.join(home, "missing.kubeconfig")]);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error: --kubeconfig: cannot load .*missing\.kubeconfig: ENOENT$/m);
  });

  it("--kube outside a pod with no kubeconfig: exit 1 saying what to pass", async () => {
    const r = await controller(["--kube"], { KUBERNETES_SERVICE_HOST: "", KUBECONFIG: "", HOME: home });
    assert.equal(r.code, 1);
    assert.match(r.err, /--kube: not in a pod .* pass --kubeconfig/);
  });

  it("WEFT_KUBE=nonsense is refused as a boolean", async () => {
    const r = await controller([], { WEFT_KUBE: "maybe" });
    assert.notEqual(r.code, 0);
    assert.match(r.err, /not a boolean: "maybe"/);
  });
});
