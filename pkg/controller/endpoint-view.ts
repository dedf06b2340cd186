// The endpoints part of the controller's view of etcd: every stored endpoint
// by network (what members are sent) and by node (what a node's stream diffs
// its agent's report against). Fed by Model.load/apply. Pure.
import type { EndpointRecord, Versioned } from "../store/index.js";

/** An endpoint's identity inside a network (ids are unique per node only); the same as pkg/api endpointKey. */
export function endpointKeyOf(node: string, id: string): string {
  return `${node}/${id}`;
}

/** A stored endpoint's place among its node's: network and id (one id may briefly be stored under two networks). */
export function nodeSlot(network: string, id: string): string {
  return `${network}/${id}`;
}

export class EndpointView {
  /** network -> node/id -> stored endpoint */
  private readonly byNetwork = new Map<string, Map<string, Versioned<EndpointRecord>>>();
  /** node -> network/id -> stored endpoint */
  private readonly byNode = new Map<string, Map<string, Versioned<EndpointRecord>>>();

  clear(): void {
    this.byNetwork.clear();
    this.byNode.clear();
  }

  /** Networks that have stored endpoints. */
  networks(): IterableIterator<string> {
    return this.byNetwork.keys();
  }

  /** The stored endpoints of a network, by node/id. */
  of(network: string): ReadonlyMap<string, Versioned<EndpointRecord>> {
    return this.byNetwork.get(network) ?? EMPTY;
  }

  /** The stored endpoints of a node, by network/id (nodeSlot). */
  ofNode(node: string): ReadonlyMap<string, Versioned<EndpointRecord>> {
    return this.byNode.get(node) ?? EMPTY;
  }

  get(network: string, key: string): EndpointRecord | undefined {
    return this.byNetwork.get(network)?.get(key)?.value;
  }

  count(network: string): number {
    return this.byNetwork.get(network)?.size ?? 0;
  }

  put(v: Versioned<EndpointRecord>): void {
    const e = v.value;
    inner(this.byNetwork, e.network).set(endpointKeyOf(e.node, e.id), v);
    inner(this.byNode, e.node).set(nodeSlot(e.network, e.id), v);
  }

  /** Removes what is stored under this key; returns whether there was something. */
  delete(network: string, node: string, id: string): boolean {
    dropFrom(this.byNode, node, nodeSlot(network, id));
    return dropFrom(this.byNetwork, network, endpointKeyOf(node, id));
  }
}

const EMPTY: ReadonlyMap<string, Versioned<EndpointRecord>> = new Map();

function inner<V>(m: Map<string, Map<string, V>>, k: string): Map<string, V> {
  let x = m.get(k);
  if (!x) m.set(k, (x = new Map()));
  return x;
}

function dropFrom<V>(m: Map<string, Map<string, V>>, k: string, sub: string): boolean {
  const x = m.get(k);
  if (!x?.delete(sub)) return false;
  if (x.size === 0) m.delete(k);
  return true;
}
