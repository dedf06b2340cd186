// The CNI side of Weft: the conflist an agent writes for its default network
// (bridge + host-local + portmap), and invoking the plugins of a conflist the
// way a container runtime does (the lab and tests attach pod namespaces so).
import fs from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { formatCidr, hostAddress, intToIp, ipToInt, lastAddress, parseCidr } from "../ip/index.js";
import { ENDPOINT_SOCKET } from "./endpoint.js";

export const CONFLIST_NAME = "10-weft.conflist";
/** Conflists of the node's other networks: `weft-<network>.conflist` (sorts after 10-weft, so runtimes that take the first file take the default). */
const NETWORK_CONFLIST_RE = /^weft-[a-z0-9]([a-z0-9-]*[a-z0-9])?\.conflist$/;

/** The file a network's conflist is written to: 10-weft.conflist for the node's default network, weft-<network>.conflist for the others. */
export function conflistName(network: string, isDefault: boolean): string {
  return isDefault ? CONFLIST_NAME : `weft-${network}.conflist`;
}

/** Is `file` a conflist name Weft writes (so Weft may remove it when its network goes)? */
export function isWeftConflist(file: string): boolean {
  return file === CONFLIST_NAME || NETWORK_CONFLIST_RE.test(file);
}

/**
 * Makes `dir` hold exactly the Weft conflists in `want` (file name → conflist):
 * writes the new or changed ones, removes Weft's files not wanted. Files of
 * other software are never touched. Returns how many files it wrote or removed.
 */
export async function syncConflists(dir: string, want: Map<string, object>): Promise<number> {
  let n = 0;
  for (const [file, conflist] of want) if (await writeConflist(dir, conflist, file)) n++;
  const present = await fs.readdir(dir).catch(() => [] as string[]);
  for (const file of present) if (isWeftConflist(file) && !want.has(file) && (await removeConflist(dir, file))) n++;
  return n;
}
/**
 * The pods' gateway on this node: routed, the first host of the node's subnet
 * (each node its own); switched, the first host of the network's CIDR, the same
 * address on every node (a distributed gateway, answered locally by each
 * node's bridge, with the MAC from switchedGatewayMac). The agent's DNS server
 * listens here too.
 */
export function gatewayAddress(net: { mode: "routed" | "switched"; cidr: string; subnet: string }): string {
  return hostAddress(parseCidr(net.mode === "switched" ? net.cidr : net.subnet), 1);
}

/** The distributed gateway's MAC for a switched network: locally administered, the same on every node, unique per VNI. */
export function switchedGatewayMac(vni: number): string {
  const b = [0x02, 0x57, 0x46, (vni >> 16) & 0xff, (vni >> 8) & 0xff, vni & 0xff];
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** What a pod's resolv.conf should say on a network with dns (the CNI result's `dns`). */
export interface CniDns {
  nameservers: string[];
  search: string[];
}

/** The node's resolver for `net` (its gateway) and the search path `<network>.<domain>`, `<domain>`. */
export function cniDns(net: { name: string; mode: "routed" | "switched"; cidr: string; subnet: string }, domain: string): CniDns {
  const d = domain.replace(/\.$/, "");
  return { nameservers: [gatewayAddress(net)], search: [`${net.name}.${d}`, d] };
}

export const CNI_VERSION = "1.0.0";
export const DEFAULT_CNI_BIN_DIR = "/usr/lib/cni";

/** What the conflist needs to know about a network on this node. */
export interface CniNetwork {
  name: string;
  vni: number;
  /** Absent: routed. */
  mode?: "routed" | "switched";
  /** The network's CIDR (switched: the pods' subnet; routed: unused). */
  cidr?: string;
  /** This node's subnet (its lease): routed, the pods' subnet; switched, the range their addresses come from. */
  subnet: string;
  /** Effective overlay MTU (pods' interfaces get it). */
  mtu: number;
  /** Set when the agent serves DNS on this network: the weft plugin puts it into the pod's CNI result. */
  resolver?: CniDns;
}

/**
 * host-local's range: routed, the node's subnet with its first host as the
 * gateway; switched, the whole CIDR as one L2 subnet with the distributed
 * gateway, addresses handed out only from this node's lease (without the
 * lease's network and broadcast addresses, and never the gateway), so they
 * stay unique across nodes without a central call per pod.
 */
export function ipamRange(net: CniNetwork): { range: Record<string, string>; gateway: string } {
  if (net.mode !== "switched") {
    const subnet = parseCidr(net.subnet);
    const gateway = hostAddress(subnet, 1);
    return { range: { subnet: formatCidr(subnet), gateway }, gateway };
  }
  if (!net.cidr) throw new Error(`network ${net.name}: a switched network's conflist needs its cidr`);
  const cidr = parseCidr(net.cidr);
  const lease = parseCidr(net.subnet);
  const gateway = gatewayAddress({ mode: "switched", cidr: net.cidr, subnet: net.subnet });
  const gw = ipToInt(gateway);
  let start = lease.base + 1;
  let end = lastAddress(lease) - 1;
  if (start === gw) start++;
  if (end === gw) end--;
  if (start > end) throw new Error(`network ${net.name}: lease ${net.subnet} leaves no pod addresses`);
  return { range: { subnet: formatCidr(cidr), rangeStart: intToIp(start), rangeEnd: intToIp(end), gateway }, gateway };
}

export function buildConflist(net: CniNetwork, stateDir: string): Record<string, unknown> {
  const { range, gateway } = ipamRange(net);
  return {
    cniVersion: CNI_VERSION,
    name: `weft-${net.name}`,
    plugins: [
      {
        type: "bridge",
        bridge: `weftbr${net.vni}`,
        isGateway: true,
        ipMasq: false, // Weft's own NAT chain masquerades
        hairpinMode: true,
        // 0 (a NetworkDesired's "default") leaves the plugin's own default rather than writing an invalid MTU.
        ...(net.mtu > 0 ? { mtu: net.mtu } : {}),
        ipam: {
          type: "host-local",
          ranges: [[range]],
          // Routed: the network's CIDR through this interface too, so a pod attached to several networks reaches each one through its own interface (only the first default route is kept).
          routes: net.mode === "switched" ? [{ dst: "0.0.0.0/0", gw: gateway }] : [{ dst: "0.0.0.0/0" }, ...(net.cidr ? [{ dst: net.cidr }] : [])],
          dataDir: path.join(stateDir, "cni", "networks"),
        },
      },
      // dns: the weft plugin hands the node's resolver to the runtime in its result (pod resolv.conf).
      { ...weftPlugin(net.name, stateDir), ...(net.resolver ? { dns: net.resolver } : {}) },
      { type: "portmap", capabilities: { portMappings: true }, snat: true },
    ],
  };
}

/** The `weft` plugin's entry: reports each attached interface of `network` to the agent's socket in its state dir (cmd/weft-cni). */
export function weftPlugin(network: string, stateDir: string): Record<string, unknown> {
  return { type: "weft", network, socket: path.join(stateDir, ENDPOINT_SOCKET) };
}

/** Writes atomically (temp file + rename); unchanged content is not rewritten. Returns whether it wrote. */
export async function writeConflist(dir: string, conflist: object, name = CONFLIST_NAME): Promise<boolean> {
  const file = path.join(dir, name);
  const text = JSON.stringify(conflist, null, 2) + "\n";
  const old = await fs.readFile(file, "utf8").catch(() => undefined);
  if (old === text) return false;
  await fs.mkdir(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text, { mode: 0o644 });
  await fs.rename(tmp, file);
  return true;
}

export async function removeConflist(dir: string, name = CONFLIST_NAME): Promise<boolean> {
  try {
    await fs.rm(path.join(dir, name));
    return true;
  } catch {
    return false;
  }
}

export interface CniInvocation {
  conflistPath: string;
  /** e.g. /var/run/netns/NAME */
  netnsPath: string;
  containerId: string;
  ifName?: string;
  binDir?: string;
  /**
   * Run the plugins inside this named network namespace, the "host" the pod
   * belongs to (lab, tests). Absent: the current one, as a container runtime does.
   */
  hostNetns?: string;
  /** Passed to every plugin as the config's `args` (CNI convention), e.g. `{ weft: { name, aliases } }`. */
  args?: Record<string, unknown>;
  /** CNI_ARGS, e.g. `K8S_POD_NAMESPACE=a;K8S_POD_NAME=b`. */
  cniArgs?: string;
  /** Published ports (what kubelet passes for hostPort, `-p 8080:80` elsewhere), for plugins with the portMappings capability. */
  portMappings?: PortMapping[];
}

/** The CNI `portMappings` capability's entry (CONVENTIONS.md). */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: "tcp" | "udp" | "sctp";
  hostIP?: string;
}

export interface CniAddResult {
  /** The pod's IPv4 address, without prefix. */
  ip: string;
  mac?: string;
  raw: Record<string, unknown>;
}

async function callPlugin(binDir: string, command: "ADD" | "DEL", inv: CniInvocation, config: Record<string, unknown>): Promise<Record<string, unknown>> {
  const plugin = path.join(binDir, String(config.type));
  const [file, args] = inv.hostNetns ? ["ip", ["netns", "exec", inv.hostNetns, plugin]] : [plugin, []];
  const res = await execa(file, args, {
    input: JSON.stringify(config),
    reject: false,
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: inv.containerId,
      CNI_NETNS: inv.netnsPath,
      CNI_IFNAME: inv.ifName ?? "eth0",
      CNI_PATH: binDir,
      ...(inv.cniArgs ? { CNI_ARGS: inv.cniArgs } : {}),
    },
  });
  const out = String(res.stdout).trim();
  if (res.exitCode !== 0) {
    let msg = String(res.stderr) || out;
    try {
      const e = JSON.parse(out) as { msg?: string; details?: string };
      msg = [e.msg, e.details].filter(Boolean).join(": ");
    } catch {
      /* not JSON */
    }
    throw new Error(`CNI ${command} ${config.type}: ${msg}`);
  }
  return out ? (JSON.parse(out) as Record<string, unknown>) : {};
}

async function readConflist(file: string): Promise<{ name: string; cniVersion: string; plugins: Record<string, unknown>[] }> {
  return JSON.parse(await fs.readFile(file, "utf8"));
}

/** A plugin's config as a runtime passes it: list name and version, `args`, and runtimeConfig for the capabilities it declares. */
function pluginConfig(list: { name: string; cniVersion: string }, plugin: Record<string, unknown>, inv: CniInvocation): Record<string, unknown> {
  const caps = (plugin.capabilities ?? {}) as Record<string, boolean>;
  return { ...plugin, name: list.name, cniVersion: list.cniVersion, ...(inv.args ? { args: inv.args } : {}), ...(caps.portMappings ? { runtimeConfig: { portMappings: inv.portMappings ?? [] } } : {}) };
}

/**
 * ADD through every plugin of the conflist in order, chaining prevResult (CNI
 * spec). When a plugin fails, DEL runs for the whole list, as runtimes do, so
 * nothing is left half-attached; the ADD error is what is thrown.
 */
export async function cniAdd(inv: CniInvocation): Promise<CniAddResult> {
  const list = await readConflist(inv.conflistPath);
  const binDir = inv.binDir ?? DEFAULT_CNI_BIN_DIR;
  let prev: Record<string, unknown> | undefined;
  try {
    for (const plugin of list.plugins) {
      prev = await callPlugin(binDir, "ADD", inv, { ...pluginConfig(list, plugin, inv), ...(prev ? { prevResult: prev } : {}) });
    }
  } catch (err) {
    await cniDel(inv).catch(() => undefined);
    throw err;
  }
  const ips = (prev?.ips ?? []) as { address: string; interface?: number }[];
  const ifaces = (prev?.interfaces ?? []) as { name: string; mac?: string; sandbox?: string }[];
  const v4 = ips.find((i) => !i.address.includes(":"));
  if (!v4) throw new Error(`CNI ADD: no IPv4 address in result ${JSON.stringify(prev)}`);
  const iface = v4.interface !== undefined ? ifaces[v4.interface] : ifaces.find((i) => i.sandbox);
  return { ip: v4.address.split("/")[0], mac: iface?.mac, raw: prev! };
}

/** DEL through the plugins in reverse order; tolerant of what is already gone (CNI spec). */
export async function cniDel(inv: CniInvocation): Promise<void> {
  const list = await readConflist(inv.conflistPath);
  const binDir = inv.binDir ?? DEFAULT_CNI_BIN_DIR;
  // Every plugin gets its DEL even when one before it failed: what one leaves
  // behind must not keep the others' resources (addresses, rules) allocated.
  let first: unknown;
  for (const plugin of [...list.plugins].reverse()) {
    await callPlugin(binDir, "DEL", inv, pluginConfig(list, plugin, inv)).catch((err) => (first ??= err));
  }
  if (first) throw first;
}
