// Pure logic behind the controller's fault handling: record decoding, the
// model's per-key revision check, health bounds, and time-bounded leadership.
import assert from "node:assert/strict";
import { KubeMode, Model } from "../../pkg/controller/index.js";
import { Health } from "../../pkg/controller/health.js";
import { Leadership, DeposedError } from "../../pkg/controller/leader.js";
import { silentLogger } from "../../pkg/log/index.js";
import { Keys, decodeRecord, MAX_RECORD_BYTES, type RecordEvent, type Store } from "../../pkg/store/index.js";
import { toKubeNode, toNetworkObject, type OverlayNetwork } from "../../pkg/kube/index.js";
import { netSpec } from "../harness/specs.js";

const keys = new Keys("/t/");
const node = { name: "n1", underlayIP: "192.0.2.1", labels: {}, agentVersion: "t", uplinkMtu: 1500, vtepMacs: { blue: "02:00:00:00:00:01" }, subnets: { blue: "10.1.1.0/24" }, lastSeen: "" };
const lease = { network: "blue", subnet: "10.1.1.0/24", node: "n1", vtepIP: "192.0.2.1", vtepMac: "02:00:00:00:00:01", acquired: "", renewed: "" };

describe("records read from etcd are decoded by schema", () => {
  const dec = (key: string, value: unknown) => decodeRecord(keys.parse(key), typeof value === "string" ? value : JSON.stringify(value));

  it("accepts well-formed networks, nodes and leases", () => {
    assert.equal(dec(keys.network("blue"), netSpec("blue", "10.1.0.0/16", 1))?.ok, true);
    assert.equal(dec(keys.node("n1"), node)?.ok, true);
    assert.equal(dec(keys.lease("blue", "10.1.1.0/24"), lease)?.ok, true);
    assert.equal(dec(keys.leader(), { identity: "x" }), undefined, "meta keys hold no record");
  });

  it("refuses what is not JSON, has wrong types, misses fields, is huge, or names another key; says why", () => {
    const bad: [string, unknown, RegExp][] = [
      [keys.network("bad"), "not json", /not JSON/],
      [keys.network("blue"), { ...netSpec("blue", "10.1.0.0/16", 1), vni: "x" }, /vni/],
      [keys.network("blue"), { name: "blue" }, /cidr/],
      [keys.network("blue"), { ...netSpec("blue", "10.1.0.0/16", 1), encrypt: true }, /encrypt: unknown field/],
      [keys.network("other"), netSpec("blue", "10.1.0.0/16", 1), /does not match its key/],
      [keys.node("n1"), { ...node, underlayIP: "" }, /underlayIP/],
      [keys.node("n1"), { ...node, labels: { a: 1 } }, /labels/],
      [keys.node("n1"), [1, 2], /value/],
      [keys.node("n1"), null, /value/],
      [keys.lease("blue", "10.1.1.0/24"), { ...lease, subnet: "10.1.2.0/24" }, /subnet/],
      [keys.lease("blue", "10.1.1.0/24"), { ...lease, vtepMac: "zz" }, /vtepMac/],
      [keys.lease("blue", "10.1.1.0/24"), { ...lease, node: undefined }, /node/],
      [keys.node("n1"), JSON.stringify({ ...node, labels: { big: "x".repeat(MAX_RECORD_BYTES) } }), /bytes/],
    ];
    for (const [key, value, why] of bad) {
      const res = dec(key, value);
      assert.ok(res && !res.ok, `${key} ${JSON.stringify(value).slice(0, 60)} refused`);
      assert.match(res.error, why);
    }
  });

  it("drops unknown fields of node and lease records (a newer replica may add some)", () => {
    const res = dec(keys.node("n1"), { ...node, future: 1 });
    assert.ok(res?.ok && res.kind === "node");
    assert.equal("future" in res.value, false);
  });

  it("Kubernetes objects without a usable name or with non-string labels throw a message naming the field", () => {
    assert.throws(() => toKubeNode({ metadata: { name: "n", labels: { a: 1 as unknown as string } } }), /Node: metadata.labels.a/);
    assert.throws(() => toKubeNode({} as never), /metadata/);
    assert.throws(() => toNetworkObject({ metadata: {} } as OverlayNetwork), /OverlayNetwork: metadata.name/);
    assert.equal(toKubeNode({ metadata: { name: "n", labels: { a: "b" } } }).labels.a, "b");
  });
});

describe("the model ignores events older than what it holds", () => {
  const putLease = (rev: number, node = "n1"): RecordEvent => ({
    type: "put",
    key: keys.parse(keys.lease("blue", "10.1.1.0/24")),
    record: { kind: "lease", value: { ...lease, node } },
    lease: "7",
    modRevision: rev,
  });
  const delLease = (rev: number): RecordEvent => ({ type: "delete", key: keys.parse(keys.lease("blue", "10.1.1.0/24")), modRevision: rev });

  it("a late put cannot bring back a deleted lease, nor an older value replace a newer one", () => {
    const m = new Model();
    m.load({ revision: 10, networks: [{ value: netSpec("blue", "10.1.0.0/16", 1), modRevision: 2, createRevision: 2, lease: "0" }], nodes: [], leases: [] });
    assert.equal(m.apply([putLease(9)], 10).stale, 1, "at or below the loaded revision: already in the snapshot");
    assert.equal(m.leaseCount("blue"), 0);
    m.apply([putLease(11, "n1")], 11);
    m.apply([delLease(13)], 13);
    const late = m.apply([putLease(12, "n2")], 13);
    assert.equal(late.stale, 1);
    assert.equal(m.leaseCount("blue"), 0, "the deleted lease stays deleted");
    m.apply([putLease(14, "n3")], 14);
    m.apply([putLease(12, "n2")], 14);
    assert.equal(m.leaseOf("n3", "blue")?.node, "n3");
  });

  it("an undecodable value takes the key out of the view", () => {
    const m = new Model();
    m.load({ revision: 1, networks: [], nodes: [], leases: [] });
    m.apply([putLease(2)], 2);
    m.apply([{ type: "invalid", key: keys.parse(keys.lease("blue", "10.1.1.0/24")), rawKey: "k", kind: "lease", error: "x", modRevision: 3 }], 3);
    assert.equal(m.leaseCount("blue"), 0);
  });
});

describe("health bounds", () => {
  it("fails once etcd has been silent past the bound, and when the loop ticks late", async () => {
    let now = 0;
    let answer = true;
    const h = new Health({ probe: () => (answer ? Promise.resolve() : Promise.reject(new Error("down"))), etcdUnreachableMs: 3000, stallMs: 2000, intervalMs: 1000, now: () => now });
    now = 1000;
    h.tick();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(h.problems(), []);
    answer = false;
    for (let t = 2000; t <= 5000; t += 1000) {
      now = t;
      h.tick();
      await new Promise((r) => setImmediate(r));
    }
    assert.match(h.problems().join(), /etcd unreachable for 4 s/);
    answer = true;
    now = 9000; // this tick comes 3 s late
    h.tick();
    await new Promise((r) => setImmediate(r));
    const p = h.problems();
    assert.equal(p.length, 1);
    assert.match(p[0], /event loop stalled 3000 ms/);
  });
});

describe("leadership is bounded in time", () => {
  it("a leader whose last confirmation is older than 0.8 TTL stops counting as leader before its loop runs again", async () => {
    let now = 0;
    const store = {
      grantLease: async () => "42",
      keepAlive: async () => 10,
      tryLead: async () => true,
      revokeLease: async () => {},
    } as unknown as Store;
    const l = new Leadership(store, "me", 10, silentLogger(), () => {}, () => now);
    l.start();
    for (let i = 0; i < 20 && !l.isLeader; i++) await new Promise((r) => setImmediate(r));
    assert.equal(l.isLeader, true);
    assert.equal(l.check(), "42");
    now = 7_999;
    assert.equal(l.isLeader, true);
    now = 8_001; // paused (SIGSTOP) past 0.8 TTL: the key may be someone else's by now
    assert.equal(l.isLeader, false);
    assert.equal(l.lease, "0");
    assert.throws(() => l.check(), DeposedError);
    await l.stop();
  });
});

describe("Kubernetes mode stops a pass when leadership is lost mid-pass", () => {
  it("writes no further status after the leadership check fails, and does not count it as a failure", async () => {
    let leading = true;
    const written: string[] = [];
    let onList: (o: unknown[]) => void = () => {};
    const kube = {
      watchNetworks: (cb: (o: unknown[]) => void) => ((onList = cb), { stop() {} }),
      watchNodes: (cb: (n: unknown[]) => void) => (cb([]), { stop() {} }),
      patchNetworkStatus: async (name: string) => {
        written.push(name);
        leading = false; // deposed while the first write was in flight
      },
      setNodeNetworkAvailable: async () => {},
    };
    const failures: number[] = [];
    const mode = new KubeMode({
      kube: kube as never,
      store: {} as Store,
      model: new Model(),
      leader: () => {
        if (!leading) throw new DeposedError();
        return "42";
      },
      log: silentLogger(),
      metrics: { reconcileFailures: { inc: () => failures.push(1) }, networks: { set() {} }, writes: { inc() {} } } as never,
    });
    mode.start({ relabel() {}, disconnect() {} } as never);
    // Invalid specs: nothing to mirror into etcd, one status each to write.
    onList(["a", "b", "c"].map((name) => ({ name, generation: 1, creationTimestamp: "2026-01-01T00:00:00Z", spec: { vni: 0 } })));
    await waitUntil(() => written.length > 0);
    await new Promise((r) => setTimeout(r, 300));
    await mode.stop();
    assert.deepEqual(written, ["a"], "no write after leadership was lost");
    assert.equal(failures.length, 0);
  });
});

async function waitUntil(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check());
}
