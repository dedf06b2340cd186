// The files for real machines: systemd units verified by systemd itself, the
// Vagrantfile and provisioning script parsed by ruby and bash, and the
// environment files checked against the commands' real flags so they cannot drift.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";

const ROOT = path.resolve(import.meta.dirname, "../..");
const SYSTEMD = path.join(ROOT, "deploy/systemd");
const VAGRANT = path.join(ROOT, "deploy/vagrant");

/** Copies units into a temp dir with ExecStart/EnvironmentFile pointing at files that exist, then verifies them. */
async function verifyUnits(units: Record<string, string>): Promise<{ code: number; output: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-units-"));
  try {
    const stub = path.join(dir, "stub");
    fs.writeFileSync(stub, "#!/bin/sh\n", { mode: 0o755 });
    fs.writeFileSync(path.join(dir, "env"), "");
    const files = Object.entries(units).map(([name, text]) => {
      const file = path.join(dir, name);
      fs.writeFileSync(file, text.replace(/^ExecStart=\S+/m, `ExecStart=${stub}`).replace(/^EnvironmentFile=.*$/m, `EnvironmentFile=${path.join(dir, "env")}`));
      return file;
    });
    const res = await execa("systemd-analyze", ["verify", "--man=no", ...files], { reject: false });
    return { code: res.exitCode ?? -1, output: `${res.stdout}${res.stderr}`.trim() };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function helpOf(cmd: string): Promise<string> {
  const built = path.join(ROOT, "dist/cmd", cmd, "main.js");
  const argv = fs.existsSync(built) ? [built] : ["--import", "tsx", path.join(ROOT, "cmd", cmd, "main.ts")];
  return String((await execa("node", [...argv, "--help"], { cwd: ROOT, env: { COLUMNS: "400" } })).stdout).replace(/\s+/g, " ");
}

describe("deploy files for VMs (systemd, Vagrant)", function () {
  this.timeout(60_000);
  const units = Object.fromEntries(["weft-agent.service", "weft-controller.service"].map((f) => [f, fs.readFileSync(path.join(SYSTEMD, f), "utf8")]));

  it("the systemd units pass systemd-analyze verify without a single complaint", async () => {
    const res = await verifyUnits(units);
    assert.equal(res.code, 0, res.output);
    assert.equal(res.output, "");
  });

  it("the verification notices a broken unit (so the test above can fail)", async () => {
    const broken = units["weft-agent.service"].replace("Restart=always", "Restart=sometimes");
    const res = await verifyUnits({ "weft-agent.service": broken });
    assert.match(res.output, /restart specifier/);
  });

  it("the units run the installed commands with their environment files, and the agent keeps the dataplane on stop", () => {
    assert.match(units["weft-agent.service"], /^ExecStart=\/usr\/local\/bin\/weft-agent$/m);
    assert.match(units["weft-agent.service"], /^EnvironmentFile=\/etc\/default\/weft-agent$/m);
    assert.match(units["weft-agent.service"], /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW$/m);
    assert.doesNotMatch(units["weft-agent.service"], /^ExecStop.*--cleanup/m);
    assert.match(units["weft-controller.service"], /^ExecStart=\/usr\/local\/bin\/weft-controller$/m);
  });

  for (const [file, cmd] of [["weft-agent.env", "weft-agent"], ["weft-controller.env", "weft-controller"]] as const) {
    it(`every variable in ${file} is a flag of ${cmd}`, async () => {
      const help = await helpOf(cmd);
      const vars = [...fs.readFileSync(path.join(SYSTEMD, file), "utf8").matchAll(/^#?(WEFT_[A-Z_]+)=/gm)].map((m) => m[1]);
      assert.ok(vars.length >= 5, `only ${vars.length} variables in ${file}`);
      for (const v of vars) assert.ok(help.includes(`env: ${v}`), `${file}: ${v} is not a flag of ${cmd}`);
    });
  }

  it("the etcd drop-in sets etcd's listen and advertise URLs", () => {
    const conf = fs.readFileSync(path.join(SYSTEMD, "etcd.service.d/weft.conf"), "utf8");
    for (const v of ["ETCD_LISTEN_CLIENT_URLS", "ETCD_ADVERTISE_CLIENT_URLS", "ETCD_DATA_DIR"]) assert.match(conf, new RegExp(`^Environment=${v}=`, "m"));
  });

  it("the Vagrantfile is valid Ruby and the provisioning script valid bash", async () => {
    const ruby = await execa("ruby", ["-c", path.join(VAGRANT, "Vagrantfile")], { reject: false });
    assert.equal(ruby.exitCode, 0, String(ruby.stderr));
    assert.match(String(ruby.stdout), /Syntax OK/);
    const bash = await execa("bash", ["-n", path.join(VAGRANT, "provision.sh")], { reject: false });
    assert.equal(bash.exitCode, 0, String(bash.stderr));
    const vf = fs.readFileSync(path.join(VAGRANT, "Vagrantfile"), "utf8");
    assert.match(vf, /private_network/);
    assert.match(fs.readFileSync(path.join(VAGRANT, "provision.sh"), "utf8"), /WEFT_UPLINK=eth1/);
  });
});
