// Pure conversions from Kubernetes objects to what the rest of Weft uses.
import { z } from "zod";
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

// What Weft reads of the objects informers deliver. The API server enforces
// most of this, but an informer also sees objects written under an older CRD
// and whatever a proxy or a bug hands it: an object that does not fit is
// skipped (Reflector counts it), never allowed to throw in a handler.
const name = z.string().min(1).max(253);
const networkObjectSchema = z.object({
  metadata: z.object({ name, generation: z.number().int().min(0).optional(), creationTimestamp: z.unknown().optional() }),
  // Validated by the controller, which reports problems in the object's status.
  spec: z.unknown(),
  status: z.object({}).passthrough().optional(),
});
const nodeSchema = z.object({
  metadata: z.object({ name, labels: z.record(z.string(), z.string()).nullish() }),
  status: z
    .object({ conditions: z.array(z.object({ type: z.string(), status: z.string(), reason: z.string().nullish() }).passthrough()).nullish() })
    .passthrough()
    .nullish(),
});

/** Throws an Error naming the field when `obj` is not a usable object. */
function check<T>(schema: z.ZodType<T>, obj: unknown, what: string): T {
  const res = schema.safeParse(obj);
  if (res.success) return res.data;
  throw new Error(`${what}: ${res.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "object"}: ${i.message}`).join("; ")}`);
}

export function toNetworkObject(raw: OverlayNetwork): NetworkObject {
  const obj = check(networkObjectSchema, raw, "OverlayNetwork");
  return {
    name: obj.metadata.name,
    generation: obj.metadata.generation ?? 0,
    creationTimestamp: timestamp(obj.metadata.creationTimestamp),
    spec: obj.spec,
    ...(obj.status ? { status: obj.status as OverlayNetwork["status"] } : {}),
  };
}

/** The parts of a Node the controller uses; `node` may be raw JSON or client-node's typed V1Node. */
export function toKubeNode(raw: NodeLike): KubeNode {
  const node = check(nodeSchema, raw, "Node");
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
