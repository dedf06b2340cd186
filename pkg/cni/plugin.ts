// The `weft` CNI plugin: chained after bridge + host-local (+ portmap), it
// reports the attached interface to the node's agent and passes the previous
// result on unchanged. Chained rather than wrapping: the standard plugins keep
// doing interfaces and IPAM exactly as operators know them, a runtime that
// gets an error from any plugin of the chain runs DEL for all of them (so a
// pod is never left half-attached), and the plugin only needs what the
// previous result already says (addresses, MAC, sandbox).
import net from "node:net";
import path from "node:path";
import { ENDPOINT_SOCKET, MAX_REQUEST_BYTES, decodeEndpoint, type Endpoint, type EndpointReply, type EndpointRequest } from "./endpoint.js";

export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
export const DEFAULT_STATE_DIR = "/var/lib/weft";
const SOCKET_TIMEOUT_MS = 5000;

/** CNI error codes (SPEC.md "Error"). */
export const CniCode = { incompatibleVersion: 1, unsupportedField: 2, unknownContainer: 3, invalidEnv: 4, io: 5, decode: 6, invalidConfig: 7, tryAgainLater: 11 } as const;

export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details = "") {
    super(msg);
  }
}

/** What the plugin reads from its stdin (the network config as the runtime passes it). */
export interface WeftPluginConfig {
  cniVersion: string;
  /** The Weft network this conflist attaches to. */
  network: string;
  /** The agent's socket; default `<stateDir>/cni.sock`. */
  socket: string;
  prevResult?: Record<string, unknown>;
  name: string;
  aliases: string[];
  /** The agent's resolver for this network (dns on): put into the result for the runtime to write the pod's resolv.conf. */
  dns?: { nameservers: string[]; search: string[] };
}

const IP_LIKE = /^[0-9a-fA-F:.]+$/;
const SEARCH_DOMAIN = /^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/;

/** The config's `dns` (written by the agent for networks with dns on); a clear error naming the field otherwise. */
function parseDns(v: unknown): WeftPluginConfig["dns"] {
  if (v === undefined) return undefined;
  const o = record(v);
  if (!o) throw new CniError(CniCode.invalidConfig, "dns: must be an object with nameservers and search");
  const list = (field: "nameservers" | "search", re: RegExp): string[] => {
    const l = o[field] ?? [];
    if (!Array.isArray(l) || l.some((x) => typeof x !== "string" || !re.test(x))) throw new CniError(CniCode.invalidConfig, `dns.${field}: must be a list of ${field === "nameservers" ? "IP addresses" : "domain names"}, got ${JSON.stringify(l)}`);
    return l as string[];
  };
  const nameservers = list("nameservers", IP_LIKE);
  if (nameservers.length === 0) throw new CniError(CniCode.invalidConfig, "dns.nameservers: at least one address is needed");
  return { nameservers, search: list("search", SEARCH_DOMAIN) };
}

/** `K8S_POD_NAMESPACE=a;K8S_POD_NAME=b` → map. Malformed pairs are a CNI error, as libcni does. */
export function parseCniArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const pair of s.split(";")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CniError(CniCode.invalidEnv, `CNI_ARGS: "${pair}" is not KEY=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function record(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/**
 * The plugin's config from stdin and CNI_ARGS. The endpoint's name: Kubernetes'
 * `namespace/pod` from CNI_ARGS, else `args.weft.name` (other runtimes, the lab);
 * aliases from `args.weft.aliases`.
 */
export function parseConfig(stdin: string, cniArgs: Record<string, string>): WeftPluginConfig {
  let raw: Record<string, unknown> | undefined;
  try {
    raw = record(JSON.parse(stdin));
  } catch (err) {
    throw new CniError(CniCode.decode, `network config: not JSON (${(err as Error).message})`);
  }
  if (!raw) throw new CniError(CniCode.decode, "network config: must be a JSON object");
  const cniVersion = typeof raw.cniVersion === "string" ? raw.cniVersion : "";
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) throw new CniError(CniCode.incompatibleVersion, `cniVersion: "${cniVersion}" is not one of ${SUPPORTED_VERSIONS.join(", ")}`);
  if (typeof raw.network !== "string" || raw.network === "") throw new CniError(CniCode.invalidConfig, "network: the Weft network name is required");
  if (raw.socket !== undefined && (typeof raw.socket !== "string" || !path.isAbsolute(raw.socket))) throw new CniError(CniCode.invalidConfig, "socket: must be an absolute path");
  const weftArgs = record(record(raw.args)?.weft) ?? {};
  const k8sName = cniArgs.K8S_POD_NAMESPACE && cniArgs.K8S_POD_NAME ? `${cniArgs.K8S_POD_NAMESPACE}/${cniArgs.K8S_POD_NAME}` : "";
  if (weftArgs.name !== undefined && typeof weftArgs.name !== "string") throw new CniError(CniCode.invalidConfig, "args.weft.name: must be a string");
  const aliases = weftArgs.aliases ?? [];
  if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== "string")) throw new CniError(CniCode.invalidConfig, "args.weft.aliases: must be a list of strings");
  return {
    cniVersion,
    network: raw.network,
    socket: (raw.socket as string | undefined) ?? path.join(DEFAULT_STATE_DIR, ENDPOINT_SOCKET),
    prevResult: record(raw.prevResult),
    name: k8sName || ((weftArgs.name as string | undefined) ?? ""),
    aliases: aliases as string[],
    dns: parseDns(raw.dns),
  };
}

interface ResultInterface {
  name?: string;
  mac?: string;
  sandbox?: string;
}

/** The endpoint the previous plugins attached: the sandbox interface named CNI_IFNAME and its addresses. */
export function endpointFromResult(conf: WeftPluginConfig, env: { containerId: string; netns: string; ifName: string }): Endpoint {
  const prev = conf.prevResult;
  if (!prev) throw new CniError(CniCode.invalidConfig, "prevResult: missing; the weft plugin must be chained after bridge");
  const ifaces = (Array.isArray(prev.interfaces) ? prev.interfaces : []) as ResultInterface[];
  const index = ifaces.findIndex((i) => i?.name === env.ifName && typeof i.sandbox === "string" && i.sandbox !== "");
  if (index < 0) throw new CniError(CniCode.invalidConfig, `prevResult.interfaces: no sandbox interface named ${env.ifName}`);
  const ips = ((Array.isArray(prev.ips) ? prev.ips : []) as { address?: unknown; interface?: unknown }[])
    .filter((ip) => ip && (ip.interface === undefined || ip.interface === index) && typeof ip.address === "string")
    .map((ip) => String(ip.address).split("/")[0]);
  const ep = decodeEndpoint(
    { containerId: env.containerId, netns: env.netns, ifName: env.ifName, network: conf.network, name: conf.name, aliases: conf.aliases, ips, mac: ifaces[index].mac ?? "" },
    "endpoint",
  );
  if (Array.isArray(ep)) throw new CniError(CniCode.invalidConfig, `cannot report the endpoint: ${ep.join("; ")}`);
  return ep;
}

/** One request, one reply over the agent's unix socket. */
export function askAgent(socket: string, req: EndpointRequest, timeoutMs = SOCKET_TIMEOUT_MS): Promise<EndpointReply> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socket);
    let buf = "";
    const timer = setTimeout(() => conn.destroy(new Error(`no answer from the agent within ${timeoutMs} ms`)), timeoutMs);
    conn.setEncoding("utf8");
    conn.on("connect", () => conn.end(JSON.stringify(req) + "\n"));
    conn.on("data", (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST_BYTES) conn.destroy(new Error("the agent's answer is too large"));
    });
    conn.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    conn.on("end", () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as EndpointReply);
      } catch {
        reject(new Error(`the agent's answer is not JSON: ${buf.slice(0, 200)}`));
      }
    });
  });
}

export interface PluginEnv {
  command: string;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
}

/**
 * Runs one CNI command; returns what goes to stdout. Throws CniError for what
 * the runtime must see as a failure.
 */
export async function runPlugin(env: PluginEnv, stdin: string, warn: (msg: string) => void): Promise<string> {
  if (env.command === "VERSION") return JSON.stringify({ cniVersion: "1.1.0", supportedVersions: SUPPORTED_VERSIONS });
  const conf = parseConfig(stdin, parseCniArgs(env.args));
  const ask = async (req: EndpointRequest): Promise<void> => {
    let reply: EndpointReply;
    try {
      reply = await askAgent(conf.socket, req);
    } catch (err) {
      throw new CniError(CniCode.tryAgainLater, `weft agent unreachable at ${conf.socket}`, (err as Error).message);
    }
    if (!reply.ok) throw new CniError(CniCode.invalidConfig, `weft agent refused the endpoint: ${reply.error}`);
  };
  switch (env.command) {
    case "ADD": {
      if (!env.containerId || !env.ifName || !env.netns) throw new CniError(CniCode.invalidEnv, "CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME are required for ADD");
      await ask({ op: "add", endpoint: endpointFromResult(conf, env) });
      // The result passes on unchanged, plus the network's resolver when the agent serves DNS on it (CNI result `dns`).
      return JSON.stringify({ cniVersion: conf.cniVersion, ...(conf.prevResult ?? {}), ...(conf.dns ? { dns: conf.dns } : {}) });
    }
    case "CHECK": {
      await ask({ op: "check", endpoint: endpointFromResult(conf, env) });
      return "";
    }
    case "DEL": {
      if (!env.containerId || !env.ifName) throw new CniError(CniCode.invalidEnv, "CNI_CONTAINERID and CNI_IFNAME are required for DEL");
      try {
        await ask({ op: "del", containerId: env.containerId, ifName: env.ifName, network: conf.network });
      } catch (err) {
        // DEL must succeed when what it removes is already gone (CNI spec); an
        // endpoint the agent did not hear about is removed when the agent
        // reconciles its endpoints against the namespaces that still exist.
        if (!(err instanceof CniError) || err.code !== CniCode.tryAgainLater) throw err;
        warn(`weft: ${err.message} (${err.details}); the agent removes the endpoint when it reconciles`);
      }
      return "";
    }
    case "STATUS": {
      // CNI 1.1: 50 = "the plugin is not available"; the runtime then holds pod creation.
      await ask({ op: "status" }).catch((err) => {
        throw err instanceof CniError && err.code === CniCode.tryAgainLater ? new CniError(50, err.message, err.details) : err;
      });
      return "";
    }
    case "GC":
      return "";
    default:
      throw new CniError(CniCode.invalidEnv, `CNI_COMMAND: "${env.command}" is not ADD, DEL, CHECK, STATUS, GC or VERSION`);
  }
}
