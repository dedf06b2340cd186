// Network spec validation: pure, shared by weftctl, the controller's
// Kubernetes mode and the etcd write path. Every problem names its field.
import { formatCidr, overlaps, parseCidr } from "../ip/index.js";
import type { NetworkMode, NetworkSpec } from "../store/types.js";

export interface Problem {
  field: string;
  message: string;
}

export class ValidationError extends Error {
  constructor(readonly problems: Problem[]) {
    super(problems.map((p) => `${p.field}: ${p.message}`).join("; "));
    this.name = "ValidationError";
  }
}

export const MAX_VNI = 16_777_215;
/** A node subnet needs a network address, a gateway, at least one pod and a broadcast address. */
export const MAX_NODE_PREFIX_LENGTH = 30;
/** 0 means "uplink MTU - 50"; explicit values must carry an IPv4 packet (RFC 791 minimum 576) and fit a jumbo frame. */
export const MIN_MTU = 576;
export const MAX_MTU = 9000;

export const NETWORK_DEFAULTS = {
  mode: "routed" as NetworkMode,
  mtu: 0,
  port: 4789,
  natOutgoing: true,
  isolated: true,
  nodeSelector: {} as Record<string, string>,
  default: false,
  flood: false,
  dns: false,
};

const FIELDS = new Set(["name", "cidr", "vni", "nodePrefixLength", "mode", "mtu", "port", "natOutgoing", "isolated", "nodeSelector", "default", "flood", "dns"]);
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

/**
 * Checks untyped input (YAML, CLI flags, a CRD spec), applies defaults and
 * returns a NetworkSpec; throws ValidationError listing every problem.
 */
export function validateNetworkSpec(input: unknown): NetworkSpec {
  const problems: Problem[] = [];
  const bad = (field: string, message: string) => problems.push({ field: `spec.${field}`, message });
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ValidationError([{ field: "spec", message: "must be an object" }]);
  }
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!FIELDS.has(k)) bad(k, `unknown field (known: ${[...FIELDS].join(", ")})`);

  if (o.name === undefined || o.name === "") bad("name", "required");
  else if (typeof o.name !== "string") bad("name", `must be a string, got ${JSON.stringify(o.name)}`);
  else if (o.name.length > 63 || !DNS_LABEL.test(o.name)) bad("name", `"${o.name}" is not a DNS label (lower-case letters, digits and '-', at most 63 characters)`);

  let cidrPrefix: number | undefined;
  if (o.cidr === undefined || o.cidr === "") bad("cidr", "required, e.g. 10.244.0.0/16");
  else if (typeof o.cidr !== "string") bad("cidr", `must be a string such as 10.244.0.0/16, got ${JSON.stringify(o.cidr)}`);
  else {
    try {
      cidrPrefix = parseCidr(o.cidr).prefix;
    } catch (err) {
      bad("cidr", (err as Error).message);
    }
  }

  if (o.vni === undefined) bad("vni", `required, 1-${MAX_VNI}`);
  else if (!isInt(o.vni) || o.vni < 1 || o.vni > MAX_VNI) bad("vni", `must be an integer from 1 to ${MAX_VNI}, got ${JSON.stringify(o.vni)}`);

  if (o.nodePrefixLength === undefined) bad("nodePrefixLength", "required, e.g. 24");
  else if (!isInt(o.nodePrefixLength) || o.nodePrefixLength < 1 || o.nodePrefixLength > MAX_NODE_PREFIX_LENGTH) {
    bad("nodePrefixLength", `must be an integer from 1 to ${MAX_NODE_PREFIX_LENGTH} (a node subnet needs room for network, gateway, pods and broadcast), got ${JSON.stringify(o.nodePrefixLength)}`);
  } else if (cidrPrefix !== undefined && o.nodePrefixLength <= cidrPrefix) {
    bad("nodePrefixLength", `must be longer than the cidr's prefix /${cidrPrefix}, got ${o.nodePrefixLength}`);
  }

  if (o.mode !== undefined && o.mode !== "routed" && o.mode !== "switched") bad("mode", `must be "routed" or "switched", got ${JSON.stringify(o.mode)}`);
  if (o.mtu !== undefined && (!isInt(o.mtu) || (o.mtu !== 0 && (o.mtu < MIN_MTU || o.mtu > MAX_MTU)))) {
    bad("mtu", `must be 0 (uplink MTU - 50) or an integer from ${MIN_MTU} to ${MAX_MTU}, got ${JSON.stringify(o.mtu)}`);
  }
  if (o.port !== undefined && (!isInt(o.port) || o.port < 1 || o.port > 65535)) bad("port", `must be an integer from 1 to 65535, got ${JSON.stringify(o.port)}`);
  for (const f of ["natOutgoing", "isolated", "default", "flood", "dns"] as const) {
    if (o[f] !== undefined && typeof o[f] !== "boolean") bad(f, `must be true or false, got ${JSON.stringify(o[f])}`);
  }
  // Flooding needs one L2 segment; a routed network has none to flood.
  if (o.flood === true && o.mode !== "switched") bad("flood", `is only for mode "switched" (mode is ${JSON.stringify(o.mode ?? NETWORK_DEFAULTS.mode)})`);
  if (o.nodeSelector !== undefined) {
    const sel = o.nodeSelector;
    if (typeof sel !== "object" || sel === null || Array.isArray(sel)) bad("nodeSelector", "must be a map of label names to values");
    else {
      for (const [k, v] of Object.entries(sel)) {
        if (!LABEL_KEY.test(k) || k.length > 316) bad(`nodeSelector.${k}`, "is not a valid label name");
        if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v)) bad(`nodeSelector.${k}`, `value ${JSON.stringify(v)} is not a valid label value`);
      }
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);

  return {
    name: o.name as string,
    cidr: formatCidr(parseCidr(o.cidr as string)),
    vni: o.vni as number,
    nodePrefixLength: o.nodePrefixLength as number,
    mode: (o.mode as NetworkMode | undefined) ?? NETWORK_DEFAULTS.mode,
    mtu: (o.mtu as number | undefined) ?? NETWORK_DEFAULTS.mtu,
    port: (o.port as number | undefined) ?? NETWORK_DEFAULTS.port,
    natOutgoing: (o.natOutgoing as boolean | undefined) ?? NETWORK_DEFAULTS.natOutgoing,
    isolated: (o.isolated as boolean | undefined) ?? NETWORK_DEFAULTS.isolated,
    nodeSelector: { ...((o.nodeSelector as Record<string, string> | undefined) ?? {}) },
    default: (o.default as boolean | undefined) ?? NETWORK_DEFAULTS.default,
    flood: (o.flood as boolean | undefined) ?? NETWORK_DEFAULTS.flood,
    dns: (o.dns as boolean | undefined) ?? NETWORK_DEFAULTS.dns,
  };
}

/** Fields a network keeps for its life: changing one means a different network. */
export const IMMUTABLE_FIELDS = ["cidr", "vni", "nodePrefixLength", "mode"] as const;
const IMMUTABLE_WHY: Record<(typeof IMMUTABLE_FIELDS)[number], string> = {
  cidr: "nodes hold subnets of it",
  vni: "nodes hold subnets of it",
  nodePrefixLength: "nodes hold subnets of it",
  // Routed and switched networks address pods differently (own subnet vs one segment): running pods would keep addresses of the other model.
  mode: "pods hold addresses of that model",
};

/**
 * Checks `spec` against the other stored networks (and its own stored
 * version): VNI unique, CIDRs disjoint, at most one default, and the
 * IMMUTABLE_FIELDS unchanged once created.
 */
export function checkNetworkConflicts(spec: NetworkSpec, others: NetworkSpec[], existing?: NetworkSpec): void {
  const problems: Problem[] = [];
  const cidr = parseCidr(spec.cidr);
  for (const other of others) {
    if (other.name === spec.name) continue;
    if (other.vni === spec.vni) problems.push({ field: "spec.vni", message: `${spec.vni} is already used by network "${other.name}"` });
    if (overlaps(cidr, parseCidr(other.cidr))) problems.push({ field: "spec.cidr", message: `${spec.cidr} overlaps ${other.cidr} of network "${other.name}"` });
    if (spec.default && other.default) problems.push({ field: "spec.default", message: `network "${other.name}" is already the default` });
  }
  if (existing) {
    for (const f of IMMUTABLE_FIELDS) {
      if (existing[f] !== spec[f]) problems.push({ field: `spec.${f}`, message: `is immutable (${IMMUTABLE_WHY[f]}): was ${existing[f]}, got ${spec[f]}; delete and recreate the network instead` });
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);
}
