// The files for real machines (deploy/systemd, deploy/vagrant): the units and the etcd
// drop-in verified by systemd itself, the Vagrantfile parsed by ruby and then evaluated
// against a stand-in for Vagrant's configuration object, the shell scripts parsed by bash,
// and the environment files checked against the commands' real flags so they cannot drift.
// Needs `systemd-analyze` (Debian systemd) and `ruby` (Debian ruby).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { commandArgv } from "../harness/cli.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const SYSTEMD = path.join(ROOT, "deploy/systemd");
const VAGRANT = path.join(ROOT, "deploy/vagrant");
const read = (file: string) => fs.readFileSync(file, "utf8");

interface Verified {
  code: number;
  output: string;
}

/**
 * Runs `systemd-analyze verify` on units (file name → text), optionally with drop-ins
 * (unit name → { file name → text }), in a temp dir. verify refuses a unit whose ExecStart
 * binary does not exist, so each Exec*= binary is rewritten to a stub script and each
 * EnvironmentFile= to an empty file; everything else is verified as written.
 */
async function verifyUnits(units: Record<string, string>, dropIns: Record<string, Record<string, string>> = {}): Promise<Verified> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-units-"));
  try {
    const stub = path.join(dir, "stub");
    fs.writeFileSync(stub, "#!/bin/sh\n", { mode: 0o755 });
    const env = path.join(dir, "env");
    fs.writeFileSync(env, "");
    const files = Object.entries(units).map(([name, text]) => {
      const file = path.join(dir, name);
      const rewritten = text
        // (paths under /nonexistent/ are kept, for the test that verify does check binaries)
        .replace(/^(Exec(?:Start|StartPre|StartPost|Stop|StopPost|Reload)=[-+!@:]*)(\/\S+)/gm, (_m, pre: string, bin: string) => `${pre}${bin.startsWith("/nonexistent/") ? bin : stub}`)
        .replace(/^EnvironmentFile=(-?).*$/gm, `EnvironmentFile=$1${env}`);
      fs.writeFileSync(file, rewritten);
      return file;
    });
    for (const [unit, confs] of Object.entries(dropIns)) {
      fs.mkdirSync(path.join(dir, `${unit}.d`));
      for (const [name, text] of Object.entries(confs)) fs.writeFileSync(path.join(dir, `${unit}.d`, name), text);
    }
    const res = await execa("systemd-analyze", ["verify", "--man=no", ...files], { reject: false });
    return { code: res.exitCode ?? -1, output: `${res.stdout}${res.stderr}`.trim() };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Debian's etcd.service (package etcd-server) when installed, else a unit of the same shape. */
function debianEtcdUnit(): string {
  const installed = ["/lib/systemd/system/etcd.service", "/usr/lib/systemd/system/etcd.service"].find((f) => fs.existsSync(f));
  if (installed) return read(installed);
  return "[Unit]\nDescription=etcd\nAfter=network.target\n\n[Service]\nEnvironment=ETCD_DATA_DIR=/var/lib/etcd/default\nEnvironmentFile=-/etc/default/etcd\nType=notify\nUser=etcd\nExecStart=/usr/bin/etcd\n\n[Install]\nWantedBy=multi-user.target\n";
}

/** `--help` of a command, whitespace collapsed (commander wraps lines). */
async function helpOf(cmd: "weft-controller" | "weft-agent" | "weftctl", ...sub: string[]): Promise<string> {
  const res = await execa("node", [...commandArgv(cmd), ...sub, "--help"], { cwd: ROOT });
  return String(res.stdout).replace(/\s+/g, " ");
}

/** Every WEFT_* variable named in an env file, set or commented out. */
function envVars(file: string): string[] {
  return [...read(file).matchAll(/^#?(WEFT_[A-Z0-9_]+)=/gm)].map((m) => m[1]);
}

// A stand-in for Vagrant: records every setting and call on the configuration object and
// prints the tree as JSON, so the test sees what the Vagrantfile asks Vagrant to build.
const FAKE_VAGRANT = String.raw`
require "json"
class Rec
  def initialize; @h = {}; end
  def to_h
    @h.transform_values { |v| v.is_a?(Rec) ? v.to_h : v }
  end
  def respond_to_missing?(*_a); true; end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      @h[n.chomp("=")] = args[0]
      return args[0]
    end
    return (@h[n] ||= Rec.new) if args.empty? && kw.empty? && blk.nil?
    child = blk ? Rec.new : nil
    blk&.call(child)
    (@h[n] ||= []) << { "args" => args, "opts" => kw, "block" => child&.to_h }
    nil
  end
end
module Vagrant
  def self.configure(version)
    c = Rec.new
    yield c
    puts JSON.generate({ "version" => version, "config" => c.to_h })
  end
end
load ARGV[0]
`;

interface Call {
  args: unknown[];
  opts: Record<string, unknown>;
  block: Record<string, any> | null;
}

async function evalVagrantfile(env: Record<string, string> = {}): Promise<{ version: string; config: Record<string, any> }> {
  const res = await execa("ruby", ["-e", FAKE_VAGRANT, path.join(VAGRANT, "Vagrantfile")], { cwd: VAGRANT, env, reject: false });
  assert.equal(res.exitCode, 0, String(res.stderr));
  return JSON.parse(String(res.stdout));
}

describe("deploy files for VMs (systemd, Vagrant)", function () {
  this.timeout(60_000);
  const units = Object.fromEntries(["weft-agent.service", "weft-controller.service"].map((f) => [f, read(path.join(SYSTEMD, f))]));
  const etcdDropIn = read(path.join(SYSTEMD, "etcd.service.d/weft.conf"));

  describe("systemd", () => {
    it("the weft units pass systemd-analyze verify without a single complaint", async () => {
      const res = await verifyUnits(units);
      assert.equal(res.code, 0, res.output);
      assert.equal(res.output, "");
    });

    it("the etcd drop-in, applied to Debian's etcd.service, passes systemd-analyze verify without a complaint", async () => {
      const res = await verifyUnits({ "etcd.service": debianEtcdUnit() }, { "etcd.service": { "weft.conf": etcdDropIn } });
      assert.equal(res.code, 0, res.output);
      assert.equal(res.output, "");
    });

    it("the verification reports broken units and drop-ins (so the tests above can fail)", async () => {
      const badValue = await verifyUnits({ "weft-agent.service": units["weft-agent.service"].replace("Restart=always", "Restart=sometimes") });
      assert.match(badValue.output, /weft-agent\.service:\d+: .*restart specifier.*sometimes/);
      const badKey = await verifyUnits({ "weft-controller.service": units["weft-controller.service"].replace("DynamicUser=", "DynamicUsr=") });
      assert.match(badKey.output, /Unknown key.*DynamicUsr/);
      const badDropIn = await verifyUnits({ "etcd.service": debianEtcdUnit() }, { "etcd.service": { "weft.conf": etcdDropIn.replace("[Service]", "[Service]\nRestartSecs=1") } });
      assert.match(badDropIn.output, /weft\.conf:\d+: Unknown key.*RestartSecs/);
      // verify checks that Exec*= binaries exist (why verifyUnits points them at a stub).
      const missing = await verifyUnits({ "weft-agent.service": units["weft-agent.service"].replace("[Service]", "[Service]\nExecStartPre=/nonexistent/weft-test") });
      assert.notEqual(missing.code, 0);
      assert.match(missing.output, /\/nonexistent\/weft-test is not executable/);
    });

    it("the agent unit: installed command, its env file, network capabilities only, restarts forever, fail static", () => {
      const u = units["weft-agent.service"];
      assert.match(u, /^ExecStart=\/usr\/local\/bin\/weft-agent$/m);
      assert.match(u, /^EnvironmentFile=\/etc\/default\/weft-agent$/m);
      assert.match(u, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW$/m);
      assert.match(u, /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW$/m);
      assert.match(u, /^ProtectSystem=strict$/m);
      // Writable despite ProtectSystem=strict: the conflist, the state, the xtables lock.
      assert.match(u, /^ConfigurationDirectory=cni\/net\.d$/m);
      assert.match(u, /^StateDirectory=weft$/m);
      assert.match(u, /^ReadWritePaths=.*\/run\b/m);
      // It writes net.ipv4.ip_forward: /proc/sys must stay writable.
      assert.doesNotMatch(u, /^ProtectKernelTunables=yes/m);
      assert.match(u, /^Restart=always$/m);
      assert.match(u, /^RestartSec=/m);
      assert.match(u, /^StartLimitIntervalSec=0$/m);
      assert.match(u, /^After=.*network-online\.target/m);
      assert.match(u, /^Wants=network-online\.target$/m);
      // Ordered after a co-located controller, but never pulling one in.
      assert.match(u, /^After=.*weft-controller\.service/m);
      assert.doesNotMatch(u, /^(Wants|Requires|BindsTo|Requisite)=.*weft-controller/m);
      // Stopping the agent must not tear the network down.
      assert.doesNotMatch(u, /^Exec\w*=.*--cleanup/m);
    });

    it("the controller unit: installed command, its env file, unprivileged and read-only, restarts forever", () => {
      const u = units["weft-controller.service"];
      assert.match(u, /^ExecStart=\/usr\/local\/bin\/weft-controller$/m);
      assert.match(u, /^EnvironmentFile=\/etc\/default\/weft-controller$/m);
      for (const line of ["DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "Restart=always", "StartLimitIntervalSec=0"]) {
        assert.match(u, new RegExp(`^${line}$`, "m"), line);
      }
      assert.match(u, /^After=.*etcd\.service/m);
      assert.doesNotMatch(u, /^(Wants|Requires)=.*etcd/m);
      assert.doesNotMatch(u, /^ReadWritePaths=/m);
    });

    for (const [file, cmd] of [["weft-agent.env", "weft-agent"], ["weft-controller.env", "weft-controller"]] as const) {
      it(`every variable in ${file} is a flag of ${cmd}, and every flag of ${cmd} is in it`, async () => {
        const help = await helpOf(cmd);
        const known = new Set([...help.matchAll(/env: (WEFT_[A-Z0-9_]+)/g)].map((m) => m[1]));
        assert.ok(known.size >= 5, `could not read the variables from ${cmd} --help: ${help}`);
        const vars = envVars(path.join(SYSTEMD, file));
        for (const v of vars) assert.ok(known.has(v), `${file}: ${v} is not a flag of ${cmd} (known: ${[...known].join(", ")})`);
        // --cleanup is a one-shot mode, not a setting for the service.
        const missing = [...known].filter((v) => v !== "WEFT_CLEANUP" && !vars.includes(v));
        assert.deepEqual(missing, [], `${file} does not mention these flags of ${cmd}`);
        assert.ok(!/^WEFT_CLEANUP=/m.test(read(path.join(SYSTEMD, file))), `${file} must not turn on --cleanup`);
      });
    }

    it("the env files are what systemd's EnvironmentFile= reads: VAR=value lines and comments only", () => {
      for (const file of ["weft-agent.env", "weft-controller.env"]) {
        read(path.join(SYSTEMD, file))
          .split("\n")
          .forEach((line, i) => assert.match(line, /^(|#.*|WEFT_[A-Z0-9_]+=\S*)$/, `${file}:${i + 1}: ${line}`));
      }
    });

    it("the etcd drop-in sets etcd's listen and advertise URLs on the ADDRESS placeholder and loopback", () => {
      for (const v of ["ETCD_NAME", "ETCD_DATA_DIR", "ETCD_LISTEN_CLIENT_URLS", "ETCD_ADVERTISE_CLIENT_URLS", "ETCD_INITIAL_CLUSTER"]) {
        assert.match(etcdDropIn, new RegExp(`^Environment=${v}=`, "m"), v);
      }
      assert.match(etcdDropIn, /^Environment=ETCD_LISTEN_CLIENT_URLS=.*http:\/\/ADDRESS:2379.*http:\/\/127\.0\.0\.1:2379/m);
      assert.match(etcdDropIn, /^Environment=ETCD_ADVERTISE_CLIENT_URLS=http:\/\/ADDRESS:2379$/m);
      // The controller's example endpoint is this etcd's loopback listener.
      assert.match(read(path.join(SYSTEMD, "weft-controller.env")), /^WEFT_ETCD_ENDPOINTS=http:\/\/127\.0\.0\.1:2379$/m);
    });
  });

  describe("Vagrant", () => {
    it("the Vagrantfile is valid Ruby (ruby -c)", async () => {
      const ruby = await execa("ruby", ["-c", path.join(VAGRANT, "Vagrantfile")], { reject: false });
      assert.equal(ruby.exitCode, 0, String(ruby.stderr));
      assert.match(String(ruby.stdout), /Syntax OK/);
    });

    it("the provisioning scripts are valid bash (bash -n) and executable", async () => {
      const scripts = fs.readdirSync(VAGRANT).filter((f) => f.endsWith(".sh"));
      assert.ok(scripts.includes("provision.sh") && scripts.includes("weft-pod.sh"), scripts.join(", "));
      for (const s of scripts) {
        const res = await execa("bash", ["-n", path.join(VAGRANT, s)], { reject: false });
        assert.equal(res.exitCode, 0, `${s}: ${res.stderr}`);
        assert.ok(fs.statSync(path.join(VAGRANT, s)).mode & 0o100, `${s} is not executable`);
      }
    });

    it("the Vagrantfile defines three Debian 12 VMs on 192.168.56.11-13, VM 1 the control VM, all provisioned from this repo", async () => {
      const { version, config } = await evalVagrantfile();
      assert.equal(version, "2");
      assert.equal(config.vm.box, "debian/bookworm64");
      const folders = config.vm.synced_folder as Call[];
      const repo = folders.find((f) => f.args[1] === "/opt/weft-src");
      assert.ok(repo, JSON.stringify(folders));
      assert.equal(path.resolve(VAGRANT, String(repo.args[0])), ROOT);
      const defines = config.vm.define as Call[];
      assert.deepEqual(defines.map((d) => d.args[0]), ["weft-1", "weft-2", "weft-3"]);
      defines.forEach((d, i) => {
        const vm = d.block!.vm;
        const ip = `192.168.56.${11 + i}`;
        assert.equal(vm.hostname, `weft-${i + 1}`);
        assert.deepEqual(vm.network, [{ args: ["private_network"], opts: { ip }, block: null }]);
        assert.equal(vm.provision.length, 1);
        const prov = vm.provision[0] as Call;
        assert.equal(prov.args[0], "shell");
        assert.ok(fs.existsSync(path.join(VAGRANT, String(prov.opts.path))), `provisioner ${prov.opts.path} is missing`);
        const env = prov.opts.env as Record<string, string>;
        assert.equal(env.WEFT_NODE_IP, ip);
        assert.equal(env.WEFT_CONTROL_IP, "192.168.56.11");
        assert.equal(env.WEFT_ROLE, i === 0 ? "control" : "node");
        assert.equal(d.opts.primary, i === 0);
      });
    });

    it("WEFT_NODES changes the number of VMs; nonsense is refused", async () => {
      const { config } = await evalVagrantfile({ WEFT_NODES: "5" });
      const defines = config.vm.define as Call[];
      assert.equal(defines.length, 5);
      assert.deepEqual(defines[4].block!.vm.network[0].opts, { ip: "192.168.56.15" });
      const bad = await execa("ruby", ["-e", FAKE_VAGRANT, path.join(VAGRANT, "Vagrantfile")], { cwd: VAGRANT, env: { WEFT_NODES: "zero" }, reject: false });
      assert.notEqual(bad.exitCode, 0);
    });

    it("provision.sh uses files that exist and edits lines that exist in them", () => {
      const prov = read(path.join(VAGRANT, "provision.sh"));
      const used = [...new Set([...prov.matchAll(/\bdeploy\/[\w./-]+/g)].map((m) => m[0]))];
      assert.ok(used.length >= 5, used.join(", "));
      for (const f of used) assert.ok(fs.existsSync(path.join(ROOT, f)), `provision.sh uses ${f}, which does not exist`);
      // The sed edits of the env files and drop-in must find their lines.
      const agentEnv = read(path.join(SYSTEMD, "weft-agent.env"));
      for (const re of [/^WEFT_CONTROLLER=/m, /^#?WEFT_UPLINK=/m, /^#?WEFT_UNDERLAY_IP=/m]) assert.match(agentEnv, re);
      assert.match(prov, /WEFT_UPLINK=\$\{UPLINK\}/);
      assert.match(prov, /WEFT_UNDERLAY_IP=\$\{WEFT_NODE_IP\}/);
      assert.match(read(path.join(SYSTEMD, "weft-controller.env")), /^WEFT_ETCD_ENDPOINTS=/m);
      assert.match(etcdDropIn, /ADDRESS/);
      // The agent is never cleaned up by provisioning, and the commands it runs exist.
      assert.doesNotMatch(prov, /--cleanup/);
      assert.match(prov, /weftctl --etcd-endpoints \S+ network apply -f -/);
    });

    it("weftctl has the command provision.sh creates the default network with", async () => {
      assert.match(await helpOf("weftctl", "network", "apply"), /-f, --filename <file> .*- for stdin/);
    });
  });
});
