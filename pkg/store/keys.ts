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

/** An endpoint id (`<containerId>/<ifName>`) as one key segment: the slash (and anything else unsafe) percent-escaped. */
export function endpointIdSegment(id: string): string {
  return encodeURIComponent(id);
}

/** The id back from its key segment; undefined when the segment is not a valid escape. */
export function segmentEndpointId(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

export type ParsedKey =
  | { kind: "network"; network: string }
  | { kind: "node"; node: string }
  | { kind: "lease"; network: string; subnet: string }
  | { kind: "endpoint"; network: string; node: string; id: string }
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
  /** endpoints/<network>/<node>/<id>: one attached pod interface, bound to its node's etcd lease. */
  endpoint(network: string, node: string, id: string): string {
    return `${this.prefix}endpoints/${network}/${node}/${endpointIdSegment(id)}`;
  }
  /** All endpoints, or one network's. */
  endpoints(network?: string): string {
    return network === undefined ? `${this.prefix}endpoints/` : `${this.prefix}endpoints/${network}/`;
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
    if (parts[0] === "endpoints" && parts.length === 4) return parseEndpointParts(parts[1], parts[2], parts[3]);
    return { kind: "other" };
  }
}

/** endpoints/<network>/<node>/<segment>; a segment that does not unescape keeps the raw text (the record check then refuses it). */
export function parseEndpointParts(network: string, node: string, segment: string): ParsedKey {
  return { kind: "endpoint", network, node, id: segmentEndpointId(segment) ?? segment };
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
