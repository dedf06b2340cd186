// Kubernetes mode, pure part: which OverlayNetwork objects are served to
// agents, and the status each one should carry. No I/O, so every rule is
// unit-tested (test/unit/resolve.test.ts).
import { poolCapacity } from "../ipam/index.js";
import { parseCidr } from "../ip/index.js";
import type { NetworkSpec } from "../store/index.js";
import { checkNetworkConflicts, IMMUTABLE_FIELDS, validateNetworkSpec, ValidationError } from "../spec/index.js";

/** What the controller needs of an OverlayNetwork object. */
export interface NetworkObject {
  name: string;
  generation: number;
  /** RFC 3339; the older of two conflicting networks wins. */
  creationTimestamp: string;
  spec: unknown;
  status?: NetworkStatus;
}

export interface Condition {
  type: "Ready" | "Invalid" | "PoolExhausted";
  status: "True" | "False";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface NetworkStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  allocated?: number;
  capacity?: number;
  nodes?: string[];
}

export interface Verdict {
  /** Set when the network is served to agents. */
  spec?: NetworkSpec;
  /** Why not: Invalid, Overlap, VNIConflict, DefaultConflict. */
  reason?: string;
  message?: string;
}

const REASON_BY_FIELD: Record<string, string> = { cidr: "Overlap", vni: "VNIConflict", default: "DefaultConflict" };

/**
 * Validates every object and resolves conflicts: networks already served
 * (`served`, the names in etcd) first, then in creation order, then by name.
 * So a newer network never displaces one that agents already use, even when
 * both were created in the same second (creation times have 1 s resolution).
 */
export function resolveNetworks(objects: NetworkObject[], served: ReadonlySet<string> = new Set()): Map<string, Verdict> {
  const rank = (o: NetworkObject) => (served.has(o.name) ? 0 : 1);
  const ordered = [...objects].sort((a, b) => rank(a) - rank(b) || a.creationTimestamp.localeCompare(b.creationTimestamp) || a.name.localeCompare(b.name));
  const accepted: NetworkSpec[] = [];
  const verdicts = new Map<string, Verdict>();
  for (const obj of ordered) {
    let spec: NetworkSpec;
    try {
      spec = validateNetworkSpec({ ...(obj.spec as object), name: obj.name });
    } catch (err) {
      verdicts.set(obj.name, { reason: "Invalid", message: (err as Error).message });
      continue;
    }
    try {
      checkNetworkConflicts(spec, accepted);
    } catch (err) {
      const field = err instanceof ValidationError ? err.problems[0]?.field.replace(/^spec\./, "") : undefined;
      verdicts.set(obj.name, { reason: (field && REASON_BY_FIELD[field]) || "Invalid", message: (err as Error).message });
      continue;
    }
    accepted.push(spec);
    verdicts.set(obj.name, { spec });
  }
  return verdicts;
}

/** Facts about a served network, from the controller's view of etcd. */
export interface Usage {
  allocated: number;
  nodes: string[];
  /** Member nodes (labels match) that have no subnet. */
  waiting: number;
}

/**
 * The status an object should carry. Transition times are kept from `previous`
 * when a condition's status did not change, so writing the result again is a no-op.
 */
export function networkStatus(obj: NetworkObject, verdict: Verdict, usage: Usage | undefined, now: string): NetworkStatus {
  const previous = new Map((obj.status?.conditions ?? []).map((c) => [c.type, c]));
  const cond = (type: Condition["type"], status: boolean, reason: string, message: string): Condition => {
    const before = previous.get(type);
    const s = status ? "True" : "False";
    return { type, status: s, reason, message, lastTransitionTime: before && before.status === s ? before.lastTransitionTime : now, observedGeneration: obj.generation };
  };
  if (!verdict.spec) {
    return {
      observedGeneration: obj.generation,
      conditions: [cond("Ready", false, verdict.reason ?? "Invalid", "not served to agents"), cond("Invalid", true, verdict.reason ?? "Invalid", verdict.message ?? "")],
      allocated: 0,
      capacity: 0,
      nodes: [],
    };
  }
  const spec = verdict.spec;
  const capacity = poolCapacity({ cidr: parseCidr(spec.cidr), nodePrefixLength: spec.nodePrefixLength });
  const u = usage ?? { allocated: 0, nodes: [], waiting: 0 };
  const exhausted = u.allocated >= capacity && u.waiting > 0;
  return {
    observedGeneration: obj.generation,
    conditions: [
      cond("Ready", true, "Served", `${u.allocated} of ${capacity} subnets leased`),
      cond("Invalid", false, "Valid", ""),
      cond("PoolExhausted", exhausted, exhausted ? "PoolExhausted" : "HasRoom", exhausted ? `all ${capacity} subnets are leased; ${u.waiting} member node(s) have none` : ""),
    ],
    allocated: u.allocated,
    capacity,
    nodes: [...u.nodes].sort(),
  };
}

/** Whether two statuses say the same (so no write is needed). */
export function sameStatus(a: NetworkStatus | undefined, b: NetworkStatus): boolean {
  return JSON.stringify(normalize(a)) === JSON.stringify(normalize(b));
}

function normalize(s: NetworkStatus | undefined): unknown {
  if (!s) return undefined;
  return {
    observedGeneration: s.observedGeneration,
    allocated: s.allocated ?? 0,
    capacity: s.capacity ?? 0,
    nodes: s.nodes ?? [],
    conditions: [...(s.conditions ?? [])]
      .sort((x, y) => x.type.localeCompare(y.type))
      .map((c) => [c.type, c.status, c.reason, c.message, c.lastTransitionTime, c.observedGeneration]),
  };
}

/** The fields whose change means a different network: a stored mirror with other values is replaced. */
export function immutableChanged(a: NetworkSpec, b: NetworkSpec): boolean {
  return IMMUTABLE_FIELDS.some((f) => a[f] !== b[f]);
}
