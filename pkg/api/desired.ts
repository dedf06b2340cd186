// An agent's view of its desired config, built from the Join stream: a
// snapshot replaces it, a delta is applied on top. Pure; shared by the agent
// and by tools that watch a stream (tests, benchmarks).
import type { ConfigUpdate, Endpoint, NetworkConfig, Peer } from "./gen/weft/v1/weft.js";

export interface DesiredNetwork extends Omit<NetworkConfig, "peers"> {
  /** Peers by node name. */
  peers: Map<string, Peer>;
  /** Endpoints by endpointKey (node + id); only networks that are switched or have dns get them. */
  endpoints: Map<string, Endpoint>;
}

export interface DesiredConfig {
  revision: number;
  networks: Map<string, DesiredNetwork>;
}

/** An endpoint's identity across the cluster: ids are unique per node only. */
export function endpointKey(e: Pick<Endpoint, "nodeName" | "id">): string {
  return `${e.nodeName}/${e.id}`;
}

export function emptyDesired(): DesiredConfig {
  return { revision: 0, networks: new Map() };
}

function toDesired(c: NetworkConfig, endpoints: Map<string, Endpoint>): DesiredNetwork {
  return { ...c, peers: new Map(c.peers.map((p) => [p.nodeName, p])), endpoints };
}

/**
 * Returns the config after `update` (the input is not modified).
 * A network new to the agent arrives with its complete endpoint set in the
 * same message; a NetworkConfig for a network the agent already has (delta)
 * replaces its header and peers and keeps its endpoints.
 */
export function applyConfigUpdate(current: DesiredConfig, update: ConfigUpdate): DesiredConfig {
  const networks = update.snapshot ? new Map<string, DesiredNetwork>() : new Map(current.networks);
  for (const name of update.removedNetworks) networks.delete(name);
  for (const c of update.networks) networks.set(c.name, toDesired(c, networks.get(c.name)?.endpoints ?? new Map()));
  const copiedPeers = new Set<string>();
  for (const u of update.peerUpdates) {
    const net = networks.get(u.network);
    if (!net || !u.peer) continue;
    if (!copiedPeers.has(u.network)) {
      // Copy-on-write, so `current` stays as it was.
      networks.set(u.network, { ...net, peers: new Map(net.peers) });
      copiedPeers.add(u.network);
    }
    const peers = networks.get(u.network)!.peers;
    if (u.removed) peers.delete(u.peer.nodeName);
    else peers.set(u.peer.nodeName, u.peer);
  }
  const copiedEndpoints = new Set<string>();
  for (const u of update.endpointUpdates) {
    const net = networks.get(u.network);
    if (!net || !u.endpoint) continue;
    if (!copiedEndpoints.has(u.network)) {
      networks.set(u.network, { ...net, endpoints: new Map(net.endpoints) });
      copiedEndpoints.add(u.network);
    }
    const endpoints = networks.get(u.network)!.endpoints;
    if (u.removed) endpoints.delete(endpointKey(u.endpoint));
    else endpoints.set(endpointKey(u.endpoint), u.endpoint);
  }
  return { revision: Math.max(update.snapshot ? 0 : current.revision, update.revision), networks };
}
