// The heart of the dataplane, pure: what the kernel should hold for a
// NodeDesired, and the batch commands that take the kernel from what it holds
// to that. Ordering rules (flannel's recipe): per peer neighbour, then FDB,
// then route when adding; the reverse when removing. The three batches run in
// sequence and stop at the first error, so a route is only written once its
// neighbour and FDB entries exist. Switched networks: the VXLAN device is a
// port of the bridge (learning off, neigh_suppress on), the bridge carries the
// distributed gateway (the same address and MAC on every node), and per
// remote endpoint FDB entries come before its neighbour (see switched.ts).
import { gatewayAddress, switchedGatewayMac } from "../cni/index.js";
import { containsAddress, hostAddress, parseCidr, parseIPv4 } from "../ip/index.js";
import { emptyKernelPeers, PeerTable, type KernelPeers } from "./peers.js";
import { emptyKernelSwitched, SwitchedTable, type EntryPlan, type KernelSwitched } from "./switched.js";
import type { NetworkSpec, NodeDesired, NodeSpec } from "./types.js";

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
  /** The bridge this device is a port of, if any. */
  master?: string;
  /** Bridge port flags, when it is a port. */
  port?: { learning: boolean; neighSuppress: boolean };
  /** IPv4 addresses as "a.b.c.d/len". */
  addrs: string[];
}

/** The part of the kernel Weft owns: its devices and what hangs off the VXLAN devices. */
export interface KernelState {
  links: Map<string, LinkState>;
  /** device (VXLAN devices and bridges) -> neighbour IP -> lladdr (permanent entries only). */
  neigh: Map<string, Map<string, string>>;
  /** VXLAN device -> MAC -> remote IPs (the device's own FDB, `self`). */
  fdb: Map<string, Map<string, string[]>>;
  /** VXLAN device -> MACs with a static bridge FDB entry on it as a port (`master static`). */
  master: Map<string, Set<string>>;
  /** device -> destination CIDR -> gateway. */
  routes: Map<string, Map<string, string>>;
  /** MTU of every interface (the uplink's sets the overlay MTU). */
  mtus: Map<string, number>;
}

export function emptyKernelState(): KernelState {
  return { links: new Map(), neigh: new Map(), fdb: new Map(), master: new Map(), routes: new Map(), mtus: new Map() };
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

export function effectiveMtu(net: NetworkSpec, uplinkMtu: number): number {
  return net.mtu > 0 ? net.mtu : uplinkMtu - VXLAN_OVERHEAD;
}

function vxlanMatches(link: LinkState | undefined, net: NetworkSpec, node: NodeSpec): boolean {
  const v = link?.vxlan;
  return !!link && link.kind === "vxlan" && !!v && v.id === net.vni && v.local === node.underlayIp && v.link === node.uplink && v.port === net.port && !v.learning;
}

/** The device-level commands for the networks, and per VXLAN device whether its peers' entries are gone with it. */
export interface DevicePlan {
  linkDels: string[];
  linkAdds: string[];
  linkSets: string[];
  /** Bridge port settings (after every device exists and is enslaved). */
  portSets: string[];
  addrCmds: string[];
  /** Devices created anew (nothing on them) or whose MAC changes (the kernel flushes their neighbours). */
  fresh: Set<string>;
  macChanges: Set<string>;
  count: number;
}

/**
 * Devices, bridges and addresses that make `actual` match the networks; stale
 * Weft devices removed. Only differences produce commands.
 */
export function planDevices(node: NodeSpec, networks: NetworkSpec[], actual: KernelState, uplinkMtu: number): DevicePlan {
  const d: DevicePlan = { linkDels: [], linkAdds: [], linkSets: [], portSets: [], addrCmds: [], fresh: new Set(), macChanges: new Set(), count: 0 };
  const count = () => d.count++;
  const wantedLinks = new Set<string>();
  for (const net of networks) {
    const switched = net.mode === "switched";
    const vx = vxlanName(net.vni);
    const br = bridgeName(net.vni);
    wantedLinks.add(vx).add(br);
    const mtu = effectiveMtu(net, uplinkMtu);
    const own = parseCidr(net.subnet);

    // VXLAN device: recreate when an identity parameter differs.
    let vxLink = actual.links.get(vx);
    if (vxLink && !vxlanMatches(vxLink, net, node)) {
      d.linkDels.push(`link del dev ${vx}`);
      count();
      vxLink = undefined;
    }
    const fresh = !vxLink;
    if (fresh) {
      // The MAC is set at creation: peers learned it from this node's first Join.
      d.linkAdds.push(`link add ${vx} ${net.vtepMac ? `address ${net.vtepMac} ` : ""}type vxlan id ${net.vni} local ${node.underlayIp} dev ${node.uplink} dstport ${net.port} nolearning`);
      d.fresh.add(vx);
      count();
    }
    const wantMac = net.vtepMac?.toLowerCase();
    const set: string[] = [];
    if (fresh || vxLink!.mtu !== mtu) set.push(`mtu ${mtu}`);
    if (wantMac && !fresh && vxLink!.mac !== wantMac) {
      set.push(`address ${wantMac}`);
      // Changing a device's MAC makes the kernel flush every neighbour on it,
      // permanent ones included (neigh_changeaddr): they must all be written again after it.
      d.macChanges.add(vx);
    }
    if (fresh || !vxLink!.up) set.push("up");
    // Switched: a port of the bridge. Routed: never one (a network switched before, by hand).
    if (switched && (fresh || vxLink!.master !== br)) set.push(`master ${br}`);
    if (!switched && !fresh && vxLink!.master) set.push("nomaster");
    if (set.length > 0) {
      d.linkSets.push(`link set dev ${vx} ${set.join(" ")}`);
      if (!fresh) count();
    }
    if (switched) {
      // The bridge never learns remote MACs from the underlay (static FDB entries say where they live) and answers ARP for them itself.
      const port = fresh || vxLink!.master !== br ? undefined : vxLink!.port;
      if (!port || port.learning || !port.neighSuppress) {
        d.portSets.push(`link set dev ${vx} type bridge_slave learning off neigh_suppress on`);
        if (!fresh) count();
      }
    }
    // Routed: the VXLAN device holds the subnet's .0 (the peers' neighbour entries point at it). Switched: no address.
    d.addrCmds.push(...addressChanges(vx, fresh ? [] : vxLink!.addrs, switched ? undefined : `${hostAddress(own, 0)}/32`, count));

    // Bridge with the gateway address pods route through. Switched: the
    // distributed gateway, the same address and MAC on every node.
    let brLink = actual.links.get(br);
    if (brLink && brLink.kind !== "bridge") {
      d.linkDels.push(`link del dev ${br}`);
      count();
      brLink = undefined;
    }
    const gwMac = switched ? switchedGatewayMac(net.vni) : undefined;
    if (!brLink) {
      d.linkAdds.push(`link add ${br} ${gwMac ? `address ${gwMac} ` : ""}type bridge`);
      d.linkSets.push(`link set dev ${br} mtu ${mtu} up`);
      d.fresh.add(br);
      count();
    } else {
      const brSet: string[] = [];
      if (brLink.mtu !== mtu || !brLink.up) brSet.push(`mtu ${mtu}`, "up");
      if (gwMac && brLink.mac !== gwMac) {
        brSet.push(`address ${gwMac}`);
        // As for a VXLAN device: the kernel flushes the bridge's neighbours on a MAC change.
        d.macChanges.add(br);
      }
      if (brSet.length > 0) {
        d.linkSets.push(`link set dev ${br} ${brSet.join(" ")}`);
        count();
      }
    }
    const gwCidr = switched ? `${gatewayAddress(net)}/${parseCidr(net.cidr).prefix}` : `${hostAddress(own, 1)}/${own.prefix}`;
    d.addrCmds.push(...addressChanges(br, brLink?.addrs ?? [], gwCidr, count));
  }
  // Networks no longer wanted: their devices go, and everything on them with it.
  for (const name of actual.links.keys()) {
    if (isWeftLink(name) && !wantedLinks.has(name)) {
      d.linkDels.push(`link del dev ${name}`);
      count();
    }
  }
  return d;
}

/** The peer entries the kernel holds on `dev`, as a plan starts from them (nothing on a fresh device, no neighbours after a MAC change). */
export function kernelPeersFor(dev: string, actual: KernelState, devices: DevicePlan): KernelPeers {
  if (devices.fresh.has(dev)) return emptyKernelPeers();
  return {
    neigh: devices.macChanges.has(dev) ? new Map() : new Map(actual.neigh.get(dev) ?? []),
    fdb: new Map(actual.fdb.get(dev) ?? []),
    routes: new Map(actual.routes.get(dev) ?? []),
  };
}

/**
 * The entries a switched network's bridge and VXLAN port hold, as a plan
 * starts from them: nothing on a fresh device, no neighbours after the
 * bridge's MAC changed; of the bridge's permanent neighbours only those inside
 * the network's CIDR (Weft writes no others; the rest are someone else's).
 */
export function kernelSwitchedFor(t: SwitchedTable, actual: KernelState, devices: DevicePlan): KernelSwitched {
  const k = emptyKernelSwitched();
  if (!devices.fresh.has(t.bridge) && !devices.macChanges.has(t.bridge)) {
    for (const [ip, mac] of actual.neigh.get(t.bridge) ?? []) {
      const n = parseIPv4(ip);
      if (n !== undefined && containsAddress(t.cidr, n)) k.neigh.set(ip, mac);
    }
  }
  if (!devices.fresh.has(t.dev)) {
    for (const [mac, dsts] of actual.fdb.get(t.dev) ?? []) k.fdb.set(mac, [...dsts]);
    for (const mac of actual.master.get(t.dev) ?? []) k.master.add(mac);
  }
  return k;
}

/** A switched network's table for `net`. */
export function switchedTableFor(net: NetworkSpec): SwitchedTable {
  return new SwitchedTable(vxlanName(net.vni), bridgeName(net.vni), parseCidr(net.cidr), gatewayAddress(net), net.flood);
}

/** Device and per-network entry commands merged into the three batches, in flannel's order. */
export function mergePlans(devices: DevicePlan | undefined, entries: EntryPlan[]): Plan {
  const plan: Plan = { ip1: [], bridge: [], ip2: [], byKind: { device: 0, address: 0, neigh: 0, fdb: 0, route: 0 } };
  if (devices) {
    plan.ip1.push(...devices.linkDels, ...devices.linkAdds, ...devices.linkSets, ...devices.portSets, ...devices.addrCmds);
    plan.byKind.device = devices.count - devices.addrCmds.length;
    plan.byKind.address = devices.addrCmds.length;
  }
  for (const p of entries) plan.ip1.push(...p.ip1);
  for (const p of entries) {
    plan.bridge.push(...p.bridge);
    plan.ip2.push(...p.ip2);
    plan.byKind.neigh += p.counts.neigh;
    plan.byKind.fdb += p.counts.fdb;
    plan.byKind.route += p.counts.route;
  }
  return plan;
}

/**
 * Pure, whole-state form (tests): the commands that make `actual` match
 * `desired`. The dataplane plans the same way, but keeps the tables between
 * applies so an update plans only the keys that changed.
 */
export function planChanges(desired: NodeDesired, actual: KernelState, uplinkMtu: number): Plan {
  const devices = planDevices(desired, desired.networks, actual, uplinkMtu);
  const peers: EntryPlan[] = [];
  for (const net of desired.networks) {
    if (net.mode === "switched") {
      const t = switchedTableFor(net);
      t.kernel = kernelSwitchedFor(t, actual, devices);
      for (const p of net.peers) t.setPeer(p);
      for (const e of net.endpoints ?? []) t.setEndpoint(e);
      t.markAllDirty();
      peers.push(t.plan());
      continue;
    }
    const table = new PeerTable(vxlanName(net.vni));
    table.kernel = kernelPeersFor(table.dev, actual, devices);
    for (const p of net.peers) table.set(p);
    table.markAllDirty();
    peers.push(table.plan());
  }
  return mergePlans(devices, peers);
}

/** Commands that leave `dev` with exactly `want` (no IPv4 address when undefined). */
function addressChanges(dev: string, have: string[], want: string | undefined, counted: () => void): string[] {
  const out: string[] = [];
  for (const a of have) {
    if (a !== want) {
      out.push(`addr del ${a} dev ${dev}`);
      counted();
    }
  }
  if (want !== undefined && !have.includes(want)) {
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

/** How many entries of each kind the kernel holds for Weft. */
export function entryCounts(actual: KernelState): Record<"device" | "neigh" | "fdb" | "route", number> {
  let neigh = 0;
  let fdb = 0;
  let route = 0;
  for (const m of actual.neigh.values()) neigh += m.size;
  for (const m of actual.fdb.values()) for (const d of m.values()) fdb += d.length;
  for (const m of actual.master.values()) fdb += m.size;
  for (const m of actual.routes.values()) route += m.size;
  return { device: [...actual.links.keys()].filter(isWeftLink).length, neigh, fdb, route };
}
