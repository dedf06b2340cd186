import assert from "node:assert/strict";
import { parseControllerAddresses, PROMPT_RETRIES, ReconnectPolicy } from "../../pkg/agent/reconnect.js";

describe("agent: reconnect schedule", () => {
  it("dials the first address at once, then rotates with growing, capped delays", () => {
    const p = new ReconnectPolicy(["a:1", "b:2", "c:3"], () => 1, 250, 10_000);
    const got = Array.from({ length: 10 }, () => p.next());
    assert.deepEqual(got.map((a) => a.address), ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]);
    assert.deepEqual(got.map((a) => a.delayMs), [0, 250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
  });

  it("jitters each delay within [ceiling/2, ceiling]", () => {
    const low = new ReconnectPolicy(["a:1"], () => 0, 250, 10_000);
    low.next();
    assert.deepEqual([low.next().delayMs, low.next().delayMs, low.next().delayMs], [125, 250, 500]);
    const seq = [0.3, 0.9];
    const mid = new ReconnectPolicy(["a:1"], () => seq.shift()!, 1000, 10_000);
    mid.next();
    assert.equal(mid.next().delayMs, 500 + 0.3 * 500);
    assert.equal(mid.next().delayMs, 1000 + 0.9 * 1000);
  });

  it("after a stream delivered its snapshot, retries PROMPT_RETRIES times at the base delay, never at zero, then grows again", () => {
    const p = new ReconnectPolicy(["a:1", "b:2"], () => 1, 250, 10_000);
    for (let i = 0; i < 8; i++) p.next();
    p.succeeded();
    const after = Array.from({ length: PROMPT_RETRIES + 3 }, () => p.next().delayMs);
    assert.deepEqual(after, [...Array(PROMPT_RETRIES).fill(250), 250, 500, 1000], "a controller that accepts then drops must not cause a busy loop");
    const low = new ReconnectPolicy(["a:1"], () => 0, 250, 10_000);
    low.next();
    low.succeeded();
    assert.equal(low.next().delayMs, 125, "jittered within [base/2, base]");
  });

  it("a failure that never reached a snapshot gets no prompt retries (a refusing or misconfigured controller is not hammered)", () => {
    const p = new ReconnectPolicy(["a:1"], () => 1, 250, 10_000);
    p.next();
    assert.deepEqual([p.next().delayMs, p.next().delayMs, p.next().delayMs], [250, 500, 1000]);
    p.succeeded();
    for (let i = 0; i < PROMPT_RETRIES; i++) p.next();
    assert.equal(p.next().delayMs, 250, "the prompt retries are used up; the ladder starts from the base");
  });

  it("with one address, keeps dialling it", () => {
    const p = new ReconnectPolicy(["only:9400"], () => 0.5);
    assert.deepEqual(new Set(Array.from({ length: 5 }, () => p.next().address)), new Set(["only:9400"]));
  });

  it("needs at least one address", () => {
    assert.throws(() => new ReconnectPolicy([]), /controller: at least one/);
  });
});

describe("agent: --controller parsing", () => {
  it("accepts a comma-separated list of HOST:PORT, names and IPv6 in brackets", () => {
    assert.deepEqual(parseControllerAddresses("10.0.0.1:9400, ctrl.weft-system.svc:9400,[fd00::1]:9400"), ["10.0.0.1:9400", "ctrl.weft-system.svc:9400", "[fd00::1]:9400"]);
    assert.deepEqual(parseControllerAddresses(["a:1", "b:2,c:3"]), ["a:1", "b:2", "c:3"]);
  });
  for (const bad of ["", " , ", "host", "host:", "host:0", "host:70000", ":9400", "a b:1", "fd00::1:9400"]) {
    it(`rejects ${JSON.stringify(bad)} naming the flag`, () => {
      assert.throws(() => parseControllerAddresses(bad), /^Error: controller: /);
    });
  }
});
