// Per switched network, the remote endpoints' kernel entries in Felix's
// DeltaTracker shape (as PeerTable for routed peers): the desired entries
// (endpoints validated once on arrival, peers giving each node's underlay IP)
// and the entries the kernel is known to hold, side by side, keyed the way the
// kernel keys them, and the keys changed since the last write. The entries:
//   - bridge FDB `<mac> dev weft.<vni> master static`: the bridge sends the
//     endpoint's frames to the VXLAN port (the port does not learn);
//   - VXLAN FDB `<mac> dev weft.<vni> dst <node underlay> self permanent`: the
//     VXLAN device sends them to the endpoint's node;
//   - neighbour `<ip> lladdr <mac> nud permanent` on weftbr<vni>: with
//     neigh_suppress on the VXLAN port the bridge answers ARP for the endpoint
//     itself, so a request never crosses the underlay;
//   - with `flood` only: `00:00:00:00:00:00 dst <peer>` per peer (broadcast
//     and multicast to every member).
// An endpoint whose node is not a peer (yet) waits: its entries appear when
// the peer does. Two endpoints claiming one IP or MAC (a pod re-created on
// another node before its old endpoint is gone): the newest claim owns the
// key, and an older claim takes it back when the newer one leaves. Pure: no I/O.
import { containsAddress, normalizeMac, parseIPv4, type Cidr } from "../ip/index.js";
import type { EndpointProblem, EndpointSpec, PeerProblem, PeerSpec } from "./types.js";

export const FLOOD_MAC = "00:00:00:00:00:00";

/** An endpoint as the kernel carries it. */
export interface WantedEndpoint {
  key: string;
  node: string;
  ips: string[];
  mac: string;
}

/** Why `ep` cannot be programmed in the network `cidr` with gateway `gateway`, or its kernel form. */
export function validateEndpoint(ep: EndpointSpec, cidr: Cidr, gateway: string): WantedEndpoint | string {
  if (!ep.key) return "key is empty";
  if (!ep.nodeName) return "node_name is empty";
  const mac = normalizeMac(ep.mac ?? "");
  if (!mac) return `mac "${ep.mac}" is not a unicast MAC address`;
  const ips: string[] = [];
  for (const [i, ip] of (ep.ips ?? []).entries()) {
    const n = parseIPv4(ip);
    if (n === undefined) return `ips[${i}] "${ip}" is not an IPv4 address`;
    if (!containsAddress(cidr, n)) return `ips[${i}] ${ip} is outside the network's cidr`;
    if (ip === gateway) return `ips[${i}] ${ip} is the network's gateway`;
    if (!ips.includes(ip)) ips.push(ip);
  }
  return { key: ep.key, node: ep.nodeName, ips, mac };
}

/** What the kernel holds for one switched network, as far as Weft owns it. */
export interface KernelSwitched {
  /** Permanent neighbours on the bridge inside the network's CIDR: IP -> lladdr. */
  neigh: Map<string, string>;
  /** Static bridge FDB entries on the VXLAN port (master). */
  master: Set<string>;
  /** VXLAN FDB entries (self): MAC -> remote IPs (FLOOD_MAC included). */
  fdb: Map<string, string[]>;
}

export function emptyKernelSwitched(): KernelSwitched {
  return { neigh: new Map(), master: new Set(), fdb: new Map() };
}

/** The commands for one network in the three batches' order, and what the kernel holds once they succeed. */
export interface EntryPlan {
  ip1: string[];
  bridge: string[];
  ip2: string[];
  counts: { neigh: number; fdb: number; route: number };
  /** Applies the plan's effect to the kernel model (after the batches succeeded). */
  commit(): void;
  /** Marks the planned keys pending again (after a failure). */
  abandon(): void;
}

/** Claims on one key in arrival order; the last one owns it. */
class Claims {
  private readonly m = new Map<string, string[]>();
  add(key: string, who: string): void {
    const l = this.m.get(key);
    if (!l) this.m.set(key, [who]);
    else if (l[l.length - 1] !== who) this.m.set(key, [...l.filter((x) => x !== who), who]);
  }
  remove(key: string, who: string): void {
    const l = this.m.get(key)?.filter((x) => x !== who);
    if (!l || l.length === 0) this.m.delete(key);
    else this.m.set(key, l);
  }
  owner(key: string): string | undefined {
    const l = this.m.get(key);
    return l?.[l.length - 1];
  }
  keys(): IterableIterator<string> {
    return this.m.keys();
  }
  get size(): number {
    return this.m.size;
  }
}

export class SwitchedTable {
  /** Peer node -> underlay IP. */
  private readonly peers = new Map<string, string>();
  private readonly endpoints = new Map<string, WantedEndpoint>();
  /** node -> keys of its endpoints (a peer arriving or leaving dirties exactly those). */
  private readonly byNode = new Map<string, Set<string>>();
  private readonly ipClaims = new Claims();
  private readonly macClaims = new Claims();
  /** What the kernel holds, as far as Weft knows (exact after a full read, kept exact by commits). */
  kernel: KernelSwitched = emptyKernelSwitched();
  private dirtyIp = new Set<string>();
  private dirtyMac = new Set<string>();

  constructor(
    /** The VXLAN device (bridge port). */
    readonly dev: string,
    readonly bridge: string,
    readonly cidr: Cidr,
    readonly gateway: string,
    private floodOn: boolean,
  ) {}

  get flood(): boolean {
    return this.floodOn;
  }

  set flood(on: boolean) {
    if (on === this.floodOn) return;
    this.floodOn = on;
    this.dirtyMac.add(FLOOD_MAC);
  }

  get dirty(): boolean {
    return this.dirtyIp.size + this.dirtyMac.size > 0;
  }

  /** Peers known (each endpoint's node must be one). */
  get size(): number {
    return this.peers.size;
  }

  nodes(): IterableIterator<string> {
    return this.peers.keys();
  }

  endpointKeys(): IterableIterator<string> {
    return this.endpoints.keys();
  }

  /** Peers and endpoints in their input form (moving them to a recreated table). */
  peerSpecs(): PeerSpec[] {
    return [...this.peers].map(([nodeName, underlayIp]) => ({ nodeName, underlayIp, vtepMac: "", subnet: "" }));
  }

  endpointSpecs(): EndpointSpec[] {
    return [...this.endpoints.values()].map((e) => ({ key: e.key, nodeName: e.node, ips: [...e.ips], mac: e.mac }));
  }

  /** A peer matters here only for its underlay IP (no per-node routes or VTEP neighbours in switched mode). */
  setPeer(spec: PeerSpec): PeerProblem {
    if (!spec.nodeName) return "node_name is empty";
    if (parseIPv4(spec.underlayIp) === undefined) {
      this.removePeer(spec.nodeName);
      return `underlay_ip "${spec.underlayIp}" is not an IPv4 address`;
    }
    if (this.peers.get(spec.nodeName) === spec.underlayIp) return undefined;
    this.peers.set(spec.nodeName, spec.underlayIp);
    this.touchNode(spec.nodeName);
    return undefined;
  }

  removePeer(node: string): void {
    if (!this.peers.delete(node)) return;
    this.touchNode(node);
  }

  clearPeers(): void {
    for (const node of [...this.peers.keys()]) this.removePeer(node);
  }

  setEndpoint(spec: EndpointSpec): EndpointProblem {
    const w = validateEndpoint(spec, this.cidr, this.gateway);
    if (typeof w === "string") {
      this.removeEndpoint(spec.key);
      return w;
    }
    const old = this.endpoints.get(w.key);
    if (old && old.node === w.node && old.mac === w.mac && old.ips.join() === w.ips.join()) return undefined;
    if (old) this.drop(old);
    this.endpoints.set(w.key, w);
    let keys = this.byNode.get(w.node);
    if (!keys) this.byNode.set(w.node, (keys = new Set()));
    keys.add(w.key);
    for (const ip of w.ips) this.ipClaims.add(ip, w.key);
    this.macClaims.add(w.mac, w.key);
    this.touch(w);
    return undefined;
  }

  removeEndpoint(key: string): void {
    const old = this.endpoints.get(key);
    if (old) this.drop(old);
  }

  clearEndpoints(): void {
    for (const e of [...this.endpoints.values()]) this.drop(e);
  }

  private drop(e: WantedEndpoint): void {
    this.endpoints.delete(e.key);
    const keys = this.byNode.get(e.node);
    keys?.delete(e.key);
    if (keys?.size === 0) this.byNode.delete(e.node);
    for (const ip of e.ips) this.ipClaims.remove(ip, e.key);
    this.macClaims.remove(e.mac, e.key);
    this.touch(e);
  }

  private touch(e: WantedEndpoint): void {
    for (const ip of e.ips) this.dirtyIp.add(ip);
    this.dirtyMac.add(e.mac);
  }

  private touchNode(node: string): void {
    for (const key of this.byNode.get(node) ?? []) this.touch(this.endpoints.get(key)!);
    if (this.floodOn) this.dirtyMac.add(FLOOD_MAC);
  }

  /** Every key, desired or in the kernel, becomes pending: what a full resync plans over. */
  markAllDirty(): void {
    for (const k of this.ipClaims.keys()) this.dirtyIp.add(k);
    for (const k of this.kernel.neigh.keys()) this.dirtyIp.add(k);
    for (const k of this.macClaims.keys()) this.dirtyMac.add(k);
    for (const k of this.kernel.master) this.dirtyMac.add(k);
    for (const k of this.kernel.fdb.keys()) this.dirtyMac.add(k);
    this.dirtyMac.add(FLOOD_MAC);
  }

  /** The underlay of the endpoint owning a key, when that endpoint's node is a peer. */
  private placed(owner: string | undefined): { ep: WantedEndpoint; underlay: string } | undefined {
    if (owner === undefined) return undefined;
    const ep = this.endpoints.get(owner)!;
    const underlay = this.peers.get(ep.node);
    return underlay === undefined ? undefined : { ep, underlay };
  }

  /** Desired entries by kind (metrics): neighbours, and FDB entries (bridge + VXLAN per MAC, one per flood target). */
  counts(): { neigh: number; fdb: number; route: number } {
    let neigh = 0;
    let fdb = 0;
    for (const ip of this.ipClaims.keys()) if (this.placed(this.ipClaims.owner(ip))) neigh++;
    for (const mac of this.macClaims.keys()) if (this.placed(this.macClaims.owner(mac))) fdb += 2;
    if (this.floodOn) fdb += this.peers.size;
    return { neigh, fdb, route: 0 };
  }

  /**
   * The commands for the pending keys against the kernel model: neighbours
   * out first, FDB entries (stale out, then new in), neighbours in last, so a
   * neighbour never names a MAC the bridge cannot forward. Takes the pending
   * keys: changes arriving while the batches run are pending for the next plan.
   */
  plan(): EntryPlan {
    const { dev, bridge } = this;
    const k = this.kernel;
    const [ipKeys, macKeys] = [this.dirtyIp, this.dirtyMac];
    this.dirtyIp = new Set();
    this.dirtyMac = new Set();
    const p: EntryPlan = { ip1: [], bridge: [], ip2: [], counts: { neigh: 0, fdb: 0, route: 0 }, commit: () => undefined, abandon: () => undefined };
    const neighAfter: [string, string | undefined][] = [];
    const masterAfter: [string, boolean][] = [];
    const fdbAfter: [string, string[]][] = [];
    const fdbAdds: string[] = [];

    for (const ip of ipKeys) {
      const want = this.placed(this.ipClaims.owner(ip))?.ep.mac;
      const have = k.neigh.get(ip);
      if (want === have) continue;
      if (want === undefined) p.ip1.push(`neigh del ${ip} dev ${bridge}`);
      else p.ip2.push(`neigh replace ${ip} lladdr ${want} dev ${bridge} nud permanent`);
      p.counts.neigh++;
      neighAfter.push([ip, want]);
    }
    for (const mac of macKeys) {
      let wantDsts: string[];
      if (mac === FLOOD_MAC) {
        wantDsts = this.floodOn ? [...new Set(this.peers.values())] : [];
      } else {
        const placed = this.placed(this.macClaims.owner(mac));
        wantDsts = placed ? [placed.underlay] : [];
        const haveMaster = k.master.has(mac);
        if (placed && !haveMaster) {
          fdbAdds.push(`fdb replace ${mac} dev ${dev} master static`);
          p.counts.fdb++;
          masterAfter.push([mac, true]);
        } else if (!placed && haveMaster) {
          p.bridge.push(`fdb del ${mac} dev ${dev} master`);
          p.counts.fdb++;
          masterAfter.push([mac, false]);
        }
      }
      const have = k.fdb.get(mac) ?? [];
      let changed = false;
      for (const d of have) {
        if (wantDsts.includes(d)) continue;
        p.bridge.push(`fdb del ${mac} dev ${dev} dst ${d} self`);
        p.counts.fdb++;
        changed = true;
      }
      for (const d of wantDsts) {
        if (have.includes(d)) continue;
        fdbAdds.push(`fdb append ${mac} dev ${dev} dst ${d} self permanent`);
        p.counts.fdb++;
        changed = true;
      }
      if (changed) fdbAfter.push([mac, wantDsts]);
    }
    // Stale FDB entries out before new ones in (one MAC moving between nodes).
    p.bridge.push(...fdbAdds);
    p.commit = () => {
      for (const [key, v] of neighAfter) v === undefined ? k.neigh.delete(key) : k.neigh.set(key, v);
      for (const [key, v] of masterAfter) v ? k.master.add(key) : k.master.delete(key);
      for (const [key, v] of fdbAfter) v.length === 0 ? k.fdb.delete(key) : k.fdb.set(key, v);
    };
    p.abandon = () => {
      for (const key of ipKeys) this.dirtyIp.add(key);
      for (const key of macKeys) this.dirtyMac.add(key);
    };
    return p;
  }
}
