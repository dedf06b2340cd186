// LeasePool: leases granted ahead of joins (pure logic over a counting lease source).
import assert from "node:assert/strict";
import { LeasePool } from "../../pkg/controller/lease-pool.js";
import { silentLogger } from "../../pkg/log/index.js";

const log = silentLogger();

function source() {
  let next = 0;
  const s = { granted: 0, revoked: [] as string[], grantLease: async () => (s.granted++, String(++next)), revokeLease: async (id: string) => void s.revoked.push(id) };
  return s;
}

const settle = () => new Promise((r) => setImmediate(r));

describe("controller lease pool (pure)", () => {
  it("grants at once when empty, then serves the lease it granted ahead as not fresh", async () => {
    const src = source();
    const pool = new LeasePool(src, 30, log, 4);
    const first = await pool.take();
    assert.equal(first.fresh, true, "nothing pooled yet: granted now");
    await settle();
    const second = await pool.take();
    assert.equal(second.fresh, false, "the replacement granted in the background is served from the pool");
    assert.notEqual(second.id, first.id, "a lease is never handed out twice");
    pool.stop();
  });

  it("never hands out a pooled lease older than a sixth of its TTL, and grants nothing once stopped", async () => {
    const src = source();
    const pool = new LeasePool(src, 0.06, log, 4); // a sixth of the TTL: 10 ms
    await pool.take();
    await settle();
    await new Promise((r) => setTimeout(r, 30));
    const taken = await pool.take();
    assert.equal(taken.fresh, true, "the pooled lease was too old: a new one is granted");
    assert.equal(src.revoked.length, 1, "the too old pooled lease is revoked, not left behind");
    assert.ok(!src.revoked.includes(taken.id));
    await settle();
    pool.stop();
    await settle();
    assert.equal(src.revoked.length, 2, "stop revokes what the pool still holds");
    assert.ok(!src.revoked.includes(taken.id));
    const before = src.granted;
    for (let i = 0; i < 3; i++) assert.equal((await pool.take()).fresh, true);
    await settle();
    assert.equal(src.granted - before, 3, "stopped: one grant per take, none ahead");
  });
});
