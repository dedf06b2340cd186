// The heart of the dataplane, pure: what the kernel should hold for a
// NodeDesired, and the batch commands that take the kernel from what it holds
// to that. Ordering rules (flannel's recipe): per peer neighbour, then FDB,
// then route when adding; the reverse when removing. The three batches run in
// sequence and stop at the first error, so a route is only written once its
// neighbour and FDB entries exist.
import { hostAddress, normalizeMac, parseCidr } from "../ip/index.js";
import type { NetworkDesired, NodeDesired } from "./types.js";

export const VXLAN_PREFIX = "weft.";
export const BRIDGE_PREFIX = "weftbr";
export const VXLAN_OVERHEAD = 50;

export const vxlanName = (vni: number) => `${VXLAN_PREFIX}${vni}`;
export const bridgeName = (vni: number) => `${BRIDGE_PREFIX}${vni}`;
export const isWeftLink = (name: string) => name.startsWith(VXLAN_PREFIX) || name.startsWith(BRIDGE_PREFIX);

export interface VxlanInfo {
  id: number;
  local: string;
  link: string;
  port: number;
  learning: boolean;
}

export interface LinkState {
  name: string;
  kind: string;
  mtu: number;
  mac: string;
  up: boolean;
  vxlan?: VxlanInfo;
  /** IPv4 addresses as "a.b.c.d/len". */
  addrs: string[];
}

/** The part of the kernel Weft owns: its devices and what hangs off the VXLAN devices. */
export interface KernelState {
  links: Map<string, LinkState>;
  /** device -> neighbour IP -> lladdr (permanent entries only). */
  neigh: Map<string, Map<string, string>>;
  /** device -> MAC -> remote IPs. */
  fdb: Map<string, Map<string, string[]>>;
  /** device -> destination CIDR -> gateway. */
  routes: Map<string, Map<string, string>>;
  /** MTU of every interface (the uplink's sets the overlay MTU). */
  mtus: Map<string, number>;
}

export function emptyKernelState(): KernelState {
  return { links: new Map(), neigh: new Map(), fdb: new Map(), routes: new Map(), mtus: new Map() };
}

export type EntryKind = "device" | "address" | "neigh" | "fdb" | "route";

export interface Plan {
  /** Devices, addresses, stale routes, new neighbours. */
  ip1: string[];
  /** Stale FDB entries out, new ones in. */
  bridge: string[];
  /** New routes, stale neighbours. */
  ip2: string[];
  byKind: Record<EntryKind, number>;
}

export function planSize(p: Plan): number {
  return p.ip1.length + p.bridge.length + p.ip2.length;
}

export interface WantedPeer {
  gateway: string;
  mac: string;
  underlay: string;
  subnet: string;
}

/**
 * The peers of a network that can be programmed (a unicast MAC, an IPv4
 * underlay address and a valid subnet), by subnet. Anything else is skipped
 * rather than written: one bad line would stop the batch for every peer after it.
 */
export function wantedPeers(net: NetworkDesired): Map<string, WantedPeer> {
  const out = new Map<string, WantedPeer>();
  for (const p of net.peers) {
    const mac = p.vtepMac ? normalizeMac(p.vtepMac) : undefined;
    if (!mac || !p.underlayIp || parseIPv4(p.underlayIp) === undefined || !p.subnet) continue;
    const cidr = parseIPv4Cidr(p.subnet);
    if (!cidr) continue;
    const subnet = `${cidr.gateway}/${cidr.prefix}`;
    out.set(subnet, { gateway: cidr.gateway, mac, underlay: p.underlayIp, subnet });
  }
  return out;
}

/** wantedPeers of every network, computed once per apply and shared by the plan, the projection and the counts. */
export type WantedByNetwork = Map<NetworkDesired, Map<string, WantedPeer>>;

export function wantedByNetwork(desired: NodeDesired): WantedByNetwork {
  return new Map(desired.networks.map((n) => [n, wantedPeers(n)]));
}

// Peer lists run into thousands on every apply, so the dataplane parses
// addresses itself with one regex (ipaddr.js costs ~15 µs per call, which is
// most of a 5000-peer plan). Same rules: dotted decimal, no leading zeros.
const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const IPV4_RE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** An IPv4 address as an unsigned 32-bit integer, or undefined. */
export function parseIPv4(s: string): number | undefined {
  const m = IPV4_RE.exec(s);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

/** "a.b.c.d/n" with no host bits set: its network address as text and its prefix, or undefined. */
export function parseIPv4Cidr(s: string): { gateway: string; prefix: number } | undefined {
  const slash = s.indexOf("/");
  if (slash < 0) return undefined;
  const addrText = s.slice(0, slash);
  const prefixText = s.slice(slash + 1);
  if (!/^\d{1,2}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  const addr = parseIPv4(addrText);
  if (addr === undefined || prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if (((addr & mask) >>> 0) !== addr) return undefined;
  return { gateway: addrText, prefix };
}

export function effectiveMtu(net: NetworkDesired, uplinkMtu: number): number {
  return net.mtu > 0 ? net.mtu : uplinkMtu - VXLAN_OVERHEAD;
}

function vxlanMatches(link: LinkState | undefined, net: NetworkDesired, node: NodeDesired): boolean {
  const v = link?.vxlan;
  return !!link && link.kind === "vxlan" && !!v && v.id === net.vni && v.local === node.underlayIp && v.link === node.uplink && v.port === net.port && !v.learning;
}

/**
 * Commands that make `actual` match `desired`. Only differences produce
 * commands, so an agent restart against a correct kernel writes nothing.
 */
export function planChanges(desired: NodeDesired, actual: KernelState, uplinkMtu: number, wanted: WantedByNetwork = wantedByNetwork(desired)): Plan {
  const plan: Plan = { ip1: [], bridge: [], ip2: [], byKind: { device: 0, address: 0, neigh: 0, fdb: 0, route: 0 } };
  const count = (k: EntryKind) => plan.byKind[k]++;
  const wantedLinks = new Set<string>();
  const linkDels: string[] = [];
  const linkAdds: string[] = [];
  const linkSets: string[] = [];
  const addrCmds: string[] = [];
  const routeDels: string[] = [];
  const neighSets: string[] = [];

  for (const net of desired.networks) {
    if (net.mode !== "routed") continue; // switched mode is not programmed by this dataplane yet
    const vx = vxlanName(net.vni);
    const br = bridgeName(net.vni);
    wantedLinks.add(vx).add(br);
    const mtu = effectiveMtu(net, uplinkMtu);
    const own = parseCidr(net.subnet);

    // VXLAN device: recreate when an identity parameter differs.
    let vxLink = actual.links.get(vx);
    if (vxLink && !vxlanMatches(vxLink, net, desired)) {
      linkDels.push(`link del dev ${vx}`);
      count("device");
      vxLink = undefined;
    }
    const fresh = !vxLink;
    if (fresh) {
      linkAdds.push(`link add ${vx} type vxlan id ${net.vni} local ${desired.underlayIp} dev ${desired.uplink} dstport ${net.port} nolearning`);
      count("device");
    }
    const wantMac = net.vtepMac?.toLowerCase();
    const set: string[] = [];
    if (fresh || vxLink!.mtu !== mtu) set.push(`mtu ${mtu}`);
    if (wantMac && (fresh || vxLink!.mac !== wantMac)) set.push(`address ${wantMac}`);
    if (fresh || !vxLink!.up) set.push("up");
    if (set.length > 0) {
      linkSets.push(`link set dev ${vx} ${set.join(" ")}`);
      if (!fresh) count("device");
    }
    addrCmds.push(...addressChanges(vx, fresh ? [] : vxLink!.addrs, `${hostAddress(own, 0)}/32`, () => count("address")));

    // Bridge with the gateway address pods route through.
    let brLink = actual.links.get(br);
    if (brLink && brLink.kind !== "bridge") {
      linkDels.push(`link del dev ${br}`);
      count("device");
      brLink = undefined;
    }
    if (!brLink) {
      linkAdds.push(`link add ${br} type bridge`);
      linkSets.push(`link set dev ${br} mtu ${mtu} up`);
      count("device");
    } else if (brLink.mtu !== mtu || !brLink.up) {
      linkSets.push(`link set dev ${br} mtu ${mtu} up`);
      count("device");
    }
    addrCmds.push(...addressChanges(br, brLink?.addrs ?? [], `${hostAddress(own, 1)}/${own.prefix}`, () => count("address")));

    // Peers: what the device carries now (nothing if it is being created).
    const peers = wanted.get(net) ?? wantedPeers(net);
    // Changing a device's MAC makes the kernel flush every neighbour on it,
    // permanent ones included (neigh_changeaddr): they must all be written again after it.
    const macChanges = !fresh && !!wantMac && vxLink!.mac !== wantMac;
    const neigh = fresh || macChanges ? new Map<string, string>() : actual.neigh.get(vx) ?? new Map<string, string>();
    const fdb = fresh ? new Map<string, string[]>() : actual.fdb.get(vx) ?? new Map<string, string[]>();
    const routes = fresh ? new Map<string, string>() : actual.routes.get(vx) ?? new Map<string, string>();
    const wantNeigh = new Map([...peers.values()].map((p) => [p.gateway, p.mac]));
    const wantFdb = new Map<string, string>();
    for (const p of peers.values()) wantFdb.set(p.mac, p.underlay);

    for (const dst of routes.keys()) {
      if (!peers.has(dst)) {
        routeDels.push(`route del ${dst} dev ${vx}`);
        count("route");
      }
    }
    for (const [gw, mac] of wantNeigh) {
      if (neigh.get(gw) !== mac) {
        neighSets.push(`neigh replace ${gw} lladdr ${mac} dev ${vx} nud permanent`);
        count("neigh");
      }
    }
    for (const [mac, dsts] of fdb) {
      const want = wantFdb.get(mac);
      for (const d of dsts) {
        if (d !== want) {
          plan.bridge.push(`fdb del ${mac} dev ${vx} dst ${d} self`);
          count("fdb");
        }
      }
    }
    for (const [mac, underlay] of wantFdb) {
      if (!(fdb.get(mac) ?? []).includes(underlay)) {
        plan.bridge.push(`fdb append ${mac} dev ${vx} dst ${underlay} self permanent`);
        count("fdb");
      }
    }
    for (const p of peers.values()) {
      if (routes.get(p.subnet) !== p.gateway) {
        plan.ip2.push(`route replace ${p.subnet} via ${p.gateway} dev ${vx} onlink`);
        count("route");
      }
    }
    for (const gw of neigh.keys()) {
      if (!wantNeigh.has(gw)) {
        plan.ip2.push(`neigh del ${gw} dev ${vx}`);
        count("neigh");
      }
    }
  }

  // Networks no longer wanted: their devices go, and everything on them with it.
  for (const name of actual.links.keys()) {
    if (isWeftLink(name) && !wantedLinks.has(name)) {
      linkDels.push(`link del dev ${name}`);
      count("device");
    }
  }
  plan.ip1 = [...linkDels, ...linkAdds, ...linkSets, ...addrCmds, ...routeDels, ...neighSets];
  return plan;
}

function addressChanges(dev: string, have: string[], want: string, counted: () => void): string[] {
  const out: string[] = [];
  for (const a of have) {
    if (a !== want) {
      out.push(`addr del ${a} dev ${dev}`);
      counted();
    }
  }
  if (!have.includes(want)) {
    out.push(`addr add ${want} dev ${dev}`);
    counted();
  }
  return out;
}

/**
 * The kernel state a successful apply of `desired` leaves behind, starting from
 * `before` (the state the plan was made against). Lets an update diff against
 * what was last written instead of reading thousands of entries back; a
 * resync reads the kernel again and so catches what anyone else changed.
 */
export function projectState(desired: NodeDesired, before: KernelState, uplinkMtu: number, wanted: WantedByNetwork = wantedByNetwork(desired)): KernelState {
  const s: KernelState = { links: new Map(), neigh: new Map(), fdb: new Map(), routes: new Map(), mtus: new Map(before.mtus) };
  for (const net of desired.networks) {
    if (net.mode !== "routed") continue;
    const vx = vxlanName(net.vni);
    const br = bridgeName(net.vni);
    const mtu = effectiveMtu(net, uplinkMtu);
    const own = parseCidr(net.subnet);
    const prevVx = before.links.get(vx);
    // Without a desired MAC the plan never compares it: keep whatever was known.
    const mac = net.vtepMac?.toLowerCase() ?? prevVx?.mac ?? "";
    s.links.set(vx, { name: vx, kind: "vxlan", mtu, mac, up: true, addrs: [`${hostAddress(own, 0)}/32`], vxlan: { id: net.vni, local: desired.underlayIp, link: desired.uplink, port: net.port, learning: false } });
    s.links.set(br, { name: br, kind: "bridge", mtu, mac: before.links.get(br)?.mac ?? "", up: true, addrs: [`${hostAddress(own, 1)}/${own.prefix}`] });
    s.mtus.set(vx, mtu).set(br, mtu);
    const peers = [...(wanted.get(net) ?? wantedPeers(net)).values()];
    s.neigh.set(vx, new Map(peers.map((p) => [p.gateway, p.mac])));
    const fdb = new Map<string, string[]>();
    for (const p of peers) fdb.set(p.mac, [p.underlay]);
    s.fdb.set(vx, fdb);
    s.routes.set(vx, new Map(peers.map((p) => [p.subnet, p.gateway])));
  }
  return s;
}

/** Entries that belong to no complete peer (neighbour without FDB, route without neighbour): removed after a failed apply. */
export function partialPeerCleanup(actual: KernelState): { ip: string[]; count: number } {
  const ip: string[] = [];
  for (const [dev, neigh] of actual.neigh) {
    if (!dev.startsWith(VXLAN_PREFIX)) continue;
    const fdb = actual.fdb.get(dev) ?? new Map<string, string[]>();
    const routes = actual.routes.get(dev) ?? new Map<string, string>();
    for (const [dst, gw] of routes) if (!neigh.has(gw) || !fdb.has(neigh.get(gw)!)) ip.push(`route del ${dst} dev ${dev}`);
    for (const [gw, mac] of neigh) if (!fdb.has(mac)) ip.push(`neigh del ${gw} dev ${dev}`);
  }
  return { ip, count: ip.length };
}

/** How many entries of each kind `desired` puts in the kernel (metrics after a successful apply). */
export function desiredCounts(desired: NodeDesired, wanted: WantedByNetwork = wantedByNetwork(desired)): Record<"device" | "neigh" | "fdb" | "route", number> {
  const routed = desired.networks.filter((n) => n.mode === "routed");
  const peers = routed.reduce((sum, n) => sum + (wanted.get(n) ?? wantedPeers(n)).size, 0);
  return { device: 2 * routed.length, neigh: peers, fdb: peers, route: peers };
}

/** How many entries of each kind the kernel holds for Weft. */
export function entryCounts(actual: KernelState): Record<"device" | "neigh" | "fdb" | "route", number> {
  let neigh = 0;
  let fdb = 0;
  let route = 0;
  for (const m of actual.neigh.values()) neigh += m.size;
  for (const m of actual.fdb.values()) for (const d of m.values()) fdb += d.length;
  for (const m of actual.routes.values()) route += m.size;
  return { device: [...actual.links.keys()].filter(isWeftLink).length, neigh, fdb, route };
}
