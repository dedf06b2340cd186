import assert from "node:assert/strict";
import { ApplyLoop, type ApplyItem } from "../../pkg/agent/apply-loop.js";
import type { ApplyReason, ApplyReport, NodeDesired } from "../../pkg/agent/dataplane-port.js";
import { waitFor } from "../../pkg/lab/ports.js";
import { silentLogger } from "../../pkg/log/index.js";

/** A dataplane whose applies finish only when the test says so, recording what it was asked. */
class GatedDataplane {
  calls: { desired: NodeDesired; reason?: ApplyReason }[] = [];
  private gates: { resolve: (r: ApplyReport) => void; reject: (e: Error) => void }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  apply(desired: NodeDesired, reason?: ApplyReason): Promise<ApplyReport> {
    this.calls.push({ desired, reason });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<ApplyReport>((resolve, reject) => this.gates.push({ resolve, reject })).finally(() => this.inFlight--);
  }
  async finish(n = 1): Promise<void> {
    await waitFor("an apply to be running", () => this.gates.length > 0, 5000, 2);
    this.gates.shift()!.resolve({ changes: n, byKind: { route: n }, durationMs: 1 });
  }
  async fail(msg: string): Promise<void> {
    await waitFor("an apply to be running", () => this.gates.length > 0, 5000, 2);
    this.gates.shift()!.reject(new Error(msg));
  }
}

function desired(peers: number): NodeDesired {
  return {
    uplink: "eth0", underlayIp: "192.168.1.1",
    networks: [{
      name: "blue", vni: 1, cidr: "10.0.0.0/16", mode: "routed", mtu: 1450, port: 4789, natOutgoing: true, isolated: true, isDefault: true, subnet: "10.0.1.0/24",
      peers: Array.from({ length: peers }, (_, i) => ({ nodeName: `n${i}`, underlayIp: `192.168.1.${i + 2}`, vtepMac: "02:00:00:00:00:02", subnet: `10.0.${i + 2}.0/24` })),
    }],
  };
}

const item = (rev: number, peers = rev): ApplyItem<string> => ({ desired: desired(peers), revision: rev, tag: `t${rev}` });

describe("agent: apply loop", () => {
  let dp: GatedDataplane;
  let loop: ApplyLoop<string>;
  let applied: { revision: number; reason: ApplyReason; changes: number }[];
  let failed: { revision: number; err: string }[];

  function make(resyncIntervalMs = 0): void {
    dp = new GatedDataplane();
    applied = [];
    failed = [];
    loop = new ApplyLoop<string>({
      dataplane: dp,
      log: silentLogger(),
      resyncIntervalMs,
      retryBaseMs: 5,
      retryCapMs: 20,
      onApplied: (i, r, reason) => void applied.push({ revision: i.revision, reason, changes: r.changes }),
      onFailed: (i, err) => void failed.push({ revision: i.revision, err: err.message }),
    });
    loop.start();
  }
  afterEach(async () => {
    // Let anything still gated finish so stop() does not wait forever.
    const stopping = loop.stop();
    while (dp.inFlight > 0) await dp.finish();
    await stopping;
  });

  it("never runs two applies at once and applies only the latest of a burst", async () => {
    make();
    loop.submit(item(1));
    for (let r = 2; r <= 6; r++) loop.submit(item(r));
    await dp.finish();
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.equal(dp.maxInFlight, 1);
    assert.deepEqual(dp.calls.map((c) => c.desired.networks[0].peers.length), [1, 6], "revisions 2..5 were coalesced away");
    assert.deepEqual(applied.map((a) => a.revision), [1, 6]);
    assert.equal(loop.lastApplied?.revision, 6);
  });

  it("skips the kernel for an update that changes nothing, but still reports it applied", async () => {
    make();
    loop.submit(item(1, 3));
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    loop.submit(item(2, 3));
    await waitFor("second report", () => applied.length === 2, 5000, 2);
    assert.equal(dp.calls.length, 1);
    assert.deepEqual(applied[1], { revision: 2, reason: "update", changes: 0 });
    assert.equal(loop.dataplaneCalls, 1);
  });

  it("retries a failed apply with backoff until it succeeds, and reports each failure", async () => {
    make();
    loop.submit(item(1));
    await dp.fail("ENOBUFS");
    await dp.fail("ENOBUFS");
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.deepEqual(failed, [{ revision: 1, err: "ENOBUFS" }, { revision: 1, err: "ENOBUFS" }]);
    assert.deepEqual(applied.map((a) => a.revision), [1]);
    assert.equal(dp.calls.length, 3);
  });

  it("a retry applies the newest state when one arrived during the failure", async () => {
    make();
    loop.submit(item(1));
    loop.submit(item(2));
    await dp.fail("boom");
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.deepEqual(dp.calls.map((c) => c.desired.networks[0].peers.length), [1, 2]);
    assert.deepEqual(applied.map((a) => a.revision), [2]);
  });

  it("after a failed apply, re-applying the last good state reaches the kernel (it may be half-changed)", async () => {
    make();
    loop.submit(item(1, 1));
    await dp.finish();
    loop.submit(item(2, 2));
    await dp.fail("boom");
    loop.submit(item(3, 1)); // same desired state as revision 1
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.equal(dp.calls.length, 3, "not skipped as unchanged");
    assert.deepEqual(applied.map((a) => a.revision), [1, 3]);
  });

  it("resync re-applies the last applied state as a resync, and only when idle", async () => {
    make();
    loop.resync();
    assert.equal(dp.calls.length, 0, "nothing applied yet: nothing to resync");
    loop.submit(item(1));
    loop.resync(); // an update is running: the resync is not queued behind it
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    loop.resync();
    await dp.finish(0);
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.deepEqual(dp.calls.map((c) => c.reason), ["update", "resync"]);
    assert.deepEqual(applied.map((a) => a.reason), ["update", "resync"]);
  });

  it("a resync requested while a newer state is being applied never brings back the older one", async () => {
    make();
    loop.submit(item(1, 3));
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    loop.submit(item(2, 1)); // a peer removal is being applied...
    loop.resync(); // ...when the resync timer fires
    await dp.finish();
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    loop.resync();
    await dp.finish(0);
    await waitFor("loop idle", () => loop.idle, 5000, 2);
    assert.deepEqual(dp.calls.map((c) => [c.reason, c.desired.networks[0].peers.length]), [["update", 3], ["update", 1], ["resync", 1]]);
    assert.equal(loop.lastApplied?.revision, 2);
  });

  it("the resync timer fires by itself and a failed resync is retried as a resync", async () => {
    make(30);
    loop.submit(item(1));
    await dp.finish();
    await dp.fail("drift repair failed");
    await dp.finish();
    await waitFor("resync applied", () => applied.some((a) => a.reason === "resync"), 5000, 2);
    assert.deepEqual(dp.calls.slice(0, 3).map((c) => c.reason), ["update", "resync", "resync"]);
    assert.equal(dp.calls[2].desired, dp.calls[0].desired);
  });

  it("after stop, nothing more is applied", async () => {
    make();
    loop.submit(item(1));
    const stopped = loop.stop();
    loop.submit(item(2));
    await dp.finish();
    await stopped;
    assert.equal(dp.calls.length, 1);
  });
});
