// Subnet choice (pure): exhaustive on small pools, with random node names from
// a seeded generator so a failure can be replayed.
import assert from "node:assert/strict";
import { formatCidr, nthSubnet, parseCidr } from "../../pkg/ip/index.js";
import { chooseSubnet, isPoolSubnet, poolCapacity, stableHash, type Pool } from "../../pkg/ipam/index.js";

/** mulberry32: small, seeded, good enough to vary names and orders. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomName(rand: () => number): string {
  const len = 1 + Math.floor(rand() * 20);
  let s = "";
  for (let i = 0; i < len; i++) s += "abcdefghijklmnopqrstuvwxyz0123456789-."[Math.floor(rand() * 38)];
  return s;
}

function allSubnets(pool: Pool): string[] {
  return Array.from({ length: poolCapacity(pool) }, (_, i) => formatCidr(nthSubnet(pool.cidr, pool.nodePrefixLength, i)));
}

/** Strings that are not canonical subnets of `pool` and so must not count as taking one. */
function strangers(pool: Pool): string[] {
  const first = allSubnets(pool)[0];
  return ["", "garbage", "192.168.0.0/24", "10.255.0.0/30", ` ${first}`, `${first}\n`, first.replace(/\/\d+$/, `/${pool.nodePrefixLength === 32 ? 31 : pool.nodePrefixLength + 1}`)];
}

const SEED = 20261122;

describe("ipam: choosing subnets", () => {
  it("hands out every subnet of every small pool exactly once, then nothing", () => {
    const rand = rng(SEED);
    let pools = 0;
    for (let poolPrefix = 24; poolPrefix <= 28; poolPrefix++) {
      // A different, aligned base for each pool size, some across an octet boundary.
      const cidr = parseCidr(`10.${poolPrefix}.${poolPrefix % 2 ? 255 : 0}.0/${poolPrefix}`);
      for (let nodePrefix = poolPrefix; nodePrefix <= 30; nodePrefix++) {
        pools++;
        const pool: Pool = { cidr, nodePrefixLength: nodePrefix };
        const expected = allSubnets(pool);
        const taken = new Set<string>(strangers(pool));
        const handed: string[] = [];
        for (let i = 0; i < expected.length; i++) {
          const node = `${randomName(rand)}-${i}`;
          const s = chooseSubnet(pool, node, taken);
          assert.ok(s !== undefined, `${formatCidr(cidr)} /${nodePrefix}: exhausted after ${i} of ${expected.length} (seed ${SEED})`);
          assert.ok(!taken.has(s), `${s} handed out twice (seed ${SEED})`);
          taken.add(s);
          handed.push(s);
        }
        assert.deepEqual([...handed].sort(), [...expected].sort(), `${formatCidr(cidr)} /${nodePrefix}: every subnet once`);
        assert.equal(chooseSubnet(pool, randomName(rand), taken), undefined, "exhausted");
        assert.equal(chooseSubnet(pool, randomName(rand), taken, expected[0]), undefined, "a taken hint does not beat exhaustion");
      }
    }
    assert.equal(pools, [24, 25, 26, 27, 28].reduce((sum, p) => sum + (30 - p + 1), 0));
  });

  it("gives back exactly the released subnets when some are freed from a full pool", () => {
    const rand = rng(SEED + 1);
    const pool: Pool = { cidr: parseCidr("10.7.0.0/24"), nodePrefixLength: 28 };
    const all = allSubnets(pool);
    for (let round = 0; round < 20; round++) {
      const taken = new Set(all);
      const freed = all.filter(() => rand() < 0.3);
      for (const s of freed) taken.delete(s);
      const got: string[] = [];
      for (let i = 0; i < freed.length; i++) {
        const s = chooseSubnet(pool, randomName(rand), taken)!;
        taken.add(s);
        got.push(s);
      }
      assert.deepEqual(got.sort(), [...freed].sort());
      assert.equal(chooseSubnet(pool, "late", taken), undefined);
    }
  });

  it("is not fooled into exhaustion by strangers in `taken`", () => {
    const pool: Pool = { cidr: parseCidr("10.0.0.0/24"), nodePrefixLength: 26 };
    const [a, b, c, d] = allSubnets(pool);
    // More entries than capacity, but only three are real subnets of the pool; the
    // rest are foreign or non-canonical spellings of real ones.
    const taken = new Set([a, b, c, ` ${a}`, `${d} `, "10.0.0.192/27", "10.0.1.0/26", "x"]);
    assert.ok(taken.size >= poolCapacity(pool));
    assert.equal(chooseSubnet(pool, "n", taken), d);
  });

  it("honours a hint only when it is a free subnet of the pool, spelled canonically", () => {
    const pool: Pool = { cidr: parseCidr("10.0.0.0/16"), nodePrefixLength: 24 };
    const free = new Set<string>();
    assert.equal(chooseSubnet(pool, "n", free, "10.0.7.0/24"), "10.0.7.0/24");
    assert.equal(chooseSubnet(pool, "n", free, "10.0.0.0/24"), "10.0.0.0/24", "first subnet");
    assert.equal(chooseSubnet(pool, "n", free, "10.0.255.0/24"), "10.0.255.0/24", "last subnet");
    const fallback = chooseSubnet(pool, "n", free);
    const rejected: [string, ReadonlySet<string>, string][] = [
      ["10.0.7.0/24", new Set(["10.0.7.0/24"]), "taken"],
      ["10.1.7.0/24", free, "outside the pool"],
      ["9.255.255.0/24", free, "just before the pool"],
      ["10.0.7.0/25", free, "wrong size"],
      ["10.0.7.0/23", free, "wrong size, larger"],
      ["10.0.7.1/24", free, "host bits"],
      ["garbage", free, "not a CIDR"],
      [" 10.0.7.0/24", new Set(["10.0.7.0/24"]), "a second spelling of a taken subnet"],
    ];
    for (const [hint, taken, why] of rejected) {
      const got = chooseSubnet(pool, "n", taken, hint);
      assert.notEqual(got, hint, why);
      assert.ok(got && isPoolSubnet(pool, got) && !taken.has(got) && formatCidr(parseCidr(got)) === got, `${why}: fell back to a free canonical subnet, got ${got}`);
      if (taken === free) assert.equal(got, fallback, `${why}: same as without a hint`);
    }
  });

  it("starts each node at a stable place of its own, so replicas rarely collide", () => {
    const pool: Pool = { cidr: parseCidr("10.0.0.0/16"), nodePrefixLength: 24 };
    const first = new Set(Array.from({ length: 100 }, (_, i) => chooseSubnet(pool, `node-${i}`, new Set())));
    assert.ok(first.size > 70, `only ${first.size} distinct first choices for 100 nodes`);
    assert.equal(chooseSubnet(pool, "same", new Set()), chooseSubnet(pool, "same", new Set()), "stable per node");
    assert.equal(stableHash("a"), stableHash("a"));
    assert.notEqual(stableHash("node-1"), stableHash("node-2"));
    // Its start taken, a node moves on to the next free subnet rather than failing.
    const start = chooseSubnet(pool, "same", new Set())!;
    const next = chooseSubnet(pool, "same", new Set([start]))!;
    assert.notEqual(next, start);
  });

  it("handles /32 node subnets, the whole IPv4 space and impossible pools", () => {
    assert.equal(chooseSubnet({ cidr: parseCidr("10.9.9.9/32"), nodePrefixLength: 32 }, "n", new Set()), "10.9.9.9/32");
    assert.equal(chooseSubnet({ cidr: parseCidr("10.9.9.9/32"), nodePrefixLength: 32 }, "n", new Set(["10.9.9.9/32"])), undefined);
    const world: Pool = { cidr: parseCidr("0.0.0.0/0"), nodePrefixLength: 24 };
    assert.equal(poolCapacity(world), 2 ** 24);
    const s = chooseSubnet(world, "n", new Set())!;
    assert.ok(isPoolSubnet(world, s), s);
    const everyAddress: Pool = { cidr: parseCidr("0.0.0.0/0"), nodePrefixLength: 32 };
    assert.equal(poolCapacity(everyAddress), 2 ** 32);
    assert.ok(isPoolSubnet(everyAddress, chooseSubnet(everyAddress, "n", new Set())!));
    const impossible: Pool = { cidr: parseCidr("10.0.0.0/24"), nodePrefixLength: 23 };
    assert.equal(poolCapacity(impossible), 0);
    assert.equal(chooseSubnet(impossible, "n", new Set()), undefined);
  });
});
