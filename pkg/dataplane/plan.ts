// The heart of the dataplane, pure: what the kernel should hold for a
// NodeDesired, and the batch commands that take the kernel from what it holds
// to that. Ordering rules (flannel's recipe): per peer neighbour, then FDB,
// then route when adding; the reverse when removing. The three batches run in
// sequence and stop at the first error, so a route is only written once its
// neighbour and FDB entries exist.
import { hostAddress, parseCidr, formatCidr } from "../ip/index.js";
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

interface WantedPeer {
  gateway: string;
  mac: string;
  underlay: string;
  subnet: string;
}

/** The peers of a network that can be programmed (a MAC and a valid subnet), by subnet. */
export function wantedPeers(net: NetworkDesired): Map<string, WantedPeer> {
  const out = new Map<string, WantedPeer>();
  for (const p of net.peers) {
    if (!p.vtepMac || !p.underlayIp || !p.subnet) continue;
    let cidr;
    try {
      cidr = parseCidr(p.subnet);
    } catch {
      continue;
    }
    const subnet = formatCidr(cidr);
    out.set(subnet, { gateway: hostAddress(cidr, 0), mac: p.vtepMac.toLowerCase(), underlay: p.underlayIp, subnet });
  }
  return out;
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
export function planChanges(desired: NodeDesired, actual: KernelState, uplinkMtu: number): Plan {
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
    const peers = wantedPeers(net);
    const neigh = fresh ? new Map<string, string>() : actual.neigh.get(vx) ?? new Map<string, string>();
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
export function desiredCounts(desired: NodeDesired): Record<"device" | "neigh" | "fdb" | "route", number> {
  const routed = desired.networks.filter((n) => n.mode === "routed");
  const peers = routed.reduce((sum, n) => sum + wantedPeers(n).size, 0);
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
