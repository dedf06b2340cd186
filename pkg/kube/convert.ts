// Pure conversions from Kubernetes objects to what the rest of Weft uses.
import { validateNetworkSpec } from "../spec/index.js";
import type { NetworkSpec } from "../store/types.js";
import { NETWORK_UNAVAILABLE, WEFT_UP_REASON, type KubeNode, type NetworkObject, type OverlayNetwork } from "./types.js";

/**
 * An OverlayNetwork as a NetworkSpec, with the same validation and defaults as
 * weftctl and etcd writes (the CRD schema already rejects most bad input, but
 * an object stored under an older CRD may not have been checked).
 * Throws ValidationError naming the field.
 */
export function overlayNetworkToSpec(obj: OverlayNetwork): NetworkSpec {
  return validateNetworkSpec({ ...(obj.spec ?? {}), name: obj.metadata?.name });
}

export function toNetworkObject(obj: OverlayNetwork): NetworkObject {
  return {
    name: obj.metadata.name,
    generation: obj.metadata.generation ?? 0,
    creationTimestamp: timestamp(obj.metadata.creationTimestamp),
    spec: obj.spec,
    ...(obj.status ? { status: obj.status } : {}),
  };
}

/** The parts of a Node the controller uses; `node` may be raw JSON or client-node's typed V1Node. */
export function toKubeNode(node: NodeLike): KubeNode {
  const cond = node.status?.conditions?.find((c) => c.type === NETWORK_UNAVAILABLE);
  return {
    name: node.metadata?.name ?? "",
    labels: { ...(node.metadata?.labels ?? {}) },
    weftUp: cond?.status === "False" && cond.reason === WEFT_UP_REASON,
  };
}

export interface NodeLike {
  metadata?: { name?: string; labels?: Record<string, string> };
  status?: { conditions?: Array<{ type: string; status: string; reason?: string }> };
}

function timestamp(t: unknown): string {
  if (t instanceof Date) return t.toISOString();
  return typeof t === "string" ? t : "";
}
