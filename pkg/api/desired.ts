// An agent's view of its desired config, built from the Join stream: a
// snapshot replaces it, a delta is applied on top. Pure; shared by the agent
// and by tools that watch a stream (tests, benchmarks).
import type { ConfigUpdate, NetworkConfig, Peer } from "./gen/weft/v1/weft.js";

export interface DesiredNetwork extends Omit<NetworkConfig, "peers"> {
  /** Peers by node name. */
  peers: Map<string, Peer>;
}

export interface DesiredConfig {
  revision: number;
  networks: Map<string, DesiredNetwork>;
}

export function emptyDesired(): DesiredConfig {
  return { revision: 0, networks: new Map() };
}

function toDesired(c: NetworkConfig): DesiredNetwork {
  return { ...c, peers: new Map(c.peers.map((p) => [p.nodeName, p])) };
}

/** Returns the config after `update` (the input is not modified). */
export function applyConfigUpdate(current: DesiredConfig, update: ConfigUpdate): DesiredConfig {
  const networks = update.snapshot ? new Map<string, DesiredNetwork>() : new Map(current.networks);
  for (const name of update.removedNetworks) networks.delete(name);
  for (const c of update.networks) networks.set(c.name, toDesired(c));
  const copied = new Set<string>();
  for (const u of update.peerUpdates) {
    const net = networks.get(u.network);
    if (!net || !u.peer) continue;
    if (!copied.has(u.network)) {
      // Copy-on-write, so `current` stays as it was.
      networks.set(u.network, { ...net, peers: new Map(net.peers) });
      copied.add(u.network);
    }
    const peers = networks.get(u.network)!.peers;
    if (u.removed) peers.delete(u.peer.nodeName);
    else peers.set(u.peer.nodeName, u.peer);
  }
  return { revision: Math.max(update.snapshot ? 0 : current.revision, update.revision), networks };
}
