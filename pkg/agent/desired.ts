// From the controller's view (DesiredConfig, built by pkg/api's
// applyConfigUpdate) to what the dataplane programs (NodeDesired). Pure.
import type { DesiredConfig, DesiredNetwork } from "../api/index.js";
import { isIPv4, normalizeMac, parseCidr } from "../ip/index.js";
import type { NetworkDesired, NodeDesired, PeerSpec } from "./dataplane-port.js";

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

/** A peer left out of a network, and why (it comes back once the controller sends it complete). */
export interface SkippedPeer {
  network: string;
  node: string;
  reason: string;
}

export interface Conversion {
  desired: NodeDesired;
  skippedNetworks: SkippedNetwork[];
  skippedPeers: SkippedPeer[];
}

function cidrProblem(value: string): string | undefined {
  try {
    parseCidr(value);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Why `peer` cannot be programmed, or undefined when it can. */
export function peerProblem(peer: { nodeName: string; underlayIp: string; vtepMac: string; subnet: string }): string | undefined {
  if (!peer.nodeName) return "node_name is empty";
  if (!isIPv4(peer.underlayIp)) return `underlay_ip "${peer.underlayIp}" is not an IPv4 address`;
  // A peer whose device does not exist yet has no MAC: no entries until it has one.
  if (!peer.vtepMac) return "vtep_mac is not known yet";
  if (!normalizeMac(peer.vtepMac)) return `vtep_mac "${peer.vtepMac}" is not a unicast MAC address`;
  if (!peer.subnet) return "subnet is empty";
  const p = cidrProblem(peer.subnet);
  return p ? `subnet: ${p}` : undefined;
}

/** Converts one network; returns a reason string instead when it cannot be programmed. */
export function toNetworkDesired(
  net: DesiredNetwork,
  self: NodeIdentity,
  vtepMac: string | undefined,
  skippedPeers: SkippedPeer[] = [],
): NetworkDesired | string {
  if (!net.subnet) return net.error ? `no subnet: ${net.error}` : "no subnet assigned";
  if (net.mode !== "routed" && net.mode !== "switched") return `mode "${net.mode}" is neither routed nor switched`;
  if (!Number.isInteger(net.vni) || net.vni < 1 || net.vni > 16_777_215) return `vni ${net.vni} is outside 1..16777215`;
  const cidr = cidrProblem(net.cidr);
  if (cidr) return `cidr: ${cidr}`;
  const subnet = cidrProblem(net.subnet);
  if (subnet) return `subnet: ${subnet}`;
  if (net.mtu < 68 || net.mtu > 65535) return `mtu ${net.mtu} is outside 68..65535`;
  if (net.port < 1 || net.port > 65535) return `port ${net.port} is outside 1..65535`;

  const peers: PeerSpec[] = [];
  for (const p of [...net.peers.values()].sort((a, b) => a.nodeName.localeCompare(b.nodeName))) {
    if (p.nodeName === self.nodeName) continue;
    const problem = peerProblem(p);
    if (problem) {
      skippedPeers.push({ network: net.name, node: p.nodeName, reason: problem });
      continue;
    }
    peers.push({ nodeName: p.nodeName, underlayIp: p.underlayIp, vtepMac: normalizeMac(p.vtepMac)!, subnet: p.subnet });
  }
  const out: NetworkDesired = {
    name: net.name,
    vni: net.vni,
    cidr: net.cidr,
    mode: net.mode,
    mtu: net.mtu,
    port: net.port,
    natOutgoing: net.natOutgoing,
    isolated: net.isolated,
    isDefault: net.default,
    subnet: net.subnet,
    peers,
  };
  const mac = vtepMac ? normalizeMac(vtepMac) : undefined;
  if (mac) out.vtepMac = mac;
  return out;
}

/**
 * The node's whole desired dataplane. `vtepMacs` are the MACs the agent keeps
 * for its own devices (persisted, or read from the kernel). When no network
 * is marked default and there is exactly one, that one gets the conflist.
 */
export function toNodeDesired(config: DesiredConfig, self: NodeIdentity, vtepMacs: Record<string, string>): Conversion {
  const skippedNetworks: SkippedNetwork[] = [];
  const skippedPeers: SkippedPeer[] = [];
  const networks: NetworkDesired[] = [];
  for (const net of [...config.networks.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const r = toNetworkDesired(net, self, vtepMacs[net.name], skippedPeers);
    if (typeof r === "string") skippedNetworks.push({ network: net.name, reason: r });
    else networks.push(r);
  }
  const defaults = networks.filter((n) => n.isDefault);
  if (defaults.length === 0 && networks.length === 1) networks[0].isDefault = true;
  if (defaults.length > 1) {
    // Only one conflist can be 10-weft.conflist: the first by name wins, deterministically.
    for (const n of defaults.slice(1)) n.isDefault = false;
  }
  return { desired: { uplink: self.uplink, underlayIp: self.underlayIp, networks }, skippedNetworks, skippedPeers };
}

/** Own subnet per programmed network: what the agent sends back as previous_subnets. */
export function subnetsOf(desired: NodeDesired): Record<string, string> {
  return Object.fromEntries(desired.networks.map((n) => [n.name, n.subnet]));
}

/** Peer count per network (for the weft_agent_peers gauge). */
export function peerCounts(desired: NodeDesired): Record<string, number> {
  return Object.fromEntries(desired.networks.map((n) => [n.name, n.peers.length]));
}

/** Stable comparison of two desired states, so an unchanged update costs no kernel work. */
export function sameDesired(a: NodeDesired | undefined, b: NodeDesired | undefined): boolean {
  return a !== undefined && b !== undefined && JSON.stringify(a) === JSON.stringify(b);
}
