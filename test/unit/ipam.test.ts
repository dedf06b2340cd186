// IPv4 arithmetic, subnet choice and network validation: pure, tested
// exhaustively where the space is small.
import assert from "node:assert/strict";
import { checkNetworkConflicts, validateNetworkSpec, ValidationError } from "../../pkg/controller/index.js";
import { containsCidr, formatCidr, hostAddress, intToIp, ipToInt, normalizeMac, nthSubnet, overlaps, parseCidr, subnetCount, subnetIndex } from "../../pkg/ip/index.js";
import { chooseSubnet, isPoolSubnet, poolCapacity, type Pool } from "../../pkg/ipam/index.js";
import { netSpec } from "../harness/specs.js";

describe("ip: IPv4 CIDR arithmetic", () => {
  it("parses and formats round trip, including the edges", () => {
    for (const s of ["0.0.0.0/0", "10.244.0.0/16", "255.255.255.255/32", "192.168.1.128/25", "128.0.0.0/1"]) assert.equal(formatCidr(parseCidr(s)), s);
    assert.equal(ipToInt("255.255.255.255"), 0xffffffff);
    assert.equal(intToIp(ipToInt("1.2.3.4")), "1.2.3.4");
  });

  it("rejects bad CIDRs with a reason", () => {
    assert.throws(() => parseCidr("10.244.1.5/16"), /host bits set; did you mean 10\.244\.0\.0\/16/);
    assert.throws(() => parseCidr("fd00::/64"), /IPv6/);
    assert.throws(() => parseCidr("10.0.0.0/33"), /more than 32/);
    assert.throws(() => parseCidr("10.0.0.0"), /not a CIDR/);
    assert.throws(() => parseCidr("10.0.0.256/24"), /not an IPv4 address/);
    assert.throws(() => parseCidr("010.0.0.0/8"), /not an IPv4 address/);
  });

  it("overlap and containment across boundaries", () => {
    const a = parseCidr("10.0.0.0/24");
    assert.ok(overlaps(a, parseCidr("10.0.0.255/32")));
    assert.ok(!overlaps(a, parseCidr("10.0.1.0/32")));
    assert.ok(overlaps(parseCidr("0.0.0.0/0"), parseCidr("255.255.255.255/32")));
    assert.ok(containsCidr(parseCidr("10.0.0.0/8"), a));
    assert.ok(!containsCidr(a, parseCidr("10.0.0.0/8")));
  });

  it("nthSubnet and subnetIndex are inverse for every subnet of small pools", () => {
    for (const pool of ["10.0.0.0/24", "192.168.0.0/22", "255.255.255.0/24", "0.0.0.0/28"].map(parseCidr)) {
      for (let prefix = pool.prefix; prefix <= 32; prefix++) {
        const n = subnetCount(pool, prefix);
        assert.equal(n, 2 ** (prefix - pool.prefix));
        for (let i = 0; i < Math.min(n, 1024); i++) assert.equal(subnetIndex(pool, prefix, nthSubnet(pool, prefix, i)), i);
        assert.throws(() => nthSubnet(pool, prefix, n), RangeError);
      }
    }
    assert.equal(hostAddress(parseCidr("10.244.3.0/24"), 1), "10.244.3.1");
  });

  it("normalises unicast MACs and rejects the rest", () => {
    assert.equal(normalizeMac("02-AA-bb-CC-dd-EE"), "02:aa:bb:cc:dd:ee");
    for (const bad of ["00:00:00:00:00:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "02:aa:bb:cc:dd", "zz:aa:bb:cc:dd:ee"]) assert.equal(normalizeMac(bad), undefined, bad);
  });
});

describe("ipam: choosing subnets", () => {
  it("hands out every subnet of small pools exactly once, then reports exhaustion", () => {
    for (const poolText of ["10.0.0.0/24", "10.1.0.0/26", "10.2.0.0/28"]) {
      const cidr = parseCidr(poolText);
      for (let nodePrefix = cidr.prefix; nodePrefix <= 30; nodePrefix++) {
        const pool: Pool = { cidr, nodePrefixLength: nodePrefix };
        const capacity = poolCapacity(pool);
        const taken = new Set<string>(["not-a-subnet", "192.168.0.0/24"]); // strangers are ignored
        for (let i = 0; i < capacity; i++) {
          const s = chooseSubnet(pool, `node-${i}-${nodePrefix}`, taken);
          assert.ok(s, `${poolText} /${nodePrefix}: exhausted after ${i} of ${capacity}`);
          assert.ok(isPoolSubnet(pool, s));
          assert.ok(!taken.has(s), `${s} handed out twice`);
          taken.add(s);
        }
        assert.equal(chooseSubnet(pool, "one-too-many", taken), undefined);
        assert.equal(taken.size - 2, capacity);
      }
    }
  });

  it("honours the hint only when it is a free subnet of the pool", () => {
    const pool: Pool = { cidr: parseCidr("10.0.0.0/16"), nodePrefixLength: 24 };
    assert.equal(chooseSubnet(pool, "n", new Set(), "10.0.7.0/24"), "10.0.7.0/24");
    assert.notEqual(chooseSubnet(pool, "n", new Set(["10.0.7.0/24"]), "10.0.7.0/24"), "10.0.7.0/24");
    assert.notEqual(chooseSubnet(pool, "n", new Set(), "10.1.7.0/24"), "10.1.7.0/24", "outside the pool");
    assert.notEqual(chooseSubnet(pool, "n", new Set(), "10.0.7.0/25"), "10.0.7.0/25", "wrong size");
    assert.notEqual(chooseSubnet(pool, "n", new Set(), "garbage"), "garbage");
  });

  it("starts different nodes at different places (few collisions between replicas)", () => {
    const pool: Pool = { cidr: parseCidr("10.0.0.0/16"), nodePrefixLength: 24 };
    const first = new Set(Array.from({ length: 100 }, (_, i) => chooseSubnet(pool, `node-${i}`, new Set())));
    assert.ok(first.size > 70, `only ${first.size} distinct first choices for 100 nodes`);
    assert.equal(chooseSubnet(pool, "same", new Set()), chooseSubnet(pool, "same", new Set()), "stable per node");
  });

  it("works for a /32 node prefix and the whole IPv4 space", () => {
    assert.equal(chooseSubnet({ cidr: parseCidr("10.9.9.9/32"), nodePrefixLength: 32 }, "n", new Set()), "10.9.9.9/32");
    assert.equal(poolCapacity({ cidr: parseCidr("0.0.0.0/0"), nodePrefixLength: 24 }), 2 ** 24);
    assert.match(chooseSubnet({ cidr: parseCidr("0.0.0.0/0"), nodePrefixLength: 24 }, "n", new Set())!, /\.0\/24$/);
  });
});

describe("validation: network specs", () => {
  const ok = { name: "blue", cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 };
  const problem = (input: unknown) => {
    try {
      validateNetworkSpec(input);
    } catch (err) {
      assert.ok(err instanceof ValidationError);
      return err.message;
    }
    assert.fail(`accepted ${JSON.stringify(input)}`);
  };

  it("applies defaults", () => {
    assert.deepEqual(validateNetworkSpec(ok), { ...ok, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: {}, default: false });
  });

  it("rejects each bad field, naming it", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ name: undefined }, /spec\.name: required/],
      [{ name: "Blue_1" }, /spec\.name: .*DNS label/],
      [{ name: "a".repeat(64) }, /spec\.name/],
      [{ cidr: "10.244.0.1/16" }, /spec\.cidr: .*host bits/],
      [{ cidr: "fd00::/8" }, /spec\.cidr: .*IPv6/],
      [{ cidr: 5 }, /spec\.cidr: required/],
      [{ nodePrefixLength: 16 }, /spec\.nodePrefixLength: must be longer than the cidr's prefix \/16/],
      [{ nodePrefixLength: 31 }, /spec\.nodePrefixLength: must be an integer from 1 to 30/],
      [{ nodePrefixLength: 24.5 }, /spec\.nodePrefixLength/],
      [{ vni: 0 }, /spec\.vni: must be an integer from 1 to 16777215/],
      [{ vni: 16777216 }, /spec\.vni/],
      [{ vni: "42" }, /spec\.vni/],
      [{ mode: "bridged" }, /spec\.mode/],
      [{ mtu: 100 }, /spec\.mtu/],
      [{ mtu: 9001 }, /spec\.mtu/],
      [{ port: 0 }, /spec\.port/],
      [{ natOutgoing: "yes" }, /spec\.natOutgoing/],
      [{ nodeSelector: ["a"] }, /spec\.nodeSelector/],
      [{ nodeSelector: { zone: 5 } }, /spec\.nodeSelector\.zone/],
      [{ colour: "red" }, /spec\.colour: unknown field/],
    ];
    for (const [change, message] of cases) assert.match(problem({ ...ok, ...change }), message, JSON.stringify(change));
    assert.match(problem("nope"), /spec: must be an object/);
    const all = problem({ name: "X", vni: -1 });
    assert.ok(all.includes("spec.name") && all.includes("spec.vni") && all.includes("spec.cidr"), "every problem is listed");
  });

  it("checks conflicts with other networks and immutable fields", () => {
    const blue = netSpec("blue", "10.244.0.0/16", 42, { default: true });
    const conflict = (spec: ReturnType<typeof netSpec>, existing?: ReturnType<typeof netSpec>) => {
      try {
        checkNetworkConflicts(spec, [blue], existing);
        return "";
      } catch (err) {
        return (err as Error).message;
      }
    };
    assert.match(conflict(netSpec("red", "10.245.0.0/16", 42)), /spec\.vni: 42 is already used by network "blue"/);
    assert.match(conflict(netSpec("red", "10.244.128.0/17", 43)), /spec\.cidr: 10\.244\.128\.0\/17 overlaps 10\.244\.0\.0\/16 of network "blue"/);
    assert.match(conflict(netSpec("red", "10.0.0.0/8", 43)), /spec\.cidr: .*overlaps/);
    assert.match(conflict(netSpec("red", "10.245.0.0/16", 43, { default: true })), /spec\.default/);
    assert.equal(conflict(netSpec("red", "10.245.0.0/16", 43)), "");
    const red = netSpec("red", "10.245.0.0/16", 43);
    assert.match(conflict({ ...red, nodePrefixLength: 25 }, red), /spec\.nodePrefixLength: is immutable/);
    assert.match(conflict({ ...red, cidr: "10.246.0.0/16" }, red), /spec\.cidr: is immutable/);
    assert.equal(conflict({ ...red, mtu: 1400 }, red), "", "mtu may change");
  });
});
