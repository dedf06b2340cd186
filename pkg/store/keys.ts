// Key layout under the configurable prefix (default /weft/v1/). Pure.

export const DEFAULT_PREFIX = "/weft/v1/";

/** "10.244.3.0/24" -> "10.244.3.0-24": a subnet as one key segment. */
export function subnetSegment(subnet: string): string {
  return subnet.replace("/", "-");
}

export function segmentSubnet(segment: string): string {
  const i = segment.lastIndexOf("-");
  return i < 0 ? segment : `${segment.slice(0, i)}/${segment.slice(i + 1)}`;
}

export type ParsedKey =
  | { kind: "network"; network: string }
  | { kind: "node"; node: string }
  | { kind: "lease"; network: string; subnet: string }
  | { kind: "other" };

export class Keys {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_PREFIX) {
    this.prefix = prefix.endsWith("/") ? prefix : prefix + "/";
  }

  network(name: string): string {
    return `${this.prefix}networks/${name}`;
  }
  networks(): string {
    return `${this.prefix}networks/`;
  }
  node(name: string): string {
    return `${this.prefix}nodes/${name}`;
  }
  nodes(): string {
    return `${this.prefix}nodes/`;
  }
  lease(network: string, subnet: string): string {
    return `${this.prefix}leases/${network}/${subnetSegment(subnet)}`;
  }
  leases(network?: string): string {
    return network === undefined ? `${this.prefix}leases/` : `${this.prefix}leases/${network}/`;
  }
  /** Bumped by every network write, so concurrent writers serialise on it (VNI/CIDR uniqueness). */
  networksGuard(): string {
    return `${this.prefix}meta/networks-guard`;
  }
  /** Held by the elected controller replica, bound to its etcd lease. */
  leader(): string {
    return `${this.prefix}meta/leader`;
  }

  parse(key: string): ParsedKey {
    if (!key.startsWith(this.prefix)) return { kind: "other" };
    const parts = key.slice(this.prefix.length).split("/");
    if (parts[0] === "networks" && parts.length === 2) return { kind: "network", network: parts[1] };
    if (parts[0] === "nodes" && parts.length === 2) return { kind: "node", node: parts[1] };
    if (parts[0] === "leases" && parts.length === 3) return { kind: "lease", network: parts[1], subnet: segmentSubnet(parts[2]) };
    return { kind: "other" };
  }
}

/** The smallest key greater than every key starting with `prefix`: etcd's range_end for a prefix. */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i] += 1;
      return end;
    }
  }
  return Buffer.from([0]);
}
