import assert from "node:assert/strict";
import { ApplyLoop } from "../../pkg/agent/apply-loop.js";
import type { ApplyReason } from "../../pkg/dataplane/types.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";

/** A flush that finishes only when the test says so, recording what it was asked and what was pending then. */
class GatedFlush {
  calls: { reason: ApplyReason; pending: number }[] = [];
  private gates: { resolve: (r: number) => void; reject: (e: Error) => void }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** What the agent would have queued (the "revision" of the newest change). */
  pending = 0;
  flush = (reason: ApplyReason): Promise<number> => {
    this.calls.push({ reason, pending: this.pending });
    const covered = this.pending;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<number>((resolve, reject) => this.gates.push({ resolve: () => resolve(covered), reject })).finally(() => this.inFlight--);
  };
  async finish(): Promise<void> {
    await waitFor("a flush to be running", () => this.gates.length > 0, 5000, 2);
    this.gates.shift()!.resolve(0);
  }
  async fail(msg: string): Promise<void> {
    await waitFor("a flush to be running", () => this.gates.length > 0, 5000, 2);
    this.gates.shift()!.reject(new Error(msg));
  }
}

describe("agent: apply loop", () => {
  let f: GatedFlush;
  let loop: ApplyLoop<number>;
  let applied: { covered: number; reason: ApplyReason }[];
  let failed: string[];
  let clock = 0;

  function make(resyncIntervalMs = 0): void {
    f = new GatedFlush();
    applied = [];
    failed = [];
    clock = 1000;
    loop = new ApplyLoop<number>({
      flush: f.flush,
      log: silentLogger(),
      resyncIntervalMs,
      retryBaseMs: 5,
      retryCapMs: 20,
      now: () => clock,
      onApplied: (covered, reason) => void applied.push({ covered, reason }),
      onFailed: (err) => void failed.push(err.message),
    });
    loop.start();
  }
  const change = (rev: number) => {
    f.pending = rev;
    loop.submit();
  };
  afterEach(async () => {
    const stopping = loop.stop();
    while (f.inFlight > 0) await f.finish();
    await stopping;
  });

  it("never runs two flushes at once, and a burst arriving meanwhile is one more flush, not one each", async () => {
    make();
    change(1);
    for (let r = 2; r <= 6; r++) change(r);
    await f.finish();
    await f.finish();
    await waitFor("idle", () => loop.idle);
    assert.equal(f.maxInFlight, 1);
    assert.deepEqual(f.calls, [{ reason: "update", pending: 1 }, { reason: "update", pending: 6 }]);
    assert.deepEqual(applied.map((a) => a.covered), [1, 6]);
  });

  it("retries a failed flush with backoff until it succeeds, and reports each failure", async () => {
    make();
    change(1);
    await f.fail("ENOBUFS");
    await f.fail("ENOBUFS again");
    await f.finish();
    await waitFor("idle", () => loop.idle);
    assert.deepEqual(failed, ["ENOBUFS", "ENOBUFS again"]);
    assert.equal(f.calls.length, 3);
    assert.deepEqual(applied.map((a) => a.covered), [1]);
  });

  it("a retry covers what arrived during the failure", async () => {
    make();
    change(1);
    change(2);
    await f.fail("boom");
    await f.finish();
    await waitFor("idle", () => loop.idle);
    assert.deepEqual(applied.map((a) => a.covered), [2]);
  });

  it("resync runs as a resync, only after a first success and only when idle; a failed resync is retried as one", async () => {
    make();
    loop.resync();
    assert.equal(f.calls.length, 0, "nothing applied yet: nothing to resync");
    change(1);
    loop.resync();
    await f.finish();
    await waitFor("idle", () => loop.idle);
    loop.resync();
    await f.fail("rtnl busy");
    await f.finish();
    await waitFor("idle", () => loop.idle);
    assert.deepEqual(f.calls.map((c) => c.reason), ["update", "resync", "resync"]);
  });

  it("the resync timer fires by itself", async () => {
    make(20);
    change(1);
    await f.finish();
    await f.finish();
    assert.equal(f.calls[1].reason, "resync");
  });

  it("watchdog: a flush running past the bound, or changes pending past it without success, make it stuck", async () => {
    make();
    change(1);
    assert.equal(loop.stuck(5000), undefined);
    clock += 6000;
    assert.match(loop.stuck(5000) ?? "", /running for 6 s/);
    await f.fail("hung");
    await waitFor("the failure to be handled", () => failed.length === 1, 5000, 2);
    assert.match(loop.stuck(5000) ?? "", /pending for 6 s without a successful apply/);
    await f.finish();
    await waitFor("idle", () => loop.idle);
    assert.equal(loop.stuck(5000), undefined, "healthy again once a flush succeeded");
  });

  it("after stop, nothing more is flushed", async () => {
    make();
    change(1);
    const stopping = loop.stop();
    change(2);
    await f.finish();
    await stopping;
    assert.equal(f.calls.length, 1);
  });
});
