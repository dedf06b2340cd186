// Network spec validation (pure): every rule, its boundaries, the defaults,
// and that each message names its field.
import assert from "node:assert/strict";
import { checkNetworkConflicts, validateNetworkSpec, ValidationError, MAX_VNI, MIN_MTU, MAX_MTU, type Problem } from "../../pkg/spec/index.js";
import type { NetworkSpec } from "../../pkg/store/index.js";
import { netSpec } from "../harness/specs.js";

const ok = { name: "blue", cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 };

/** The ValidationError `fn` throws; fails the test when it throws nothing or something else. */
function rejection(fn: () => unknown, what: string): ValidationError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, `${what}: threw ${String(err)}, not a ValidationError`);
    return err;
  }
  assert.fail(`${what}: accepted`);
}

const invalid = (input: unknown) => rejection(() => validateNetworkSpec(input), JSON.stringify(input));

describe("validation: network specs", () => {
  it("applies every default and keeps what was given", () => {
    assert.deepEqual(validateNetworkSpec(ok), { ...ok, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: {}, default: false, flood: false, dns: false });
    const full: NetworkSpec = { name: "red", cidr: "10.9.0.0/16", vni: 7, nodePrefixLength: 26, mode: "switched", mtu: 1400, port: 8472, natOutgoing: false, isolated: false, nodeSelector: { zone: "a" }, default: true, flood: true, dns: true };
    assert.deepEqual(validateNetworkSpec(full), full);
  });

  it("returns a canonical CIDR and copies the selector rather than sharing it", () => {
    assert.equal(validateNetworkSpec({ ...ok, cidr: " 10.244.0.0/16 " }).cidr, "10.244.0.0/16");
    const input = { ...ok, nodeSelector: { zone: "a" } };
    const spec = validateNetworkSpec(input);
    spec.nodeSelector.zone = "b";
    assert.equal(input.nodeSelector.zone, "a");
  });

  it("accepts the boundaries of every ranged field", () => {
    const good: Record<string, unknown>[] = [
      { vni: 1 }, { vni: MAX_VNI },
      { mtu: 0 }, { mtu: MIN_MTU }, { mtu: MAX_MTU }, { mtu: 1450 },
      { port: 1 }, { port: 65535 },
      { cidr: "10.0.0.0/29", nodePrefixLength: 30 }, { cidr: "0.0.0.0/0", nodePrefixLength: 1 }, { nodePrefixLength: 17 },
      { name: "a" }, { name: "a".repeat(63) }, { name: "0" }, { name: "a-0-b" },
      { mode: "routed" }, { mode: "switched" },
      { natOutgoing: false, isolated: false, default: true },
      { nodeSelector: { "kubernetes.io/hostname": "node-1", zone: "", "a.b/c_d": "x.y-z" } },
    ];
    for (const change of good) assert.doesNotThrow(() => validateNetworkSpec({ ...ok, ...change }), JSON.stringify(change));
  });

  it("rejects each bad value with a message that names the field", () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      // name: a DNS-1123 label.
      [{ name: undefined }, "name", /required/],
      [{ name: "" }, "name", /required/],
      [{ name: 5 }, "name", /must be a string, got 5/],
      [{ name: null }, "name", /must be a string, got null/],
      [{ name: "a".repeat(64) }, "name", /not a DNS label .*at most 63/],
      [{ name: "Blue" }, "name", /"Blue" is not a DNS label/],
      [{ name: "blue_1" }, "name", /DNS label/],
      [{ name: "-blue" }, "name", /DNS label/],
      [{ name: "blue-" }, "name", /DNS label/],
      [{ name: "blue.net" }, "name", /DNS label/],
      // cidr: pkg/ip's explanation is kept.
      [{ cidr: undefined }, "cidr", /required, e\.g\. 10\.244\.0\.0\/16/],
      [{ cidr: "" }, "cidr", /required/],
      [{ cidr: 5 }, "cidr", /must be a string such as 10\.244\.0\.0\/16, got 5/],
      [{ cidr: "10.244.0.1/16" }, "cidr", /host bits set; did you mean 10\.244\.0\.0\/16\?/],
      [{ cidr: "fd00::/8" }, "cidr", /IPv6; only IPv4/],
      [{ cidr: "10.244.0.0" }, "cidr", /not a CIDR/],
      [{ cidr: "10.300.0.0/16" }, "cidr", /not an IPv4 address/],
      [{ cidr: "10.0.0.0/33" }, "cidr", /more than 32/],
      // vni: integer 1..16777215.
      [{ vni: undefined }, "vni", /required, 1-16777215/],
      [{ vni: 0 }, "vni", /must be an integer from 1 to 16777215, got 0/],
      [{ vni: -1 }, "vni", /from 1 to 16777215/],
      [{ vni: MAX_VNI + 1 }, "vni", /got 16777216/],
      [{ vni: 4.5 }, "vni", /integer/],
      [{ vni: "42" }, "vni", /got "42"/],
      [{ vni: null }, "vni", /got null/],
      [{ vni: Number.NaN }, "vni", /integer/],
      // nodePrefixLength: longer than the cidr's prefix, at most /30.
      [{ nodePrefixLength: undefined }, "nodePrefixLength", /required/],
      [{ nodePrefixLength: 16 }, "nodePrefixLength", /must be longer than the cidr's prefix \/16, got 16/],
      [{ nodePrefixLength: 8 }, "nodePrefixLength", /longer than the cidr's prefix \/16/],
      [{ cidr: "10.0.0.0/30", nodePrefixLength: 30 }, "nodePrefixLength", /longer than the cidr's prefix \/30/],
      [{ nodePrefixLength: 31 }, "nodePrefixLength", /from 1 to 30 \(a node subnet needs room for network, gateway, pods and broadcast\)/],
      [{ nodePrefixLength: 32 }, "nodePrefixLength", /from 1 to 30/],
      [{ nodePrefixLength: 0 }, "nodePrefixLength", /from 1 to 30/],
      [{ nodePrefixLength: 24.5 }, "nodePrefixLength", /integer/],
      [{ nodePrefixLength: "24" }, "nodePrefixLength", /got "24"/],
      // mode.
      [{ mode: "bridged" }, "mode", /must be "routed" or "switched", got "bridged"/],
      [{ mode: "Routed" }, "mode", /routed/],
      [{ mode: 1 }, "mode", /got 1/],
      // mtu: 0 or 576..9000.
      [{ mtu: 1 }, "mtu", /must be 0 \(uplink MTU - 50\) or an integer from 576 to 9000, got 1/],
      [{ mtu: MIN_MTU - 1 }, "mtu", /got 575/],
      [{ mtu: MAX_MTU + 1 }, "mtu", /got 9001/],
      [{ mtu: -1 }, "mtu", /576 to 9000/],
      [{ mtu: 1400.5 }, "mtu", /integer/],
      [{ mtu: "1400" }, "mtu", /got "1400"/],
      // port.
      [{ port: 0 }, "port", /must be an integer from 1 to 65535, got 0/],
      [{ port: 65536 }, "port", /got 65536/],
      [{ port: 4789.5 }, "port", /integer/],
      [{ port: "4789" }, "port", /got "4789"/],
      // booleans.
      [{ natOutgoing: "false" }, "natOutgoing", /must be true or false, got "false"/],
      [{ isolated: 0 }, "isolated", /must be true or false, got 0/],
      [{ default: "yes" }, "default", /must be true or false/],
      [{ flood: "yes", mode: "switched" }, "flood", /must be true or false, got "yes"/],
      [{ dns: 1 }, "dns", /must be true or false, got 1/],
      // flooding needs an L2 segment.
      [{ flood: true }, "flood", /only for mode "switched" \(mode is "routed"\)/],
      [{ flood: true, mode: "routed" }, "flood", /only for mode "switched"/],
      // nodeSelector: a map of label names to label values.
      [{ nodeSelector: ["zone=a"] }, "nodeSelector", /must be a map of label names to values/],
      [{ nodeSelector: "zone=a" }, "nodeSelector", /must be a map/],
      [{ nodeSelector: null }, "nodeSelector", /must be a map/],
      [{ nodeSelector: { zone: 5 } }, "nodeSelector.zone", /value 5 is not a valid label value/],
      [{ nodeSelector: { zone: "a b" } }, "nodeSelector.zone", /not a valid label value/],
      [{ nodeSelector: { zone: "x".repeat(64) } }, "nodeSelector.zone", /not a valid label value/],
      [{ nodeSelector: { "bad key": "a" } }, "nodeSelector.bad key", /is not a valid label name/],
      [{ nodeSelector: { "/zone": "a" } }, "nodeSelector./zone", /label name/],
      // unknown fields, e.g. a typo.
      [{ mtuu: 1400 }, "mtuu", /unknown field \(known: name, cidr, vni, nodePrefixLength, mode, mtu, port, natOutgoing, isolated, nodeSelector, default, flood, dns\)/],
      [{ status: {} }, "status", /unknown field/],
    ];
    for (const [change, field, message] of cases) {
      const err = invalid({ ...ok, ...change });
      const what = JSON.stringify(change);
      assert.deepEqual(err.problems.map((p) => p.field), [`spec.${field}`], `${what}: exactly one problem, on spec.${field}`);
      assert.match(err.problems[0].message, message, what);
      assert.equal(err.message, `spec.${field}: ${err.problems[0].message}`, what);
    }
  });

  it("rejects input that is not an object", () => {
    for (const input of [null, undefined, "blue", 42, true, [ok]]) {
      const err = invalid(input);
      assert.deepEqual(err.problems, [{ field: "spec", message: "must be an object" }]);
      assert.equal(err.message, "spec: must be an object");
    }
  });

  it("lists every problem at once, joined with '; '", () => {
    const err = invalid({ name: "X", vni: -1, mode: "bridged", extra: 1 });
    assert.deepEqual(err.problems.map((p) => p.field).sort(), ["spec.cidr", "spec.extra", "spec.mode", "spec.name", "spec.nodePrefixLength", "spec.vni"]);
    assert.equal(err.message, err.problems.map((p) => `${p.field}: ${p.message}`).join("; "));
    assert.equal(err.name, "ValidationError");
  });
});

describe("validation: conflicts between networks", () => {
  const blue = netSpec("blue", "10.244.0.0/16", 42, { default: true });
  const green = netSpec("green", "10.9.0.0/24", 9);

  function problems(spec: NetworkSpec, others: NetworkSpec[] = [blue, green], existing?: NetworkSpec): Problem[] {
    try {
      checkNetworkConflicts(spec, others, existing);
      return [];
    } catch (err) {
      assert.ok(err instanceof ValidationError, String(err));
      return err.problems;
    }
  }

  it("accepts a network that shares nothing with the others", () => {
    assert.deepEqual(problems(netSpec("red", "10.245.0.0/16", 43)), []);
    assert.deepEqual(problems(netSpec("red", "10.243.255.0/24", 43)), [], "adjacent below");
    assert.deepEqual(problems(netSpec("red", "10.9.1.0/24", 43)), [], "adjacent above");
    assert.deepEqual(problems(netSpec("red", "10.245.0.0/16", 43), []), [], "no other networks");
  });

  it("rejects a VNI used by another network, naming it", () => {
    assert.deepEqual(problems(netSpec("red", "10.245.0.0/16", 42)), [{ field: "spec.vni", message: '42 is already used by network "blue"' }]);
  });

  it("rejects a CIDR overlapping another network's in every way", () => {
    const overlapping: [string, string][] = [
      ["10.244.0.0/16", "blue"], // equal
      ["10.244.128.0/17", "blue"], // inside
      ["10.244.255.252/30", "blue"], // at the far end
      ["10.0.0.0/8", "blue"], // around both
      ["10.9.0.128/25", "green"],
      ["0.0.0.0/0", "blue"],
    ];
    for (const [cidr, other] of overlapping) {
      const found = problems(netSpec("red", cidr, 43)).filter((p) => p.field === "spec.cidr");
      assert.ok(found.some((p) => p.message.startsWith(`${cidr} overlaps `) && p.message.endsWith(` of network "${other}"`)), `${cidr}: ${JSON.stringify(found)}`);
    }
    assert.equal(problems(netSpec("red", "10.0.0.0/8", 43)).filter((p) => p.field === "spec.cidr").length, 2, "one problem per overlapped network");
  });

  it("allows only one default network", () => {
    assert.deepEqual(problems(netSpec("red", "10.245.0.0/16", 43, { default: true })), [{ field: "spec.default", message: 'network "blue" is already the default' }]);
    assert.deepEqual(problems(netSpec("red", "10.245.0.0/16", 43, { default: true }), [green]), [], "no other default");
    assert.deepEqual(problems({ ...blue, mtu: 1400 }, [blue, green], blue), [], "the default may be updated");
  });

  it("ignores the network's own stored copy among the others", () => {
    assert.deepEqual(problems({ ...blue }, [blue, green]), []);
  });

  it("keeps cidr, vni, nodePrefixLength and mode immutable and lets the rest change", () => {
    const red = netSpec("red", "10.245.0.0/16", 43);
    const immutable: [Partial<NetworkSpec>, string, RegExp][] = [
      [{ cidr: "10.246.0.0/16" }, "spec.cidr", /^is immutable \(nodes hold subnets of it\): was 10\.245\.0\.0\/16, got 10\.246\.0\.0\/16; delete and recreate the network instead$/],
      [{ cidr: "10.245.0.0/17" }, "spec.cidr", /was 10\.245\.0\.0\/16, got 10\.245\.0\.0\/17/],
      [{ vni: 44 }, "spec.vni", /^is immutable .*was 43, got 44/],
      [{ nodePrefixLength: 25 }, "spec.nodePrefixLength", /^is immutable .*was 24, got 25/],
      [{ mode: "switched" }, "spec.mode", /^is immutable \(pods hold addresses of that model\): was routed, got switched/],
    ];
    for (const [change, field, message] of immutable) {
      const found = problems({ ...red, ...change }, [blue, green], red);
      assert.equal(found.length, 1, JSON.stringify(found));
      assert.equal(found[0].field, field);
      assert.match(found[0].message, message);
    }
    const mutable: Partial<NetworkSpec>[] = [{ mtu: 1400 }, { port: 8472 }, { natOutgoing: false }, { isolated: false }, { nodeSelector: { zone: "a" } }];
    for (const change of mutable) assert.deepEqual(problems({ ...red, ...change }, [blue, green], red), [], JSON.stringify(change));
  });

  it("reports every conflict in one error", () => {
    const red = netSpec("red", "10.245.0.0/16", 43);
    const err = rejection(() => checkNetworkConflicts({ ...red, cidr: "10.244.0.0/16", vni: 42, default: true }, [blue], red), "many conflicts");
    assert.deepEqual(err.problems.map((p) => p.field).sort(), ["spec.cidr", "spec.cidr", "spec.default", "spec.vni", "spec.vni"]);
    assert.match(err.message, /^spec\.\w+: .+(; spec\.\w+: .+){4}$/);
  });
});
