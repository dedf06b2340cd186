// From the controller's updates to what the dataplane programs. The config is
// kept in place (no copy per update) together with what changed since the
// dataplane last heard: whether any network's spec changed, which peers and
// which endpoints. Raw updates are coalesced here; each changed peer or
// endpoint is converted once, when the next flush starts. Pure.
import { endpointKey, type ConfigUpdate, type DesiredConfig, type DesiredNetwork, type Endpoint, type NetworkConfig, type Peer } from "../api/index.js";
import { normalizeMac, parseCidr } from "../ip/index.js";
import type { NetworkSpec } from "../dataplane/types.js";

export interface NodeIdentity {
  nodeName: string;
  uplink: string;
  underlayIp: string;
}

/** A network the controller sent but the agent does not program, and why. */
export interface SkippedNetwork {
  network: string;
  reason: string;
}

function cidrProblem(value: string): string | undefined {
  try {
    parseCidr(value);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

type NetworkFields = Omit<NetworkConfig, "peers">;

/** Converts one network's spec; returns a reason string instead when it cannot be programmed. */
export function toNetworkSpec(net: NetworkFields, vtepMac: string | undefined): NetworkSpec | string {
  if (!net.subnet) return net.error ? `no subnet: ${net.error}` : "no subnet assigned";
  if (net.mode !== "routed" && net.mode !== "switched") return `mode "${net.mode}" is neither routed nor switched`;
  if (!Number.isInteger(net.vni) || net.vni < 1 || net.vni > 16_777_215) return `vni ${net.vni} is outside 1..16777215`;
  const cidr = cidrProblem(net.cidr);
  if (cidr) return `cidr: ${cidr}`;
  const subnet = cidrProblem(net.subnet);
  if (subnet) return `subnet: ${subnet}`;
  if (net.mtu < 68 || net.mtu > 65535) return `mtu ${net.mtu} is outside 68..65535`;
  if (net.port < 1 || net.port > 65535) return `port ${net.port} is outside 1..65535`;
  const out: NetworkSpec = {
    name: net.name,
    vni: net.vni,
    cidr: net.cidr,
    mode: net.mode,
    mtu: net.mtu,
    port: net.port,
    natOutgoing: net.natOutgoing,
    isolated: net.isolated,
    flood: net.flood,
    dns: net.dns,
    isDefault: net.default,
    subnet: net.subnet,
  };
  const mac = vtepMac ? normalizeMac(vtepMac) : undefined;
  if (mac) out.vtepMac = mac;
  return out;
}

/**
 * Every network's spec. When no network is marked default and there is
 * exactly one, that one gets the conflist; of several marked, the first by name.
 */
export function toNetworkSpecs(config: DesiredConfig, vtepMacs: Record<string, string>): { specs: NetworkSpec[]; skipped: SkippedNetwork[] } {
  const skipped: SkippedNetwork[] = [];
  const specs: NetworkSpec[] = [];
  for (const net of [...config.networks.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const r = toNetworkSpec(net, vtepMacs[net.name]);
    if (typeof r === "string") skipped.push({ network: net.name, reason: r });
    else specs.push(r);
  }
  const defaults = specs.filter((n) => n.isDefault);
  if (defaults.length === 0 && specs.length === 1) specs[0].isDefault = true;
  for (const n of defaults.slice(1)) n.isDefault = false;
  return { specs, skipped };
}

const samePeer = (a: Peer | undefined, b: Peer | undefined) =>
  !!a && !!b && a.underlayIp === b.underlayIp && a.vtepMac === b.vtepMac && a.subnet === b.subnet;

const sameEndpoint = (a: Endpoint | undefined, b: Endpoint | undefined) =>
  !!a && !!b && a.nodeName === b.nodeName && a.mac === b.mac && a.ips.join() === b.ips.join() && a.name === b.name && a.aliases.join() === b.aliases.join();

const sameFields = (a: NetworkFields, b: NetworkFields) =>
  a.vni === b.vni && a.cidr === b.cidr && a.mode === b.mode && a.mtu === b.mtu && a.port === b.port && a.natOutgoing === b.natOutgoing &&
  a.isolated === b.isolated && a.default === b.default && a.flood === b.flood && a.dns === b.dns && a.subnet === b.subnet && a.error === b.error;

export interface PendingChanges {
  networksChanged: boolean;
  /** network -> node names whose peer entry changed (added, replaced or removed). */
  peers: Map<string, Set<string>>;
  /** network -> endpointKeys whose endpoint changed (added, replaced or removed). */
  endpoints: Map<string, Set<string>>;
}

/** The controller's config for this node, updated in place, with the changes not yet handed on. */
export class ConfigModel {
  readonly config: DesiredConfig = { revision: 0, networks: new Map() };
  private changes: PendingChanges = { networksChanged: true, peers: new Map(), endpoints: new Map() };

  constructor(initial?: DesiredConfig) {
    if (initial) {
      this.config.revision = initial.revision;
      for (const [name, n] of initial.networks) {
        this.config.networks.set(name, { ...n, peers: new Map(n.peers), endpoints: new Map(n.endpoints) });
        for (const node of n.peers.keys()) this.touch(name, node);
        for (const key of n.endpoints.keys()) this.touchEndpoint(name, key);
      }
    }
  }

  get revision(): number {
    return this.config.revision;
  }

  private touch(network: string, node: string): void {
    addTo(this.changes.peers, network, node);
  }

  private touchEndpoint(network: string, key: string): void {
    addTo(this.changes.endpoints, network, key);
  }

  /** Marks every peer and endpoint of `network` changed (it was just handed to the dataplane anew). */
  touchNetwork(network: string): void {
    const net = this.config.networks.get(network);
    for (const node of net?.peers.keys() ?? []) this.touch(network, node);
    for (const key of net?.endpoints.keys() ?? []) this.touchEndpoint(network, key);
  }

  /** Applies a snapshot or delta in place. O(what the update carries). */
  apply(u: ConfigUpdate): void {
    const nets = this.config.networks;
    /** Snapshot: the endpoints each named network had, compared with the new set once it is complete. */
    const before = new Map<string, Map<string, Endpoint>>();
    if (u.snapshot) {
      const incoming = new Map(u.networks.map((n) => [n.name, n]));
      for (const [name, old] of [...nets]) {
        if (!incoming.has(name)) this.removeNetwork(name, old);
      }
    }
    for (const name of u.removedNetworks) {
      const old = nets.get(name);
      if (old) this.removeNetwork(name, old);
    }
    for (const c of u.networks) {
      this.putNetwork(c);
      // A snapshot carries each named network's complete endpoint set; so does a network new to the agent.
      const net = nets.get(c.name)!;
      if (u.snapshot && !before.has(c.name)) {
        before.set(c.name, net.endpoints);
        net.endpoints = new Map();
      }
    }
    for (const pu of u.peerUpdates) {
      const net = nets.get(pu.network);
      if (!net || !pu.peer) continue;
      const name = pu.peer.nodeName;
      if (pu.removed) {
        if (net.peers.delete(name)) this.touch(pu.network, name);
      } else if (!samePeer(net.peers.get(name), pu.peer)) {
        net.peers.set(name, pu.peer);
        this.touch(pu.network, name);
      }
    }
    for (const eu of u.endpointUpdates) {
      const net = nets.get(eu.network);
      if (!net || !eu.endpoint) continue;
      const key = endpointKey(eu.endpoint);
      if (eu.removed) {
        if (net.endpoints.delete(key) && !before.has(eu.network)) this.touchEndpoint(eu.network, key);
      } else if (before.has(eu.network)) {
        net.endpoints.set(key, eu.endpoint);
      } else if (!sameEndpoint(net.endpoints.get(key), eu.endpoint)) {
        net.endpoints.set(key, eu.endpoint);
        this.touchEndpoint(eu.network, key);
      }
    }
    // Only what differs from before the snapshot is a change: O(endpoints of the named networks), once per snapshot.
    for (const [name, old] of before) {
      const now = nets.get(name)!.endpoints;
      for (const [key, e] of now) if (!sameEndpoint(old.get(key), e)) this.touchEndpoint(name, key);
      for (const key of old.keys()) if (!now.has(key)) this.touchEndpoint(name, key);
    }
    this.config.revision = Math.max(u.snapshot ? 0 : this.config.revision, u.revision);
  }

  private removeNetwork(name: string, old: DesiredNetwork): void {
    this.config.networks.delete(name);
    this.changes.networksChanged = true;
    for (const node of old.peers.keys()) this.touch(name, node);
    for (const key of old.endpoints.keys()) this.touchEndpoint(name, key);
  }

  /** Endpoints are kept here; apply() replaces a snapshot's networks' sets. */
  private putNetwork(c: NetworkConfig): void {
    const old = this.config.networks.get(c.name);
    const { peers: list, ...fields } = c;
    const peers = new Map(list.map((p) => [p.nodeName, p]));
    if (!old || !sameFields(old, fields)) this.changes.networksChanged = true;
    for (const [node, p] of peers) if (!samePeer(old?.peers.get(node), p)) this.touch(c.name, node);
    for (const node of old?.peers.keys() ?? []) if (!peers.has(node)) this.touch(c.name, node);
    this.config.networks.set(c.name, { ...fields, peers, endpoints: old?.endpoints ?? new Map() });
  }

  /** What changed since the last call; the model starts collecting afresh. */
  takeChanges(): PendingChanges {
    const c = this.changes;
    this.changes = { networksChanged: false, peers: new Map(), endpoints: new Map() };
    return c;
  }

  /** Puts changes back (the flush that took them did not run). */
  restoreChanges(c: PendingChanges): void {
    if (c.networksChanged) this.changes.networksChanged = true;
    for (const [net, nodes] of c.peers) for (const n of nodes) this.touch(net, n);
    for (const [net, keys] of c.endpoints) for (const k of keys) this.touchEndpoint(net, k);
  }
}

export function addTo(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}
