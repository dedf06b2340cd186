// IPv4 arithmetic: exhaustive where the space is small, and the ground truth
// for overlap/containment is computed from address sets, not the same formula.
import assert from "node:assert/strict";
import {
  cidrSize,
  containsAddress,
  containsCidr,
  formatCidr,
  hostAddress,
  intToIp,
  ipToInt,
  isIPv4,
  lastAddress,
  normalizeMac,
  nthSubnet,
  overlaps,
  parseCidr,
  subnetCount,
  subnetIndex,
  type Cidr,
} from "../../pkg/ip/index.js";

const mask = (prefix: number) => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** Every aligned CIDR with prefix ≥ minPrefix inside [from, to] (inclusive addresses). */
function cidrsIn(from: number, to: number, minPrefix: number): Cidr[] {
  const out: Cidr[] = [];
  for (let prefix = minPrefix; prefix <= 32; prefix++) {
    const step = 2 ** (32 - prefix);
    for (let base = from; base + step - 1 <= to; base += step) if (base % step === 0) out.push({ base, prefix });
  }
  return out;
}

function addressSet(c: Cidr): Set<number> {
  const s = new Set<number>();
  for (let i = 0; i < 2 ** (32 - c.prefix); i++) s.add(c.base + i);
  return s;
}

describe("ip: IPv4 addresses and CIDRs", () => {
  it("address text and integers round trip, including 0.0.0.0 and 255.255.255.255", () => {
    const edges: [string, number][] = [["0.0.0.0", 0], ["0.0.0.1", 1], ["127.255.255.255", 0x7fffffff], ["128.0.0.0", 0x80000000], ["255.255.255.254", 0xfffffffe], ["255.255.255.255", 0xffffffff]];
    for (const [text, n] of edges) {
      assert.equal(ipToInt(text), n, text);
      assert.equal(intToIp(n), text);
    }
    // Every octet value in every position.
    for (let pos = 0; pos < 4; pos++) {
      for (let v = 0; v < 256; v++) {
        const octets = [10, 20, 30, 40];
        octets[pos] = v;
        const text = octets.join(".");
        assert.equal(intToIp(ipToInt(text)), text);
        assert.ok(ipToInt(text) >= 0, "unsigned");
      }
    }
    for (const bad of ["", "1.2.3", "1.2.3.4.5", "256.0.0.0", "1.2.3.-1", "01.2.3.4", "0x0a.0.0.0", "1.2.3.4 ", "::1", "a.b.c.d"]) {
      assert.equal(isIPv4(bad), false, JSON.stringify(bad));
      assert.throws(() => ipToInt(bad), /is not an IPv4 address/, JSON.stringify(bad));
    }
  });

  it("parses and formats every prefix length round trip, from /0 to /32", () => {
    for (const addr of ["255.255.255.255", "10.244.37.129", "192.168.1.1", "0.0.0.0", "128.0.0.1"]) {
      for (let prefix = 0; prefix <= 32; prefix++) {
        const base = (ipToInt(addr) & mask(prefix)) >>> 0;
        const text = `${intToIp(base)}/${prefix}`;
        const c = parseCidr(text);
        assert.deepEqual(c, { base, prefix }, text);
        assert.equal(formatCidr(c), text);
        assert.equal(cidrSize(c), 2 ** (32 - prefix));
        assert.equal(lastAddress(c), base + 2 ** (32 - prefix) - 1);
      }
    }
    assert.equal(lastAddress(parseCidr("0.0.0.0/0")), 0xffffffff);
    assert.equal(cidrSize(parseCidr("255.255.255.255/32")), 1);
    assert.equal(formatCidr(parseCidr(" 10.0.0.0/8\n")), "10.0.0.0/8", "surrounding whitespace is trimmed");
  });

  it("rejects host bits at every prefix length and suggests the network address", () => {
    for (let prefix = 0; prefix < 32; prefix++) {
      // The lowest host bit, and all host bits.
      for (const addr of [2 ** (31 - prefix), 0xffffffff]) {
        const text = `${intToIp(addr)}/${prefix}`;
        const want = `${intToIp((addr & mask(prefix)) >>> 0)}/${prefix}`;
        assert.throws(() => parseCidr(text), (err: Error) => err.message === `"${text}" has host bits set; did you mean ${want}?`, text);
      }
    }
  });

  it("rejects garbage, IPv6 and bad prefixes, saying which", () => {
    const cases: [string, RegExp][] = [
      ["", /is not a CIDR \(expected a\.b\.c\.d\/n\)/],
      ["10.0.0.0", /not a CIDR \(expected/],
      ["10.0.0.0/", /not a CIDR \(expected/],
      ["/8", /not a CIDR \(expected/],
      ["10.0.0.0/-1", /not a CIDR \(expected/],
      ["10.0.0.0/8/8", /not a CIDR/],
      ["10.0.0.0/123", /not a CIDR \(expected/],
      ["10.0.0.0/33", /prefix length 33 is more than 32/],
      ["10.0.0.0/99", /prefix length 99 is more than 32/],
      ["fd00::/8", /IPv6; only IPv4/],
      ["::ffff:10.0.0.0/8", /IPv6; only IPv4/],
      ["10.0.0.256/24", /"10\.0\.0\.256" is not an IPv4 address/],
      ["010.0.0.0/8", /"010\.0\.0\.0" is not an IPv4 address/],
      ["10.0.0/8", /is not an IPv4 address/],
      ["10.0.0.0 /8", /is not an IPv4 address/],
      ["ten.0.0.0/8", /is not an IPv4 address/],
    ];
    for (const [text, message] of cases) assert.throws(() => parseCidr(text), message, JSON.stringify(text));
  });

  it("overlaps and containment agree with address sets for every CIDR around an octet boundary", () => {
    // 10.0.255.192 .. 10.1.0.63: 128 addresses straddling the third-octet carry.
    const all = cidrsIn(ipToInt("10.0.255.192"), ipToInt("10.1.0.63"), 26);
    assert.equal(all.length, 2 + 4 + 8 + 16 + 32 + 64 + 128);
    const sets = all.map(addressSet);
    for (let i = 0; i < all.length; i++) {
      for (let j = 0; j < all.length; j++) {
        let shared = 0;
        for (const a of sets[j]) if (sets[i].has(a)) shared++;
        const name = `${formatCidr(all[i])} vs ${formatCidr(all[j])}`;
        assert.equal(overlaps(all[i], all[j]), shared > 0, name);
        assert.equal(containsCidr(all[i], all[j]), shared === sets[j].size, name);
      }
    }
  });

  it("overlaps and containment at the ends of the address space and the sign bit", () => {
    const c = parseCidr;
    assert.ok(overlaps(c("0.0.0.0/0"), c("255.255.255.255/32")));
    assert.ok(overlaps(c("255.255.255.255/32"), c("0.0.0.0/0")));
    assert.ok(containsCidr(c("0.0.0.0/0"), c("0.0.0.0/0")));
    assert.ok(containsCidr(c("0.0.0.0/0"), c("255.255.255.255/32")));
    assert.ok(containsCidr(c("128.0.0.0/1"), c("255.255.255.255/32")));
    assert.ok(!overlaps(c("0.0.0.0/1"), c("128.0.0.0/1")));
    assert.ok(!overlaps(c("127.255.255.255/32"), c("128.0.0.0/1")));
    assert.ok(!containsCidr(c("0.0.0.0/1"), c("128.0.0.0/32")));
    assert.ok(!overlaps(c("10.244.0.0/16"), c("10.245.0.0/16")), "adjacent blocks do not overlap");
    assert.ok(!containsCidr(c("10.0.0.0/24"), c("10.0.0.0/8")), "the smaller block does not contain the larger");
    for (const [addr, inside] of [["9.255.255.255", false], ["10.0.0.0", true], ["10.255.255.255", true], ["11.0.0.0", false]] as const) {
      assert.equal(containsAddress(c("10.0.0.0/8"), ipToInt(addr)), inside, addr);
    }
    assert.ok(containsAddress(c("0.0.0.0/0"), 0xffffffff));
    assert.ok(containsAddress(c("0.0.0.0/0"), 0));
  });

  it("nthSubnet and subnetIndex are inverse for every subnet of small pools at every size", () => {
    for (const pool of ["10.0.0.0/24", "192.168.0.0/22", "10.0.255.0/24", "255.255.255.0/24", "0.0.0.0/28", "128.0.0.0/25"].map(parseCidr)) {
      for (let prefix = pool.prefix; prefix <= 32; prefix++) {
        const n = subnetCount(pool, prefix);
        assert.equal(n, 2 ** (prefix - pool.prefix));
        let expectedBase = pool.base;
        for (let i = 0; i < n; i++) {
          const s = nthSubnet(pool, prefix, i);
          assert.deepEqual(s, { base: expectedBase, prefix }, `${formatCidr(pool)} /${prefix} #${i}`);
          assert.ok(containsCidr(pool, s));
          assert.equal(subnetIndex(pool, prefix, s), i);
          assert.equal(subnetIndex(pool, prefix, parseCidr(formatCidr(s))), i, "through text");
          expectedBase += 2 ** (32 - prefix);
        }
        assert.equal(expectedBase - 1, lastAddress(pool), "the subnets tile the pool");
        for (const bad of [-1, n, 0.5, NaN]) assert.throws(() => nthSubnet(pool, prefix, bad), RangeError, `index ${bad}`);
      }
    }
  });

  it("subnetIndex is -1 for anything that is not one of the pool's subnets", () => {
    const pool = parseCidr("10.0.0.0/24");
    assert.equal(subnetIndex(pool, 26, parseCidr("10.0.0.64/27")), -1, "wrong size");
    assert.equal(subnetIndex(pool, 26, parseCidr("10.0.1.0/26")), -1, "just past the end");
    assert.equal(subnetIndex(pool, 26, parseCidr("9.255.255.192/26")), -1, "just before the start");
    assert.equal(subnetIndex(pool, 23, parseCidr("10.0.0.0/23")), -1, "larger than the pool");
    assert.equal(subnetIndex(pool, 26, { base: pool.base + 5, prefix: 26 }), -1, "hand-built with host bits set");
    assert.equal(subnetCount(pool, 23), 0);
    assert.equal(subnetCount(pool, 33), 0);
    assert.equal(subnetCount(parseCidr("0.0.0.0/0"), 32), 2 ** 32);
  });

  it("hostAddress counts from the network address and stays inside the block", () => {
    const s = parseCidr("10.244.3.0/24");
    assert.equal(hostAddress(s, 0), "10.244.3.0");
    assert.equal(hostAddress(s, 1), "10.244.3.1");
    assert.equal(hostAddress(s, 255), "10.244.3.255");
    assert.equal(hostAddress(parseCidr("255.255.255.255/32"), 0), "255.255.255.255");
    assert.equal(hostAddress(parseCidr("0.0.0.0/0"), 0xffffffff), "255.255.255.255");
    for (const bad of [-1, 256, 1.5]) assert.throws(() => hostAddress(s, bad), RangeError, String(bad));
  });

  it("normalises unicast MACs and rejects the rest", () => {
    const good: [string, string][] = [
      ["02:aa:bb:cc:dd:ee", "02:aa:bb:cc:dd:ee"],
      ["02-AA-bb-CC-dd-EE", "02:aa:bb:cc:dd:ee"],
      [" 0A:00:00:00:00:01\n", "0a:00:00:00:00:01"],
      ["fe:ff:ff:ff:ff:ff", "fe:ff:ff:ff:ff:ff"],
    ];
    for (const [input, want] of good) assert.equal(normalizeMac(input), want, input);
    const bad = [
      "00:00:00:00:00:00", // zero
      "ff:ff:ff:ff:ff:ff", // broadcast
      "01:00:5e:00:00:01", // multicast (low bit of the first octet)
      "03:aa:bb:cc:dd:ee",
      "02:aa:bb:cc:dd",
      "02:aa:bb:cc:dd:ee:ff",
      "02aabbccddee",
      "02:aa-bb:cc-dd:ee", // mixed separators
      "2:aa:bb:cc:dd:ee",
      "zz:aa:bb:cc:dd:ee",
      "",
    ];
    for (const input of bad) assert.equal(normalizeMac(input), undefined, input);
    // Every first octet: unicast exactly when its low bit is clear.
    for (let b = 0; b < 256; b++) {
      const mac = `${b.toString(16).padStart(2, "0")}:00:00:00:00:01`;
      assert.equal(normalizeMac(mac) !== undefined, (b & 1) === 0, mac);
    }
  });
});
