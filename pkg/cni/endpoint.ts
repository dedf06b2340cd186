// The contract between the `weft` CNI plugin and the node's agent: one JSON
// request per connection on a unix socket in the agent's state dir, one JSON
// reply. Written once here and imported by both sides, so the plugin and the
// agent can never disagree on a field. Pure: no I/O.
import { isIPv4, normalizeMac } from "../ip/index.js";

/** The socket's file name inside the agent's state dir. */
export const ENDPOINT_SOCKET = "cni.sock";
/** Largest request the agent reads; an endpoint report is a few hundred bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;

const NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?(\/[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?)?$/;
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const NETWORK_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_ALIASES = 32;
const MAX_IPS = 16;

/** An attached pod interface, as the plugin reports it and the agent relays it. */
export interface Endpoint {
  /** Stable identity on the node: `<containerId>/<ifName>`. */
  id: string;
  containerId: string;
  /** CNI_NETNS: the path of the pod's network namespace. */
  netns: string;
  ifName: string;
  network: string;
  /** `namespace/pod` under Kubernetes, or the name the runtime passed; "" when none. */
  name: string;
  aliases: string[];
  /** Addresses without prefix length. */
  ips: string[];
  mac: string;
}

export type EndpointRequest =
  | { op: "add"; endpoint: Endpoint }
  | { op: "del"; containerId: string; ifName: string; network: string }
  | { op: "check"; endpoint: Endpoint }
  /** Is the agent up and serving endpoints (CNI STATUS)? */
  | { op: "status" };

export type EndpointReply = { ok: true } | { ok: false; error: string };

export function endpointId(containerId: string, ifName: string): string {
  return `${containerId}/${ifName}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(obj: Record<string, unknown>, field: string, problems: string[], re?: RegExp, what?: string): string {
  const v = obj[field];
  if (typeof v !== "string") {
    problems.push(`${field}: must be a string`);
    return "";
  }
  if (re && !re.test(v)) problems.push(`${field}: "${v.slice(0, 80)}" is not ${what}`);
  return v;
}

/**
 * The fields every reader of an endpoint checks (the plugin, the agent's
 * socket, the controller relaying a report): containerId, ifName, network,
 * name, aliases, ips, mac. Problems are pushed to `p`, unprefixed.
 */
export function checkEndpointFields(v: Record<string, unknown>, p: string[]): Omit<Endpoint, "netns"> {
  const containerId = str(v, "containerId", p, CONTAINER_ID_RE, "a container ID");
  const ifName = str(v, "ifName", p, IFNAME_RE, "an interface name");
  const network = str(v, "network", p, NETWORK_RE, "a network name");
  const name = v.name === undefined ? "" : str(v, "name", p);
  if (name !== "" && !NAME_RE.test(name)) p.push(`name: "${name.slice(0, 80)}" is not a DNS-style name (or namespace/name)`);
  let aliases: string[] = [];
  if (v.aliases !== undefined) {
    if (!Array.isArray(v.aliases) || v.aliases.some((a) => typeof a !== "string")) p.push("aliases: must be a list of strings");
    else if (v.aliases.length > MAX_ALIASES) p.push(`aliases: at most ${MAX_ALIASES}`);
    else {
      aliases = v.aliases as string[];
      aliases.forEach((a, i) => {
        if (!NAME_RE.test(a) || a.includes("/")) p.push(`aliases[${i}]: "${a.slice(0, 80)}" is not a DNS-style name`);
      });
    }
  }
  let ips: string[] = [];
  if (!Array.isArray(v.ips) || v.ips.length === 0 || v.ips.some((a) => typeof a !== "string")) p.push("ips: must be a non-empty list of addresses");
  else if (v.ips.length > MAX_IPS) p.push(`ips: at most ${MAX_IPS}`);
  else {
    ips = v.ips as string[];
    ips.forEach((a, i) => {
      if (!isIPv4(a)) p.push(`ips[${i}]: "${a.slice(0, 80)}" is not an IPv4 address`);
    });
  }
  const rawMac = str(v, "mac", p);
  const mac = normalizeMac(rawMac);
  if (rawMac && !mac) p.push(`mac: "${rawMac.slice(0, 80)}" is not a unicast MAC address`);
  const id = endpointId(containerId, ifName);
  if (v.id !== undefined && v.id !== id) p.push(`id: must be "<containerId>/<ifName>" (${id})`);
  return { id, containerId, ifName, network, name, aliases: [...new Set(aliases)], ips, mac: mac ?? "" };
}

/** Decodes an endpoint; returns it, or the problems, each naming the field. */
export function decodeEndpoint(v: unknown, prefix = "endpoint"): Endpoint | string[] {
  if (!isRecord(v)) return [`${prefix}: must be an object`];
  const p: string[] = [];
  const netns = str(v, "netns", p, /^\/\S{1,4095}$/, "an absolute path");
  const fields = checkEndpointFields(v, p);
  if (p.length > 0) return p.map((s) => `${prefix}.${s}`);
  return { ...fields, netns };
}

/** Decodes a request read from the socket; problems name the field. */
export function decodeRequest(text: string): EndpointRequest | string[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return [`request: not JSON (${(err as Error).message})`];
  }
  if (!isRecord(v)) return ["request: must be an object"];
  if (v.op === "add" || v.op === "check") {
    const ep = decodeEndpoint(v.endpoint);
    return Array.isArray(ep) ? ep : { op: v.op, endpoint: ep };
  }
  if (v.op === "status") return { op: "status" };
  if (v.op === "del") {
    const p: string[] = [];
    const containerId = str(v, "containerId", p, CONTAINER_ID_RE, "a container ID");
    const ifName = str(v, "ifName", p, IFNAME_RE, "an interface name");
    const network = str(v, "network", p, NETWORK_RE, "a network name");
    return p.length > 0 ? p : { op: "del", containerId, ifName, network };
  }
  return [`op: must be "add", "del", "check" or "status", got ${JSON.stringify(v.op)?.slice(0, 40)}`];
}

/** Two reports describe the same attachment (CHECK compares so). */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return (
    a.id === b.id &&
    a.network === b.network &&
    a.netns === b.netns &&
    a.mac === b.mac &&
    a.name === b.name &&
    a.ips.length === b.ips.length &&
    a.ips.every((ip, i) => ip === b.ips[i]) &&
    a.aliases.length === b.aliases.length &&
    a.aliases.every((x, i) => x === b.aliases[i])
  );
}
