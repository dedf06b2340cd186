// Decoding of the values Weft reads back from etcd. Anyone with etcd access
// can write anything under the prefix (an operator's etcdctl, an older or
// newer replica, a disk bit flip), so nothing read is trusted: a value that
// does not decode is reported with its key and left out of the view, and it
// never reaches code that assumes the record's shape. Pure.
import net from "node:net";
import { z } from "zod";
import { parseCidr } from "../ip/index.js";
import { validateNetworkSpec } from "../spec/index.js";
import type { ParsedKey } from "./keys.js";
import type { EndpointRecord, LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

/** Far above any real record (a node with Kubernetes-sized labels is ~1-2 KiB); a value past it is refused unparsed. */
export const MAX_RECORD_BYTES = 64 * 1024;

export type RecordKind = "network" | "node" | "lease" | "endpoint";

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

const ip = z.string().refine((s) => net.isIP(s) !== 0, { message: "not an IP address" });
const cidr = z.string().refine(
  (s) => {
    try {
      parseCidr(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: "not a CIDR" },
);
const mac = z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, "not a lower-case MAC address");
const stringMap = z.record(z.string(), z.string());

// Node and lease records are written only by controllers. Unknown fields are
// dropped rather than refused so that a newer replica adding a field during a
// rolling upgrade does not make older replicas drop every node.
export const nodeRecordSchema = z.object({
  name: z.string().min(1),
  underlayIP: ip,
  labels: stringMap.default({}),
  agentVersion: z.string().default(""),
  uplinkMtu: z.number().int().min(0).max(65535).default(0),
  vtepMacs: z.record(z.string(), mac).default({}),
  subnets: z.record(z.string(), cidr).default({}),
  lastSeen: z.string().default(""),
  appliedAt: z.string().optional(),
});

export const leaseRecordSchema = z.object({
  network: z.string().min(1),
  subnet: cidr,
  node: z.string().min(1),
  // Empty until the node registered its underlay IP / created its device: such a lease is held but has no peer entry.
  vtepIP: z.union([ip, z.literal("")]),
  vtepMac: z.union([mac, z.literal("")]),
  acquired: z.string().default(""),
  renewed: z.string().default(""),
});

const ipv4 = z.string().refine((s) => net.isIPv4(s), { message: "not an IPv4 address" });

// Written only by controllers, from reports they validated (pkg/controller/endpoints.ts).
export const endpointRecordSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}\/[A-Za-z0-9_.-]{1,15}$/, "not <containerId>/<ifName>"),
  network: z.string().min(1),
  node: z.string().min(1),
  name: z.string().max(507).default(""),
  aliases: z.array(z.string().min(1).max(253)).max(32).default([]),
  ips: z.array(ipv4).min(1).max(16),
  mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, "not a lower-case MAC address"),
});

function problems(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join(".") : "value"}: ${i.message}`)
    .join("; ");
}

function parseJson(bytes: Buffer | string): Decoded<unknown> {
  const size = typeof bytes === "string" ? Buffer.byteLength(bytes) : bytes.length;
  if (size > MAX_RECORD_BYTES) return { ok: false, error: `value is ${size} bytes, more than the ${MAX_RECORD_BYTES} a record may have` };
  try {
    return { ok: true, value: JSON.parse(bytes.toString()) };
  } catch (err) {
    return { ok: false, error: `not JSON: ${(err as Error).message}` };
  }
}

/** A network spec, checked by the same validator as weftctl's and Kubernetes' write paths (unknown fields refused: a field that is stored but not implemented is a defect). */
function checkNetwork(json: unknown, name?: string): Decoded<NetworkSpec> {
  let spec: NetworkSpec;
  try {
    spec = validateNetworkSpec(json);
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  if (name !== undefined && spec.name !== name) return { ok: false, error: `name: "${spec.name}" does not match its key (${name})` };
  return { ok: true, value: spec };
}

function checkNode(json: unknown, name?: string): Decoded<NodeRecord> {
  const res = nodeRecordSchema.safeParse(json);
  if (!res.success) return { ok: false, error: problems(res.error) };
  if (name !== undefined && res.data.name !== name) return { ok: false, error: `name: "${res.data.name}" does not match its key (${name})` };
  return { ok: true, value: res.data as NodeRecord };
}

function checkLease(json: unknown, network?: string, subnet?: string): Decoded<LeaseRecord> {
  const res = leaseRecordSchema.safeParse(json);
  if (!res.success) return { ok: false, error: problems(res.error) };
  const l = res.data;
  if (network !== undefined && l.network !== network) return { ok: false, error: `network: "${l.network}" does not match its key (${network})` };
  if (subnet !== undefined && l.subnet !== subnet) return { ok: false, error: `subnet: "${l.subnet}" does not match its key (${subnet})` };
  return { ok: true, value: l };
}

function checkEndpoint(json: unknown, network?: string, node?: string, id?: string): Decoded<EndpointRecord> {
  const res = endpointRecordSchema.safeParse(json);
  if (!res.success) return { ok: false, error: problems(res.error) };
  const e = res.data;
  for (const [field, want] of [["network", network], ["node", node], ["id", id]] as const) {
    if (want !== undefined && e[field] !== want) return { ok: false, error: `${field}: "${e[field]}" does not match its key (${want})` };
  }
  return { ok: true, value: e };
}

const then = <T>(json: Decoded<unknown>, check: (v: unknown) => Decoded<T>): Decoded<T> => (json.ok ? check(json.value) : json);

export const decodeNetwork = (bytes: Buffer | string, name?: string) => then(parseJson(bytes), (v) => checkNetwork(v, name));
export const decodeNode = (bytes: Buffer | string, name?: string) => then(parseJson(bytes), (v) => checkNode(v, name));
export const decodeLease = (bytes: Buffer | string, network?: string, subnet?: string) => then(parseJson(bytes), (v) => checkLease(v, network, subnet));
export const decodeEndpoint = (bytes: Buffer | string, network?: string, node?: string, id?: string) => then(parseJson(bytes), (v) => checkEndpoint(v, network, node, id));

export type DecodedRecord =
  | { kind: "network"; value: NetworkSpec }
  | { kind: "node"; value: NodeRecord }
  | { kind: "lease"; value: LeaseRecord }
  | { kind: "endpoint"; value: EndpointRecord };

export type RecordResult = ({ ok: true } & DecodedRecord) | { ok: false; kind: RecordKind; error: string };

/** Checks an already-parsed value against the schema of the key it was stored under; `undefined` for keys that hold no record Weft reads (meta/, unknown paths). */
export function checkRecord(key: ParsedKey, json: unknown): RecordResult | undefined {
  const wrap = <K extends RecordKind, T>(kind: K, d: Decoded<T>) => (d.ok ? ({ ok: true, kind, value: d.value } as RecordResult) : { ok: false as const, kind, error: d.error });
  if (key.kind === "network") return wrap("network", checkNetwork(json, key.network));
  if (key.kind === "node") return wrap("node", checkNode(json, key.node));
  if (key.kind === "lease") return wrap("lease", checkLease(json, key.network, key.subnet));
  if (key.kind === "endpoint") return wrap("endpoint", checkEndpoint(json, key.network, key.node, key.id));
  return undefined;
}

/** Decodes the bytes stored under a parsed key (size, JSON, then the key's schema). */
export function decodeRecord(key: ParsedKey, bytes: Buffer | string): RecordResult | undefined {
  if (key.kind === "other") return undefined;
  const kind: RecordKind = key.kind;
  const json = parseJson(bytes);
  return json.ok ? checkRecord(key, json.value) : { ok: false, kind, error: json.error };
}

/** One watch event, decoded: a record put, a key deleted, or a value that did not decode (left out of the view like a delete). */
export type RecordEvent =
  | { type: "put"; key: ParsedKey; record: DecodedRecord; lease: string; modRevision: number }
  | { type: "delete"; key: ParsedKey; modRevision: number }
  | { type: "invalid"; key: ParsedKey; rawKey: string; kind: RecordKind; error: string; modRevision: number };

/** A stored value that did not decode, as a snapshot reports it. */
export interface InvalidRecord {
  key: string;
  kind: RecordKind;
  error: string;
  modRevision: number;
}
