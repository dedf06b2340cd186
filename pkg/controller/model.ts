// The controller's in-memory view of etcd, fed by one snapshot and then the
// watch, and the pure computation of what each node should be told. No I/O.
import type { NetworkConfig, Peer } from "../api/index.js";
import type { EndpointRecord, LeaseRecord, NetworkSpec, NodeRecord, ParsedKey, RecordEvent, Versioned } from "../store/index.js";
import { EndpointView, endpointKeyOf } from "./endpoint-view.js";

/** Default VXLAN overhead on an IPv4 underlay. */
export const VXLAN_OVERHEAD = 50;
const FALLBACK_UPLINK_MTU = 1500;

/** What a batch of events touched; drives which sessions hear about what. */
export class Change {
  /** Networks whose spec was added, changed or removed. */
  readonly networks = new Set<string>();
  /** (network, node) pairs whose lease (the peer entry) was added, changed or removed. */
  readonly peers = new Map<string, Set<string>>();
  /** Nodes whose node record changed or disappeared. */
  readonly nodes = new Set<string>();
  /** (network, node/id) pairs whose stored endpoint was added, changed or removed. */
  readonly endpoints = new Map<string, Set<string>>();
  revision = 0;
  /** Events older than what the view already held for their key (a late event from a lost watch): ignored. */
  stale = 0;
  /** Events whose handling threw: contained, reported here, the rest of the batch applied. */
  readonly failures: { key: ParsedKey; error: string }[] = [];

  addPeer(network: string, node: string): void {
    let set = this.peers.get(network);
    if (!set) this.peers.set(network, (set = new Set()));
    set.add(node);
  }

  addEndpoint(network: string, key: string): void {
    let set = this.endpoints.get(network);
    if (!set) this.endpoints.set(network, (set = new Set()));
    set.add(key);
  }

  merge(other: Change): void {
    other.networks.forEach((n) => this.networks.add(n));
    other.nodes.forEach((n) => this.nodes.add(n));
    for (const [net, nodes] of other.peers) nodes.forEach((n) => this.addPeer(net, n));
    for (const [net, keys] of other.endpoints) keys.forEach((k) => this.addEndpoint(net, k));
    this.revision = Math.max(this.revision, other.revision);
    this.stale += other.stale;
    this.failures.push(...other.failures);
  }

  get empty(): boolean {
    return this.networks.size === 0 && this.peers.size === 0 && this.nodes.size === 0 && this.endpoints.size === 0;
  }
}

export interface NodeEntry extends NodeRecord {
  /** etcd lease the node's keys are bound to. */
  lease: string;
}

export function selectorMatches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

export function effectiveMtu(spec: NetworkSpec, uplinkMtu: number): number {
  if (spec.mtu > 0) return spec.mtu;
  return (uplinkMtu > 0 ? uplinkMtu : FALLBACK_UPLINK_MTU) - VXLAN_OVERHEAD;
}

/** What Model.load needs: the decoded records at one revision. */
export interface ModelSnapshot {
  revision: number;
  networks: Versioned<NetworkSpec>[];
  nodes: Versioned<NodeRecord>[];
  leases: Versioned<LeaseRecord>[];
  endpoints?: Versioned<EndpointRecord>[];
}

/** Deleted keys remembered so a late put cannot resurrect them; beyond this many the oldest are forgotten. */
const MAX_TOMBSTONES = 100_000;

function keyId(k: ParsedKey): string | undefined {
  if (k.kind === "network") return `n/${k.network}`;
  if (k.kind === "node") return `d/${k.node}`;
  if (k.kind === "lease") return `l/${k.network}/${k.subnet}`;
  if (k.kind === "endpoint") return `e/${k.network}/${k.node}/${k.id}`;
  return undefined;
}

export class Model {
  revision = 0;
  readonly networks = new Map<string, NetworkSpec>();
  readonly nodes = new Map<string, NodeEntry>();
  /** network -> subnet -> lease */
  readonly leases = new Map<string, Map<string, LeaseRecord>>();
  /** node -> network -> subnet */
  private readonly nodeLeases = new Map<string, Map<string, string>>();
  /** Stored endpoints, by network and by node. */
  readonly endpoints = new EndpointView();
  /**
   * Mod revision of every key the view holds, and of recently deleted (or
   * undecodable) keys. An event at or below it is older than what the view
   * knows, e.g. from a watch that was replaced by a re-list: applying it could
   * bring back a deleted lease or node.
   */
  private readonly keyRevisions = new Map<string, number>();
  private readonly tombstones = new Map<string, number>();
  /** Revision of the last full load: everything up to it is in the view. */
  private loadedRevision = 0;

  /** Replaces the whole view; returns a Change covering everything that differs from before. */
  load(snap: ModelSnapshot): Change {
    const change = new Change();
    for (const name of this.networks.keys()) change.networks.add(name);
    for (const [net, m] of this.leases) for (const l of m.values()) change.addPeer(net, l.node);
    for (const name of this.nodes.keys()) change.nodes.add(name);
    for (const net of this.endpoints.networks()) for (const key of this.endpoints.of(net).keys()) change.addEndpoint(net, key);
    this.endpoints.clear();
    this.networks.clear();
    this.nodes.clear();
    this.leases.clear();
    this.nodeLeases.clear();
    this.keyRevisions.clear();
    this.tombstones.clear();
    for (const n of snap.networks) {
      this.networks.set(n.value.name, n.value);
      this.keyRevisions.set(`n/${n.value.name}`, n.modRevision);
      change.networks.add(n.value.name);
    }
    for (const n of snap.nodes) {
      this.nodes.set(n.value.name, { ...n.value, lease: n.lease });
      this.keyRevisions.set(`d/${n.value.name}`, n.modRevision);
      change.nodes.add(n.value.name);
    }
    for (const l of snap.leases) {
      this.putLease(l.value);
      this.keyRevisions.set(`l/${l.value.network}/${l.value.subnet}`, l.modRevision);
      change.addPeer(l.value.network, l.value.node);
    }
    for (const e of snap.endpoints ?? []) {
      const { network, node, id } = e.value;
      this.endpoints.put(e);
      this.keyRevisions.set(`e/${network}/${node}/${id}`, e.modRevision);
      change.addEndpoint(network, endpointKeyOf(node, id));
    }
    this.loadedRevision = snap.revision;
    this.revision = snap.revision;
    change.revision = snap.revision;
    return change;
  }

  apply(events: RecordEvent[], revision: number): Change {
    const change = new Change();
    for (const ev of events) {
      const id = keyId(ev.key);
      if (!id) continue;
      const known = Math.max(this.loadedRevision, this.keyRevisions.get(id) ?? this.tombstones.get(id) ?? 0);
      if (ev.modRevision <= known) {
        change.stale++;
        continue;
      }
      try {
        this.applyOne(ev, change);
      } catch (err) {
        change.failures.push({ key: ev.key, error: String(err) });
      }
      if (ev.type === "put") {
        this.tombstones.delete(id);
        this.keyRevisions.set(id, ev.modRevision);
      } else {
        this.keyRevisions.delete(id);
        this.tombstones.delete(id);
        this.tombstones.set(id, ev.modRevision);
        if (this.tombstones.size > MAX_TOMBSTONES) this.tombstones.delete(this.tombstones.keys().next().value!);
      }
    }
    this.revision = Math.max(this.revision, revision);
    change.revision = this.revision;
    return change;
  }

  /** One event; an undecodable value counts as absent (the same as after a restart, when the snapshot leaves it out). */
  private applyOne(ev: RecordEvent, change: Change): void {
    const k = ev.key;
    const put = ev.type === "put" ? ev.record : undefined;
    if (k.kind === "network") {
      if (put?.kind === "network") this.networks.set(k.network, put.value);
      else this.networks.delete(k.network);
      change.networks.add(k.network);
    } else if (k.kind === "node") {
      if (put?.kind === "node" && ev.type === "put") this.nodes.set(k.node, { ...put.value, lease: ev.lease });
      else this.nodes.delete(k.node);
      change.nodes.add(k.node);
    } else if (k.kind === "lease") {
      const old = this.leases.get(k.network)?.get(k.subnet);
      if (old) {
        this.dropLease(old);
        change.addPeer(old.network, old.node);
      }
      if (put?.kind === "lease") {
        this.putLease(put.value);
        change.addPeer(put.value.network, put.value.node);
      }
    } else if (k.kind === "endpoint") {
      this.endpoints.delete(k.network, k.node, k.id);
      if (put?.kind === "endpoint" && ev.type === "put") this.endpoints.put({ value: put.value, modRevision: ev.modRevision, createRevision: 0, lease: ev.lease });
      change.addEndpoint(k.network, endpointKeyOf(k.node, k.id));
    }
  }

  private putLease(l: LeaseRecord): void {
    let m = this.leases.get(l.network);
    if (!m) this.leases.set(l.network, (m = new Map()));
    m.set(l.subnet, l);
    let n = this.nodeLeases.get(l.node);
    if (!n) this.nodeLeases.set(l.node, (n = new Map()));
    n.set(l.network, l.subnet);
  }

  private dropLease(l: LeaseRecord): void {
    this.leases.get(l.network)?.delete(l.subnet);
    const n = this.nodeLeases.get(l.node);
    if (n?.get(l.network) === l.subnet) {
      n.delete(l.network);
      if (n.size === 0) this.nodeLeases.delete(l.node);
    }
  }

  subnetOf(node: string, network: string): string | undefined {
    return this.nodeLeases.get(node)?.get(network);
  }

  leaseOf(node: string, network: string): LeaseRecord | undefined {
    const subnet = this.subnetOf(node, network);
    return subnet ? this.leases.get(network)?.get(subnet) : undefined;
  }

  takenSubnets(network: string): Set<string> {
    return new Set(this.leases.get(network)?.keys() ?? []);
  }

  leaseCount(network: string): number {
    return this.leases.get(network)?.size ?? 0;
  }

  /** Networks a node with these labels belongs to, by name. */
  memberNetworks(labels: Record<string, string>): NetworkSpec[] {
    return [...this.networks.values()].filter((n) => selectorMatches(n.nodeSelector ?? {}, labels)).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The network whose conflist a node writes: the one marked default, else its only network. */
  defaultNetworkOf(member: NetworkSpec[]): string | undefined {
    return member.find((n) => n.default)?.name ?? (member.length === 1 ? member[0].name : undefined);
  }

  /** The peer entry `node` contributes to `network`, or undefined when it has none (no lease, or no VTEP MAC yet). */
  peer(network: string, node: string): Peer | undefined {
    const l = this.leaseOf(node, network);
    if (!l || !l.vtepMac || !l.vtepIP) return undefined;
    return { nodeName: l.node, underlayIp: l.vtepIP, vtepMac: l.vtepMac, subnet: l.subnet };
  }

  peersOf(network: string, self: string): Peer[] {
    const out: Peer[] = [];
    for (const l of this.leases.get(network)?.values() ?? []) {
      if (l.node === self) continue;
      const p = this.peer(network, l.node);
      if (p) out.push(p);
    }
    return out;
  }

  /** Everything about `network` for `node` except peers. */
  networkHeader(spec: NetworkSpec, node: string, uplinkMtu: number, isDefault: boolean, error: string): NetworkConfig {
    return {
      name: spec.name,
      vni: spec.vni,
      cidr: spec.cidr,
      mode: spec.mode,
      mtu: effectiveMtu(spec, uplinkMtu),
      port: spec.port,
      natOutgoing: spec.natOutgoing,
      isolated: spec.isolated,
      default: isDefault,
      flood: spec.flood,
      dns: spec.dns,
      subnet: this.subnetOf(node, spec.name) ?? "",
      error: this.subnetOf(node, spec.name) ? "" : error,
      peers: [],
    };
  }
}

/** Stable identity of a peer entry, for "did it change?" */
export function peerKey(p: Peer): string {
  return `${p.underlayIp}|${p.vtepMac}|${p.subnet}`;
}

/** Stable identity of a network's header, for "did it change?" */
export function headerKey(c: NetworkConfig): string {
  return JSON.stringify([c.vni, c.cidr, c.mode, c.mtu, c.port, c.natOutgoing, c.isolated, c.default, c.flood, c.dns, c.subnet, c.error]);
}
