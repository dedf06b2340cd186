// Per VXLAN device, the peers' kernel entries in Felix's DeltaTracker shape:
// the desired entries (from the peers, validated once when they arrive) and
// the entries the kernel is known to hold, side by side, keyed the way the
// kernel keys them (neighbour by gateway IP, FDB by MAC, route by subnet), and
// the keys that changed since the last write. A plan covers only those keys,
// so one more peer among 5000 costs three commands and a few map lookups.
// Pure: no I/O.
import { hostAddress, normalizeMac, parseCidr, parseIPv4 } from "../ip/index.js";
import type { EntryPlan } from "./switched.js";
import type { PeerProblem, PeerSpec } from "./types.js";

/** A peer as the kernel carries it. */
export interface WantedPeer {
  node: string;
  /** The peer subnet's network address: neighbour IP and route gateway. */
  gateway: string;
  mac: string;
  underlay: string;
  /** Canonical "a.b.c.d/n". */
  subnet: string;
}

/** Why `peer` cannot be programmed, or its kernel form. */
export function validatePeer(peer: PeerSpec): WantedPeer | string {
  if (!peer.nodeName) return "node_name is empty";
  if (parseIPv4(peer.underlayIp) === undefined) return `underlay_ip "${peer.underlayIp}" is not an IPv4 address`;
  // A peer whose device does not exist yet has no MAC: no entries until it has one.
  if (!peer.vtepMac) return "vtep_mac is not known yet";
  const mac = normalizeMac(peer.vtepMac);
  if (!mac) return `vtep_mac "${peer.vtepMac}" is not a unicast MAC address`;
  if (!peer.subnet) return "subnet is empty";
  let gateway: string;
  let prefix: number;
  try {
    const c = parseCidr(peer.subnet);
    gateway = hostAddress(c, 0);
    prefix = c.prefix;
  } catch (err) {
    return `subnet: ${(err as Error).message}`;
  }
  return { node: peer.nodeName, gateway, mac, underlay: peer.underlayIp, subnet: `${gateway}/${prefix}` };
}

export interface KernelPeers {
  /** neighbour IP -> lladdr (permanent entries). */
  neigh: Map<string, string>;
  /** MAC -> remote IPs. */
  fdb: Map<string, string[]>;
  /** destination CIDR -> gateway. */
  routes: Map<string, string>;
}

export function emptyKernelPeers(): KernelPeers {
  return { neigh: new Map(), fdb: new Map(), routes: new Map() };
}

/** The commands for one device, in the three batches' order, and what the kernel holds once they succeed. */
export interface PeerPlan extends EntryPlan {
  /** `ip` batch 1: stale routes out, new neighbours in. */
  routeDels: string[];
  neighSets: string[];
  /** `bridge` batch: stale FDB entries out, new ones in. */
  bridge: string[];
  /** `ip` batch 2: new routes in, stale neighbours out. */
  ip2: string[];
}

export class PeerTable {
  /** Desired peers by node name. */
  private readonly byNode = new Map<string, WantedPeer>();
  /** Which node owns each desired key: one peer per gateway, MAC and subnet. */
  private readonly neighOwner = new Map<string, string>();
  private readonly fdbOwner = new Map<string, string>();
  private readonly routeOwner = new Map<string, string>();
  /** Peers refused because another holds their subnet or MAC: retried when keys free up. */
  private readonly refused = new Map<string, PeerSpec>();
  /** What the kernel holds, as far as Weft knows (exact after a full read, kept exact by commits). */
  kernel: KernelPeers = emptyKernelPeers();
  private dirtyNeigh = new Set<string>();
  private dirtyFdb = new Set<string>();
  private dirtyRoute = new Set<string>();

  constructor(readonly dev: string) {}

  get size(): number {
    return this.byNode.size;
  }

  get dirty(): boolean {
    return this.dirtyNeigh.size + this.dirtyFdb.size + this.dirtyRoute.size > 0;
  }

  has(node: string): boolean {
    return this.byNode.has(node);
  }

  /** Node names of the desired peers. */
  nodes(): IterableIterator<string> {
    return this.byNode.keys();
  }

  /** The desired peers back in their input form (moving them to a recreated table). */
  specs(): PeerSpec[] {
    const out: PeerSpec[] = [...this.refused.values()];
    for (const w of this.byNode.values()) out.push({ nodeName: w.node, underlayIp: w.underlay, vtepMac: w.mac, subnet: w.subnet });
    return out;
  }

  /** Adds or replaces a peer; returns why it is not programmed, if it is not. */
  set(spec: PeerSpec): PeerProblem {
    const w = validatePeer(spec);
    if (typeof w === "string") {
      this.remove(spec.nodeName);
      return w;
    }
    const old = this.byNode.get(w.node);
    if (old && old.gateway === w.gateway && old.mac === w.mac && old.underlay === w.underlay && old.subnet === w.subnet) return undefined;
    const clash = this.clash(w);
    if (clash) {
      this.remove(w.node);
      this.refused.set(w.node, spec);
      return clash;
    }
    if (old) this.drop(old);
    this.refused.delete(w.node);
    this.byNode.set(w.node, w);
    this.neighOwner.set(w.gateway, w.node);
    this.fdbOwner.set(w.mac, w.node);
    this.routeOwner.set(w.subnet, w.node);
    this.touch(w);
    return undefined;
  }

  remove(node: string): void {
    this.refused.delete(node);
    const old = this.byNode.get(node);
    if (!old) return;
    this.drop(old);
    // A peer refused for a clash with this one may fit now.
    for (const spec of [...this.refused.values()]) this.set(spec);
  }

  clear(): void {
    for (const node of [...this.byNode.keys()]) this.remove(node);
    this.refused.clear();
  }

  private clash(w: WantedPeer): string | undefined {
    for (const [what, owners, key] of [["subnet", this.routeOwner, w.subnet], ["gateway", this.neighOwner, w.gateway], ["vtep_mac", this.fdbOwner, w.mac]] as const) {
      const owner = owners.get(key);
      if (owner !== undefined && owner !== w.node) return `${what} ${key} already belongs to peer ${owner}`;
    }
    return undefined;
  }

  private drop(old: WantedPeer): void {
    this.byNode.delete(old.node);
    if (this.neighOwner.get(old.gateway) === old.node) this.neighOwner.delete(old.gateway);
    if (this.fdbOwner.get(old.mac) === old.node) this.fdbOwner.delete(old.mac);
    if (this.routeOwner.get(old.subnet) === old.node) this.routeOwner.delete(old.subnet);
    this.touch(old);
  }

  private touch(w: WantedPeer): void {
    this.dirtyNeigh.add(w.gateway);
    this.dirtyFdb.add(w.mac);
    this.dirtyRoute.add(w.subnet);
  }

  /** Every key, desired or in the kernel, becomes pending: what a full resync plans over. */
  markAllDirty(): void {
    for (const k of this.neighOwner.keys()) this.dirtyNeigh.add(k);
    for (const k of this.kernel.neigh.keys()) this.dirtyNeigh.add(k);
    for (const k of this.fdbOwner.keys()) this.dirtyFdb.add(k);
    for (const k of this.kernel.fdb.keys()) this.dirtyFdb.add(k);
    for (const k of this.routeOwner.keys()) this.dirtyRoute.add(k);
    for (const k of this.kernel.routes.keys()) this.dirtyRoute.add(k);
  }

  /** Desired entries counted by kind (metrics). */
  counts(): { neigh: number; fdb: number; route: number } {
    return { neigh: this.neighOwner.size, fdb: this.fdbOwner.size, route: this.routeOwner.size };
  }

  /**
   * The commands for the pending keys against the kernel model. Takes the
   * pending keys: changes arriving while the batches run are pending for the next plan.
   */
  plan(): PeerPlan {
    const dev = this.dev;
    const k = this.kernel;
    const [neighKeys, fdbKeys, routeKeys] = [this.dirtyNeigh, this.dirtyFdb, this.dirtyRoute];
    this.dirtyNeigh = new Set();
    this.dirtyFdb = new Set();
    this.dirtyRoute = new Set();
    const p: PeerPlan = { ip1: [], routeDels: [], neighSets: [], bridge: [], ip2: [], counts: { neigh: 0, fdb: 0, route: 0 }, commit: () => undefined, abandon: () => undefined };
    const neighAfter: [string, string | undefined][] = [];
    const fdbAfter: [string, string | undefined][] = [];
    const routeAfter: [string, string | undefined][] = [];
    const routeAdds: string[] = [];
    const neighDels: string[] = [];
    const fdbAdds: string[] = [];

    for (const dst of routeKeys) {
      const owner = this.routeOwner.get(dst);
      const want = owner === undefined ? undefined : this.byNode.get(owner)!.gateway;
      const have = k.routes.get(dst);
      if (want === have) continue;
      if (want === undefined) p.routeDels.push(`route del ${dst} dev ${dev}`);
      else routeAdds.push(`route replace ${dst} via ${want} dev ${dev} onlink`);
      p.counts.route++;
      routeAfter.push([dst, want]);
    }
    for (const gw of neighKeys) {
      const owner = this.neighOwner.get(gw);
      const want = owner === undefined ? undefined : this.byNode.get(owner)!.mac;
      const have = k.neigh.get(gw);
      if (want === have) continue;
      if (want === undefined) neighDels.push(`neigh del ${gw} dev ${dev}`);
      else p.neighSets.push(`neigh replace ${gw} lladdr ${want} dev ${dev} nud permanent`);
      p.counts.neigh++;
      neighAfter.push([gw, want]);
    }
    for (const mac of fdbKeys) {
      const owner = this.fdbOwner.get(mac);
      const want = owner === undefined ? undefined : this.byNode.get(owner)!.underlay;
      const have = k.fdb.get(mac) ?? [];
      let changed = false;
      for (const d of have) {
        if (d === want) continue;
        p.bridge.push(`fdb del ${mac} dev ${dev} dst ${d} self`);
        p.counts.fdb++;
        changed = true;
      }
      if (want !== undefined && !have.includes(want)) {
        fdbAdds.push(`fdb append ${mac} dev ${dev} dst ${want} self permanent`);
        p.counts.fdb++;
        changed = true;
      }
      if (changed) fdbAfter.push([mac, want]);
    }
    // Stale FDB entries out before new ones in (one MAC moving between peers).
    p.bridge.push(...fdbAdds);
    p.ip1 = [...p.routeDels, ...p.neighSets];
    p.ip2 = [...routeAdds, ...neighDels];
    p.commit = () => {
      for (const [key, v] of routeAfter) v === undefined ? k.routes.delete(key) : k.routes.set(key, v);
      for (const [key, v] of neighAfter) v === undefined ? k.neigh.delete(key) : k.neigh.set(key, v);
      for (const [key, v] of fdbAfter) v === undefined ? k.fdb.delete(key) : k.fdb.set(key, [v]);
    };
    p.abandon = () => {
      for (const key of routeKeys) this.dirtyRoute.add(key);
      for (const key of neighKeys) this.dirtyNeigh.add(key);
      for (const key of fdbKeys) this.dirtyFdb.add(key);
    };
    return p;
  }
}
