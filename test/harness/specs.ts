import type { NetworkSpec } from "../../pkg/store/index.js";

/** A valid network spec with defaults, for tests. */
export function netSpec(name: string, cidr: string, vni: number, extra: Partial<NetworkSpec> = {}): NetworkSpec {
  return { name, cidr, vni, nodePrefixLength: 24, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: {}, default: false, flood: false, dns: false, ...extra };
}
