// What one agent has been told, and what it must be told next. Pure: given
// the model and a Change, produce the ConfigUpdate that brings the agent's
// view to the model's.
import type { ConfigUpdate, NetworkConfig, PeerUpdate } from "../api/index.js";
import { headerKey, peerKey, type Change, type Model } from "./model.js";

export interface NodeContext {
  node: string;
  labels: Record<string, string>;
  uplinkMtu: number;
  /** Why the node has no subnet in a network (e.g. pool exhausted), by network. */
  errors: ReadonlyMap<string, string>;
}

interface SentNetwork {
  header: string;
  peers: Map<string, string>;
}

export class AgentView {
  private sent = new Map<string, SentNetwork>();

  /** Networks to tell the node about: members that have a subnet for it, or a reason why not. */
  private desiredHeaders(model: Model, ctx: NodeContext): NetworkConfig[] {
    const member = model.memberNetworks(ctx.labels);
    const def = model.defaultNetworkOf(member);
    const out: NetworkConfig[] = [];
    for (const spec of member) {
      const error = ctx.errors.get(spec.name) ?? "";
      if (!model.subnetOf(ctx.node, spec.name) && !error) continue; // allocation still under way
      out.push(model.networkHeader(spec, ctx.node, ctx.uplinkMtu, spec.name === def, error));
    }
    return out;
  }

  private full(model: Model, ctx: NodeContext, header: NetworkConfig): NetworkConfig {
    const peers = header.subnet ? model.peersOf(header.name, ctx.node) : [];
    this.sent.set(header.name, { header: headerKey(header), peers: new Map(peers.map((p) => [p.nodeName, peerKey(p)])) });
    return { ...header, peers };
  }

  /** The complete desired state; what the agent knew before is forgotten. */
  snapshot(model: Model, ctx: NodeContext): ConfigUpdate {
    this.sent = new Map();
    const networks = this.desiredHeaders(model, ctx).map((h) => this.full(model, ctx, h));
    return { revision: model.revision, snapshot: true, networks, removedNetworks: [], peerUpdates: [] };
  }

  /**
   * The delta for `change`, or undefined when nothing this node was told is
   * affected. Networks whose header changed are resent whole; otherwise only
   * the peers the change touched are compared.
   */
  delta(model: Model, ctx: NodeContext, change: Change): ConfigUpdate | undefined {
    const desired = new Map(this.desiredHeaders(model, ctx).map((h) => [h.name, h]));
    const removedNetworks = [...this.sent.keys()].filter((n) => !desired.has(n));
    removedNetworks.forEach((n) => this.sent.delete(n));
    const networks: NetworkConfig[] = [];
    const peerUpdates: PeerUpdate[] = [];
    for (const [name, header] of desired) {
      const sent = this.sent.get(name);
      if (!sent || sent.header !== headerKey(header)) {
        networks.push(this.full(model, ctx, header));
        continue;
      }
      const touched = change.peers.get(name);
      if (!touched || !header.subnet) continue;
      for (const node of touched) {
        if (node === ctx.node) continue;
        const peer = model.peer(name, node);
        const before = sent.peers.get(node);
        if (peer) {
          const key = peerKey(peer);
          if (key === before) continue;
          sent.peers.set(node, key);
          peerUpdates.push({ network: name, peer, removed: false });
        } else if (before !== undefined) {
          sent.peers.delete(node);
          peerUpdates.push({ network: name, peer: { nodeName: node, underlayIp: "", vtepMac: "", subnet: "" }, removed: true });
        }
      }
    }
    if (networks.length === 0 && removedNetworks.length === 0 && peerUpdates.length === 0) return undefined;
    return { revision: model.revision, snapshot: false, networks, removedNetworks, peerUpdates };
  }

  /** Networks the node was told about (for tests and metrics). */
  knownNetworks(): string[] {
    return [...this.sent.keys()];
  }
}
