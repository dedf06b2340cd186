// What one agent should be told about its networks, apart from peers: the
// network headers (own subnet, MTU, default flag, error). Pure.
import type { NetworkConfig } from "../api/index.js";
import type { Model } from "./model.js";

export interface NodeContext {
  node: string;
  labels: Record<string, string>;
  uplinkMtu: number;
  /** Why the node has no subnet in a network (e.g. pool exhausted), by network. */
  errors: ReadonlyMap<string, string>;
}

/** Networks to tell the node about: members that have a subnet for it, or a reason why not. */
export function desiredHeaders(model: Model, ctx: NodeContext): NetworkConfig[] {
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
