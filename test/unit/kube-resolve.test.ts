// Kubernetes mode's pure part: which OverlayNetworks are served, and the
// status each should carry.
import assert from "node:assert/strict";
import { networkStatus, resolveNetworks, sameStatus, type NetworkObject } from "../../pkg/controller/index.js";

const obj = (name: string, created: string, spec: Record<string, unknown>, generation = 1): NetworkObject => ({ name, creationTimestamp: created, generation, spec });

describe("kubernetes mode: resolving OverlayNetworks (pure)", () => {
  it("serves valid networks with defaults, and marks invalid ones with the field", () => {
    const v = resolveNetworks([obj("blue", "2026-01-01T00:00:00Z", { cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 }), obj("bad", "2026-01-01T00:00:01Z", { cidr: "10.250.0.0/16", vni: 0, nodePrefixLength: 24 })]);
    assert.equal(v.get("blue")?.spec?.port, 4789);
    assert.equal(v.get("bad")?.spec, undefined);
    assert.equal(v.get("bad")?.reason, "Invalid");
    assert.match(v.get("bad")!.message!, /spec\.vni/);
  });

  it("the older network wins a conflict, whatever the list order; deleting it lets the newer one in", () => {
    const older = obj("older", "2026-01-01T00:00:00Z", { cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 });
    const overlap = obj("overlap", "2026-01-02T00:00:00Z", { cidr: "10.244.128.0/17", vni: 43, nodePrefixLength: 24 });
    const sameVni = obj("samevni", "2026-01-03T00:00:00Z", { cidr: "10.99.0.0/16", vni: 42, nodePrefixLength: 24 });
    const v = resolveNetworks([sameVni, overlap, older]);
    assert.ok(v.get("older")?.spec);
    assert.equal(v.get("overlap")?.reason, "Overlap");
    assert.match(v.get("overlap")!.message!, /overlaps 10\.244\.0\.0\/16 of network "older"/);
    assert.equal(v.get("samevni")?.reason, "VNIConflict");
    const after = resolveNetworks([sameVni, overlap]);
    assert.ok(after.get("overlap")?.spec && after.get("samevni")?.spec);
  });

  it("a served network keeps winning against one created in the same second, whatever the names", () => {
    const pods = obj("pods", "2026-01-01T00:00:05Z", { cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 });
    const overlap = obj("overlap", "2026-01-01T00:00:05Z", { cidr: "10.244.128.0/17", vni: 43, nodePrefixLength: 24 });
    // Nothing served yet: the name breaks the tie.
    assert.ok(resolveNetworks([pods, overlap]).get("overlap")?.spec);
    const v = resolveNetworks([overlap, pods], new Set(["pods"]));
    assert.ok(v.get("pods")?.spec);
    assert.equal(v.get("overlap")?.reason, "Overlap");
  });

  it("status: Ready with counts for served networks, Invalid with the reason otherwise, PoolExhausted when full", () => {
    const o = obj("blue", "2026-01-01T00:00:00Z", { cidr: "10.244.0.0/29", vni: 42, nodePrefixLength: 30 }, 3);
    const [verdict] = [...resolveNetworks([o]).values()];
    assert.ok(verdict.spec, verdict.message);
    const s = networkStatus(o, verdict, { allocated: 2, nodes: ["b", "a"], waiting: 1 }, "T1");
    assert.equal(s.observedGeneration, 3);
    assert.deepEqual([s.allocated, s.capacity, s.nodes], [2, 2, ["a", "b"]]);
    assert.deepEqual(s.conditions!.map((c) => [c.type, c.status]), [["Ready", "True"], ["Invalid", "False"], ["PoolExhausted", "True"]]);
    const bad = networkStatus(o, { reason: "Overlap", message: "spec.cidr: overlaps" }, undefined, "T1");
    assert.deepEqual(bad.conditions!.map((c) => [c.type, c.status, c.reason]), [["Ready", "False", "Overlap"], ["Invalid", "True", "Overlap"]]);
  });

  it("keeps transition times when nothing changed, so rewriting the same status is a no-op", () => {
    const o = obj("blue", "2026-01-01T00:00:00Z", { cidr: "10.244.0.0/16", vni: 42, nodePrefixLength: 24 });
    const [verdict] = [...resolveNetworks([o]).values()];
    const first = networkStatus(o, verdict, { allocated: 1, nodes: ["a"], waiting: 0 }, "T1");
    const again = networkStatus({ ...o, status: first }, verdict, { allocated: 1, nodes: ["a"], waiting: 0 }, "T2");
    assert.ok(sameStatus(first, again));
    const grown = networkStatus({ ...o, status: first }, verdict, { allocated: 2, nodes: ["a", "b"], waiting: 0 }, "T2");
    assert.equal(sameStatus(first, grown), false);
    assert.equal(grown.conditions!.find((c) => c.type === "Ready")!.lastTransitionTime, "T1");
  });
});
