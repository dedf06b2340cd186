// pkg/kube's pure conversions (no API server needed).
import assert from "node:assert/strict";
import { ValidationError } from "../../pkg/spec/index.js";
import { overlayNetworkToSpec, toKubeNode, toNetworkObject, type OverlayNetwork } from "../../pkg/kube/index.js";

function obj(spec: Record<string, unknown>, name = "net"): OverlayNetwork {
  return { apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name, generation: 3, creationTimestamp: "2026-01-02T03:04:05Z" }, spec: spec as unknown as OverlayNetwork["spec"] };
}

describe("pkg/kube conversions", () => {
  it("turns an OverlayNetwork into a NetworkSpec with defaults", () => {
    assert.deepEqual(overlayNetworkToSpec(obj({ cidr: "10.1.0.0/16", vni: 7, nodePrefixLength: 26, nodeSelector: { zone: "a" } })), {
      name: "net", cidr: "10.1.0.0/16", vni: 7, nodePrefixLength: 26, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: { zone: "a" }, default: false, flood: false, dns: false,
    });
  });

  it("rejects what the CRD would have rejected, naming the field", () => {
    assert.throws(() => overlayNetworkToSpec(obj({ cidr: "10.1.0.0/16", vni: 7, nodePrefixLength: 16 })), (err: unknown) => err instanceof ValidationError && /spec\.nodePrefixLength/.test(err.message));
    assert.throws(() => overlayNetworkToSpec(obj({ cidr: "10.1.0.0/16", vni: 7, nodePrefixLength: 24 }, "Not.A.Label")), /spec\.name/);
  });

  it("keeps generation, creation time (string or Date) and status for the controller", () => {
    const o = obj({ cidr: "10.1.0.0/16", vni: 7, nodePrefixLength: 24 });
    assert.deepEqual(toNetworkObject(o), { name: "net", generation: 3, creationTimestamp: "2026-01-02T03:04:05Z", spec: o.spec });
    const typed = { ...o, metadata: { ...o.metadata, creationTimestamp: new Date("2026-01-02T03:04:05Z") as unknown as string }, status: { allocated: 2 } };
    assert.deepEqual(toNetworkObject(typed), { name: "net", generation: 3, creationTimestamp: "2026-01-02T03:04:05.000Z", spec: o.spec, status: { allocated: 2 } });
  });

  it("reads a Node as up only with Weft's own NetworkUnavailable=False", () => {
    const node = (conditions: Array<{ type: string; status: string; reason?: string }>) => ({ metadata: { name: "n1", labels: { a: "b" } }, status: { conditions } });
    assert.deepEqual(toKubeNode(node([{ type: "NetworkUnavailable", status: "False", reason: "WeftIsUp" }])), { name: "n1", labels: { a: "b" }, weftUp: true });
    assert.equal(toKubeNode(node([{ type: "NetworkUnavailable", status: "False", reason: "RouteCreated" }])).weftUp, false);
    assert.equal(toKubeNode(node([{ type: "NetworkUnavailable", status: "True", reason: "WeftIsUp" }])).weftUp, false);
    assert.equal(toKubeNode(node([{ type: "Ready", status: "True" }])).weftUp, false);
    assert.deepEqual(toKubeNode({ metadata: { name: "bare" } }), { name: "bare", labels: {}, weftUp: false });
  });
});
