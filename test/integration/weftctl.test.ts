// weftctl as a user runs it: a child process against a real etcd, with real
// leases made by a real controller and Join streams.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { startController, type RunningController } from "../../pkg/controller/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Store } from "../../pkg/store/index.js";
import { commandArgv } from "../harness/cli.js";
import { useEtcd } from "../harness/etcd.js";
import { SimAgent, simJoinRequest } from "../harness/sim-agent.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CLI = commandArgv("weftctl");

describe("weftctl (real etcd, child process)", function () {
  this.timeout(120_000);
  const etcd = useEtcd();
  const prefix = `/weftctl-${process.pid}/`;
  let store: Store;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "weftctl-"));

  async function weftctl(...args: string[]) {
    const res = await execa("node", [...CLI, "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, ...args], { reject: false, cwd: ROOT });
    return { code: res.exitCode, out: String(res.stdout), err: String(res.stderr) };
  }

  async function etcdDump(): Promise<string> {
    const res = await store.client.getAll().prefix(prefix).strings();
    return JSON.stringify(Object.entries(res).filter(([k]) => !k.endsWith("networks-guard")).sort());
  }

  before(() => {
    store = Store.connect({ endpoints: [etcd.endpoint], prefix });
  });
  after(async () => {
    await store.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("creates, lists, gets, applies and deletes networks", async () => {
    let r = await weftctl("network", "create", "blue", "--cidr", "10.244.0.0/16", "--vni", "42", "--node-prefix-length", "24", "--default");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /network\/blue created/);
    r = await weftctl("network", "list");
    assert.match(r.out, /^NAME\s+CIDR\s+VNI/m);
    assert.match(r.out, /^blue\s+10\.244\.0\.0\/16\s+42\s+24\s+routed/m);
    r = await weftctl("network", "get", "blue", "-o", "json");
    assert.deepEqual(JSON.parse(r.out), { name: "blue", cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: {}, default: true, flood: false, dns: false });

    const file = path.join(tmp, "nets.yaml");
    fs.writeFileSync(file, [
      "apiVersion: weft.dev/v1alpha1", "kind: OverlayNetwork", "metadata: {name: green}", "spec: {cidr: 10.9.0.0/16, vni: 9, nodePrefixLength: 26, isolated: false, nodeSelector: {zone: a}}",
      "---", "name: blue", "cidr: 10.244.0.0/16", "vni: 42", "nodePrefixLength: 24", "default: true", "mtu: 1400", "",
    ].join("\n"));
    r = await weftctl("network", "apply", "-f", file);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /network\/green created/);
    assert.match(r.out, /network\/blue updated/);
    r = await weftctl("network", "apply", "-f", file);
    assert.match(r.out, /network\/green unchanged/);
    const list = JSON.parse((await weftctl("network", "list", "-o", "json")).out) as { name: string; mtu: number; nodeSelector: object }[];
    assert.deepEqual(list.map((n) => n.name), ["blue", "green"]);
    assert.equal(list[0].mtu, 1400);
    assert.deepEqual(list[1].nodeSelector, { zone: "a" });

    r = await weftctl("network", "delete", "green");
    assert.equal(r.code, 0, r.err);
    assert.equal(await store.getNetwork("green"), undefined);
  });

  it("rejects every invalid spec with a message naming the field, and writes nothing", async () => {
    const before = await etcdDump();
    const create = (...extra: string[]) => weftctl("network", "create", ...extra);
    const cases: [string[], RegExp][] = [
      [["x1", "--cidr", "10.300.0.0/16", "--vni", "5", "--node-prefix-length", "24"], /cidr/],
      [["x2", "--cidr", "10.50.0.1/16", "--vni", "5", "--node-prefix-length", "24"], /cidr.*host bits|cidr/],
      [["x3", "--cidr", "fd00::/64", "--vni", "5", "--node-prefix-length", "80"], /cidr/],
      [["x4", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "16"], /nodePrefixLength.*longer/],
      [["x5", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "31"], /nodePrefixLength/],
      [["x6", "--cidr", "10.50.0.0/16", "--vni", "0", "--node-prefix-length", "24"], /vni/],
      [["x7", "--cidr", "10.50.0.0/16", "--vni", "16777216", "--node-prefix-length", "24"], /vni/],
      [["x8", "--cidr", "10.50.0.0/16", "--vni", "abc", "--node-prefix-length", "24"], /vni/],
      [["x9", "--cidr", "10.50.0.0/16", "--vni", "42", "--node-prefix-length", "24"], /vni.*already used by network "blue"/],
      [["x10", "--cidr", "10.244.128.0/20", "--vni", "5", "--node-prefix-length", "24"], /cidr.*overlaps.*blue/],
      [["x11", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "24", "--mode", "bridged"], /mode/],
      [["x12", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "24", "--mtu", "100"], /mtu/],
      [["x13", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "24", "--port", "70000"], /port/],
      [["x14", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "24", "--default"], /default.*blue/],
      [["Bad_Name", "--cidr", "10.50.0.0/16", "--vni", "5", "--node-prefix-length", "24"], /name/],
      [["blue", "--cidr", "10.244.0.0/16", "--vni", "42", "--node-prefix-length", "24"], /already exists/],
    ];
    for (const [args, message] of cases) {
      const r = await create(...args);
      assert.notEqual(r.code, 0, `accepted: ${args.join(" ")}`);
      assert.match(r.err, message, args.join(" "));
      assert.equal(r.err.trim().split("\n").length, 1, `one line for ${args.join(" ")}: ${r.err}`);
    }
    // Through apply: an immutable field changed, and an unknown field; a bad document spoils the whole file.
    const file = path.join(tmp, "bad.yaml");
    fs.writeFileSync(file, "name: ok1\ncidr: 10.60.0.0/16\nvni: 60\nnodePrefixLength: 24\n---\nname: blue\ncidr: 10.244.0.0/16\nvni: 42\nnodePrefixLength: 25\n");
    let r = await weftctl("network", "apply", "-f", file);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /nodePrefixLength.*immutable/);
    fs.writeFileSync(file, "name: ok2\ncidr: 10.61.0.0/16\nvni: 61\nnodePrefixLength: 24\nmtuu: 1400\n");
    r = await weftctl("network", "apply", "-f", file);
    assert.match(r.err, /spec\.mtuu: unknown field/);
    assert.equal(await store.getNetwork("ok2"), undefined);
    assert.equal(await store.getNetwork("ok1"), undefined, "a file with one bad document writes nothing");
    // What only YAML can express: wrong types, and the other immutable fields.
    const yamlCases: [string, RegExp][] = [
      ["name: y1\ncidr: 10.62.0.0/16\nvni: 62\nnodePrefixLength: 24\nnodeSelector: [zone=a]\n", /spec\.nodeSelector: must be a map/],
      ["name: y2\ncidr: 10.63.0.0/16\nvni: 63\nnodePrefixLength: 24\nnodeSelector: {zone: {a: b}}\n", /spec\.nodeSelector\.zone: value .* is not a valid label value/],
      ["name: y3\ncidr: 10.64.0.0/16\nvni: 64\nnodePrefixLength: 24\nnatOutgoing: maybe\n", /spec\.natOutgoing: must be true or false, got "maybe"/],
      ["name: y4\ncidr: 10.65.0.0/16\nvni: '65'\nnodePrefixLength: 24\n", /spec\.vni: must be an integer .*got "65"/],
      ["name: blue\ncidr: 10.244.0.0/16\nvni: 43\nnodePrefixLength: 24\ndefault: true\n", /spec\.vni: is immutable .*was 42, got 43/],
      ["name: blue\ncidr: 10.244.0.0/15\nvni: 42\nnodePrefixLength: 24\ndefault: true\n", /spec\.cidr: is immutable .*was 10\.244\.0\.0\/16, got 10\.244\.0\.0\/15/],
      ["name: blue\ncidr: 10.244.0.0/16\nvni: 42\nnodePrefixLength: 24\ndefault: true\nmode: switched\n", /spec\.mode: is immutable .*was routed, got switched/],
    ];
    for (const [yaml, message] of yamlCases) {
      fs.writeFileSync(file, yaml);
      r = await weftctl("network", "apply", "-f", file);
      assert.notEqual(r.code, 0, yaml);
      assert.match(r.err, message, yaml);
      assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
    }
    assert.equal(await etcdDump(), before, "etcd unchanged by rejected input");
  });

  it("takes etcd from WEFT_* variables and a file from stdin", async () => {
    const res = await execa("node", [...CLI, "network", "apply", "-f", "-"], {
      reject: false,
      cwd: ROOT,
      env: { WEFT_ETCD_ENDPOINTS: etcd.endpoint, WEFT_ETCD_PREFIX: prefix },
      input: "kind: OverlayNetwork\napiVersion: weft.dev/v1alpha1\nmetadata: {name: stdin-net}\nspec: {cidr: 10.70.0.0/16, vni: 70, nodePrefixLength: 24}\n",
    });
    assert.equal(res.exitCode, 0, String(res.stderr));
    assert.equal(String(res.stdout), "network/stdin-net created");
    assert.equal((await store.getNetwork("stdin-net"))?.vni, 70);
    const r = await weftctl("network", "delete", "stdin-net");
    assert.equal(r.code, 0, r.err);
  });

  it("reports usage errors in one line and writes nothing", async () => {
    const before = await etcdDump();
    const file = path.join(tmp, "usage.yaml");
    const cases: [() => Promise<{ code: number | undefined; err: string }>, RegExp][] = [
      [() => weftctl("network", "create", "u1", "--cidr", "10.80.0.0/16", "--vni", "80", "--node-prefix-length", "24", "--nat-outgoing=maybe"), /^error: option '--nat-outgoing \[bool\]' argument 'maybe' is invalid\. not a boolean/],
      [() => weftctl("network", "create", "u1", "--cidr", "10.80.0.0/16", "--node-prefix-length", "24"), /^error: required option '--vni <vni>' not specified/],
      [() => weftctl("network", "create", "u1", "--cidr", "10.80.0.0/16", "--vni", "80", "--node-prefix-length", "24", "--node-selector", "zone"), /^error: .*--node-selector.*label "zone" is not key=value/],
      [() => weftctl("network", "list", "-o", "yaml"), /^error: option '-o, --output <format>' argument 'yaml' is invalid\. Allowed choices are table, json/],
      [() => weftctl("network", "frobnicate"), /^error: unknown command 'frobnicate'/],
      [() => weftctl("network", "get", "no-such-net"), /^error: network "no-such-net" not found/],
      [() => weftctl("network", "delete", "no-such-net"), /^error: network "no-such-net" not found/],
      [async () => {
        fs.writeFileSync(file, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        return weftctl("network", "apply", "-f", file);
      }, /^error: .*usage\.yaml: document 1: kind must be OverlayNetwork, got "ConfigMap"/],
      [async () => {
        fs.writeFileSync(file, "name: twice\ncidr: 10.81.0.0/16\nvni: 81\nnodePrefixLength: 24\n---\nname: twice\ncidr: 10.82.0.0/16\nvni: 82\nnodePrefixLength: 24\n");
        return weftctl("network", "apply", "-f", file);
      }, /^error: .*network "twice" appears more than once/],
      [async () => {
        fs.writeFileSync(file, "name: u2\ncidr: 10.83.0.0/16\nvni: 83\nnodePrefixLength: 24\n---\nname: u3\ncidr: 10.83.128.0/17\nvni: 84\nnodePrefixLength: 24\n");
        return weftctl("network", "apply", "-f", file);
      }, /^error: .*u3: spec\.cidr: 10\.83\.128\.0\/17 overlaps 10\.83\.0\.0\/16 of network "u2"/],
      [() => weftctl("network", "apply", "-f", path.join(tmp, "missing.yaml")), /^error: cannot read .*missing\.yaml: ENOENT/],
    ];
    for (const [run, message] of cases) {
      const r = await run();
      assert.notEqual(r.code, 0, message.source);
      assert.match(r.err, message);
      assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
    }
    assert.equal(await etcdDump(), before, "etcd unchanged by rejected input");
  });

  describe("with a controller and agents holding leases", () => {
    let controller: RunningController;
    const agents: SimAgent[] = [];
    before(async () => {
      controller = await startController({ etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, listen: "127.0.0.1:0", log: silentLogger() });
      for (const [i, name] of ["node-a", "node-b"].entries()) {
        const a = new SimAgent(`127.0.0.1:${controller.port}`, simJoinRequest(name, i + 1, ["blue"]));
        agents.push(a);
        await a.connect();
      }
    });
    after(async () => {
      agents.forEach((a) => a.close());
      await controller.stop();
    });

    it("lists leases and nodes as tables and JSON", async () => {
      const leases = JSON.parse((await weftctl("lease", "list", "-o", "json")).out) as { network: string; node: string; subnet: string }[];
      assert.deepEqual(leases.map((l) => [l.network, l.node]), [["blue", "node-a"], ["blue", "node-b"]]);
      assert.equal(leases[0].subnet, agents[0].subnet("blue"));
      const filtered = JSON.parse((await weftctl("lease", "list", "--network", "green", "-o", "json")).out);
      assert.deepEqual(filtered, []);
      const nodes = JSON.parse((await weftctl("node", "list", "-o", "json")).out) as { name: string; underlayIP: string }[];
      assert.deepEqual(nodes.map((n) => [n.name, n.underlayIP]), [["node-a", "172.20.0.1"], ["node-b", "172.20.0.2"]]);
      const table = (await weftctl("lease", "list")).out;
      assert.match(table, /^blue\s+node-a\s+10\.244\.\d+\.0\/24\s+172\.20\.0\.1/m);
    });

    it("refuses to delete a network with leases unless --force", async () => {
      const r = await weftctl("network", "delete", "blue");
      assert.notEqual(r.code, 0);
      assert.match(r.err, /2 lease/);
      assert.ok(await store.getNetwork("blue"));
    });

    it("node remove releases the node's subnet and its peers drop it", async () => {
      const r = await weftctl("node", "remove", "node-b");
      assert.equal(r.code, 0, r.err);
      assert.deepEqual((await store.listLeases("blue")).map((l) => l.node), ["node-a"]);
      assert.equal((await store.listNodes()).some((n) => n.name === "node-b"), false);
      const deadline = Date.now() + 10_000;
      while (agents[0].peers("blue").includes("node-b") && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      assert.deepEqual(agents[0].peers("blue"), []);
      assert.notEqual((await weftctl("node", "remove", "node-b")).code, 0, "removing an unknown node fails");
    });

    it("deletes a network with leases when forced", async () => {
      agents.forEach((a) => a.close());
      const r = await weftctl("network", "delete", "blue", "--force");
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(await store.listLeases("blue"), []);
    });
  });

  it("fails fast with a clear error when etcd is unreachable", async () => {
    const res = await execa("node", [...CLI, "--etcd-endpoints", "http://127.0.0.1:9", "--timeout", "2s", "network", "list"], { reject: false, cwd: ROOT });
    assert.notEqual(res.exitCode, 0);
    assert.match(String(res.stderr), /^error: cannot reach etcd at http:\/\/127\.0\.0\.1:9/);
  });
});
