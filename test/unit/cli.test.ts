// Flag parsing shared by every command (pkg/cli) and weftctl's pure helpers:
// reading spec documents and rendering tables.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, envName, envOption, parseBool, parseDuration, parseLabels, parseList, parsePositiveInt, runMain } from "../../pkg/cli/index.js";
import { readSpecFile, specFromDocument } from "../../cmd/weftctl/input.js";
import { buildProgram } from "../../cmd/weftctl/program.js";
import { renderTable } from "../../cmd/weftctl/table.js";

/** Runs `fn`, expecting an InvalidArgumentError whose message matches. */
function rejects(fn: () => unknown, message: RegExp, what: string): void {
  assert.throws(fn, (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message), what);
}

describe("cli: value parsers", () => {
  it("parseDuration takes ms-style units and bare milliseconds", () => {
    const good: [string, number][] = [
      ["0", 0], ["250", 250], ["500ms", 500], ["1.5s", 1500], ["30s", 30_000], ["5m", 300_000], ["24h", 86_400_000], ["2d", 172_800_000], ["10 minutes", 600_000], ["1 hour", 3_600_000],
    ];
    for (const [text, want] of good) assert.equal(parseDuration(text), want, text);
    for (const bad of ["", "  ", "abc", "-1s", "-5", "1h30m", "5 parsecs", "Infinity", "s", " 5s"]) {
      rejects(() => parseDuration(bad), new RegExp(`not a duration: "${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}" \\(examples: 500ms, 30s, 5m, 24h\\)`), bad);
    }
  });

  it("parseBool takes true/false, 1/0 and yes/no in any case, and nothing else", () => {
    for (const t of ["true", "TRUE", "True", "1", "yes", "YES"]) assert.equal(parseBool(t), true, t);
    for (const f of ["false", "FALSE", "0", "no", "No"]) assert.equal(parseBool(f), false, f);
    for (const bad of ["", "on", "off", "y", "2", "truee"]) rejects(() => parseBool(bad), new RegExp(`not a boolean: "${bad}" \\(true or false\\)`), bad);
  });

  it("parseLabels reads k=v lists; a value may be empty or contain '='", () => {
    assert.deepEqual(parseLabels("zone=a,rack=r1"), { zone: "a", rack: "r1" });
    assert.deepEqual(parseLabels(" zone=a , kubernetes.io/hostname=n1 "), { zone: "a", "kubernetes.io/hostname": "n1" });
    assert.deepEqual(parseLabels("empty="), { empty: "" });
    assert.deepEqual(parseLabels("expr=a=b"), { expr: "a=b" });
    assert.deepEqual(parseLabels(""), {});
    assert.deepEqual(parseLabels("a=1,,a=2"), { a: "2" }, "the last one wins");
    rejects(() => parseLabels("zone"), /label "zone" is not key=value/, "no =");
    rejects(() => parseLabels("zone=a,=b"), /label "=b" is not key=value/, "empty key");
  });

  it("parseList splits on commas and drops empty items", () => {
    assert.deepEqual(parseList("a,b , c"), ["a", "b", "c"]);
    assert.deepEqual(parseList(",,a,,"), ["a"]);
    assert.deepEqual(parseList(""), []);
    assert.deepEqual(parseList("http://127.0.0.1:2379"), ["http://127.0.0.1:2379"]);
  });

  it("parsePositiveInt takes whole numbers only", () => {
    assert.equal(parsePositiveInt("0"), 0);
    assert.equal(parsePositiveInt("8080"), 8080);
    for (const bad of ["", "-1", "1.5", "1e3", "0x10", "ten"]) rejects(() => parsePositiveInt(bad), /not a whole number/, bad);
  });
});

describe("cli: flags backed by WEFT_* environment variables", () => {
  const touched = ["WEFT_ETCD_ENDPOINTS", "WEFT_NODE_NAME", "WEFT_TIMEOUT", "WEFT_OUTPUT", "WEFT_DRY_RUN"];
  const saved = new Map(touched.map((k) => [k, process.env[k]]));
  afterEach(() => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  function command(): Command {
    return new Command("t")
      .exitOverride()
      .configureOutput({ writeErr: () => undefined, writeOut: () => undefined })
      .addOption(envOption("--etcd-endpoints <urls>", "etcd", ["http://127.0.0.1:2379"], "http://127.0.0.1:2379").argParser(parseList))
      .addOption(envOption("--node-name <name>", "node"))
      .addOption(envOption("--timeout <duration>", "timeout", 5000, "5s").argParser(parseDuration))
      .addOption(envOption("-o, --output <format>", "format", "table"))
      .action(() => undefined);
  }

  it("names the variable after the long flag", () => {
    assert.equal(envName("--etcd-endpoints"), "WEFT_ETCD_ENDPOINTS");
    assert.equal(envName("--node-name"), "WEFT_NODE_NAME");
    assert.equal(envName("-x"), "WEFT_X");
    assert.equal(envOption("-o, --output <format>", "format").envVar, "WEFT_OUTPUT");
    assert.throws(() => envOption("-o <format>", "format"), /has no long form/);
  });

  it("uses the default when neither flag nor variable is set", () => {
    for (const k of touched) delete process.env[k];
    const opts = command().parse([], { from: "user" }).opts();
    assert.deepEqual(opts, { etcdEndpoints: ["http://127.0.0.1:2379"], timeout: 5000, output: "table" });
  });

  it("reads the variable through the flag's parser", () => {
    process.env.WEFT_ETCD_ENDPOINTS = "http://10.0.0.1:2379,http://10.0.0.2:2379";
    process.env.WEFT_NODE_NAME = "node-7";
    process.env.WEFT_TIMEOUT = "2s";
    process.env.WEFT_OUTPUT = "json";
    const opts = command().parse([], { from: "user" }).opts();
    assert.deepEqual(opts, { etcdEndpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"], nodeName: "node-7", timeout: 2000, output: "json" });
  });

  it("lets the flag win over the variable", () => {
    process.env.WEFT_NODE_NAME = "from-env";
    process.env.WEFT_TIMEOUT = "2s";
    const opts = command().parse(["--node-name", "from-flag", "--timeout", "750ms"], { from: "user" }).opts();
    assert.equal(opts.nodeName, "from-flag");
    assert.equal(opts.timeout, 750);
  });

  it("rejects a bad variable value with the parser's message", () => {
    process.env.WEFT_TIMEOUT = "soon";
    assert.throws(() => command().parse([], { from: "user" }), /not a duration: "soon"/);
  });
});

describe("cli: runMain", () => {
  let written: string;
  let write: typeof process.stderr.write;
  let exitCode: typeof process.exitCode;
  beforeEach(() => {
    written = "";
    write = process.stderr.write;
    exitCode = process.exitCode;
    process.exitCode = undefined;
    process.stderr.write = ((chunk: string) => {
      written += chunk;
      return true;
    }) as typeof process.stderr.write;
  });
  afterEach(() => {
    process.stderr.write = write;
    process.exitCode = exitCode;
  });

  it("turns a thrown error into one line on stderr and exit status 1", async () => {
    await runMain(async () => {
      throw new Error("spec.vni: must be an integer");
    });
    const [code, out] = [process.exitCode, written];
    process.exitCode = undefined;
    assert.equal(code, 1);
    assert.equal(out, "error: spec.vni: must be an integer\n");
  });

  it("leaves the exit status alone on success, and keeps one already set", async () => {
    await runMain(async () => undefined);
    const clean = process.exitCode;
    process.exitCode = 3;
    await runMain(async () => {
      throw "plain string";
    });
    const [kept, out] = [process.exitCode, written];
    process.exitCode = undefined;
    assert.equal(clean, undefined);
    assert.equal(kept, 3);
    assert.equal(out, "error: plain string\n");
  });
});

describe("weftctl: spec documents, tables and the command tree (pure)", () => {
  it("has help and a description on every command, and the documented commands", () => {
    const paths: string[] = [];
    const walk = (cmd: Command, prefix: string) => {
      const name = prefix ? `${prefix} ${cmd.name()}` : cmd.name();
      paths.push(name);
      assert.ok(cmd.description().length > 0, `${name}: no description`);
      const help = cmd.helpInformation();
      assert.match(help, new RegExp(`^Usage: ${name} `), name);
      assert.match(help, /-h, --help/, name);
      for (const sub of cmd.commands) walk(sub, name);
    };
    const program = buildProgram();
    walk(program, "");
    assert.deepEqual(paths.sort(), [
      "weftctl", "weftctl endpoint", "weftctl endpoint list", "weftctl lease", "weftctl lease list", "weftctl network", "weftctl network apply", "weftctl network create",
      "weftctl network delete", "weftctl network get", "weftctl network list", "weftctl node", "weftctl node list", "weftctl node remove",
    ]);
    const globals = program.helpInformation().replace(/\s+/g, " ");
    assert.match(globals, /--etcd-endpoints <urls> etcd client URLs, comma-separated \(default: http:\/\/127\.0\.0\.1:2379, env: WEFT_ETCD_ENDPOINTS\)/);
    assert.match(globals, /--etcd-prefix <prefix> key prefix in etcd \(default: "\/weft\/v1\/", env: WEFT_ETCD_PREFIX\)/);
    const list = program.commands.find((c) => c.name() === "network")!.commands.find((c) => c.name() === "list")!;
    assert.deepEqual(list.options.find((o) => o.long === "--output")!.argChoices, ["table", "json"]);
  });

  it("takes a bare spec as it is and an OverlayNetwork object by metadata.name and spec", () => {
    assert.deepEqual(specFromDocument({ name: "blue", cidr: "10.0.0.0/16" }, "f"), { name: "blue", cidr: "10.0.0.0/16" });
    const crd = { apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name: "blue", labels: { a: "b" } }, spec: { cidr: "10.0.0.0/16", vni: 1 } };
    assert.deepEqual(specFromDocument(crd, "f"), { name: "blue", cidr: "10.0.0.0/16", vni: 1 });
    // A bare spec's typo is left for validation to name (spec.<field>), not dropped here.
    assert.deepEqual(specFromDocument({ name: "blue", mtuu: 1 }, "f"), { name: "blue", mtuu: 1 });
  });

  it("rejects documents that are neither, saying where", () => {
    const cases: [unknown, RegExp][] = [
      ["text", /^Error: f: expected a mapping$/],
      [[1, 2], /expected a mapping/],
      [{ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } }, /^Error: f: kind must be OverlayNetwork, got "ConfigMap"$/],
      [{ kind: "OverlayNetwork", spec: {} }, /^Error: f: metadata\.name is required$/],
      [{ kind: "OverlayNetwork", metadata: { name: "x" } }, /^Error: f: spec is required$/],
    ];
    for (const [doc, message] of cases) assert.throws(() => specFromDocument(doc, "f"), message, JSON.stringify(doc));
  });

  it("reads every document of a multi-document file, skipping empty ones", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weftctl-unit-"));
    try {
      const file = path.join(dir, "nets.yaml");
      fs.writeFileSync(file, "---\nname: a\nvni: 1\n---\n---\nkind: OverlayNetwork\nmetadata: {name: b}\nspec: {vni: 2}\n");
      assert.deepEqual(readSpecFile(file), [{ name: "a", vni: 1 }, { name: "b", vni: 2 }]);
      fs.writeFileSync(file, "name: a\nvni: [1\n");
      assert.throws(() => readSpecFile(file), new RegExp(`^Error: ${file.replace(/[.]/g, "\\.")}: document 1: `));
      fs.writeFileSync(file, "---\n");
      assert.throws(() => readSpecFile(file), /no network in it/);
      fs.writeFileSync(file, "name: a\n---\n- 1\n");
      assert.throws(() => readSpecFile(file), /document 2: expected a mapping/);
      assert.throws(() => readSpecFile(path.join(dir, "missing.yaml")), /^Error: cannot read .*missing\.yaml: ENOENT/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("renders aligned columns, with '-' for empty values and k=v for maps", () => {
    const out = renderTable(
      [
        { name: "blue", cidr: "10.244.0.0/16", sel: {}, list: ["a", "b"] },
        { name: "a-much-longer-name", cidr: "10.9.0.0/24", sel: { zone: "a", rack: "1" }, list: [] },
      ],
      [["NAME", "name"], ["CIDR", "cidr"], ["SELECTOR", "sel"], ["LIST", "list"], ["MISSING", "nothing"]],
    );
    assert.equal(
      out,
      [
        "NAME                 CIDR            SELECTOR        LIST   MISSING",
        "blue                 10.244.0.0/16   -               a,b    -",
        "a-much-longer-name   10.9.0.0/24     zone=a,rack=1   -      -",
        "",
      ].join("\n"),
    );
    assert.equal(renderTable([], [["NAME", "name"]]), "NAME\n", "headers even when empty");
  });
});
