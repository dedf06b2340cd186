// The names one network answers: its endpoints' names and aliases, kept as
// an index that is updated per endpoint (O(change), never rebuilt), and the
// pure answer to one question. No sockets here.

/** A network's endpoint as the resolver sees it. */
export interface DnsEndpoint {
  id: string;
  /** `namespace/pod` (Kubernetes) or a plain name; "" for none. */
  name: string;
  aliases: string[];
  ips: string[];
}

export const DEFAULT_DNS_DOMAIN = "weft.internal";
/** Short, so a moved or deleted endpoint is forgotten by caches quickly. */
export const RECORD_TTL_SECONDS = 5;

export type Lookup =
  /** The name is ours: answer with these addresses (none: NODATA for this type). */
  | { kind: "answer"; addresses: string[] }
  /** In our zone but unknown: NXDOMAIN with the SOA. */
  | { kind: "nxdomain" }
  /** Not ours: forward upstream. */
  | { kind: "forward" };

/** `ns/pod` → `pod.ns`; a DNS label cannot hold a slash. Lower-cased (DNS is case-insensitive). */
export function dnsNameOf(name: string): string {
  const i = name.indexOf("/");
  return (i < 0 ? name : `${name.slice(i + 1)}.${name.slice(0, i)}`).toLowerCase();
}

function normalize(qname: string): string {
  return qname.toLowerCase().replace(/\.$/, "");
}

export class NetworkRecords {
  /** Short name (as the endpoint is called, or an alias) → endpoint ids holding it. */
  private readonly byName = new Map<string, Set<string>>();
  private readonly endpoints = new Map<string, DnsEndpoint>();
  /** Round-robin position per name. */
  private readonly turn = new Map<string, number>();
  readonly zone: string;

  constructor(
    readonly network: string,
    readonly domain = DEFAULT_DNS_DOMAIN,
  ) {
    this.zone = `${network}.${normalize(domain)}`;
  }

  get size(): number {
    return this.endpoints.size;
  }

  private namesOf(ep: DnsEndpoint): string[] {
    const names = ep.aliases.map((a) => a.toLowerCase());
    if (ep.name) names.push(dnsNameOf(ep.name));
    return [...new Set(names)];
  }

  /** Adds or replaces one endpoint. */
  put(ep: DnsEndpoint): void {
    this.remove(ep.id);
    this.endpoints.set(ep.id, ep);
    for (const n of this.namesOf(ep)) {
      let set = this.byName.get(n);
      if (!set) this.byName.set(n, (set = new Set()));
      set.add(ep.id);
    }
  }

  /** Forgets every endpoint (a snapshot resends the network's complete set). */
  clear(): void {
    this.endpoints.clear();
    this.byName.clear();
    this.turn.clear();
  }

  remove(id: string): void {
    const old = this.endpoints.get(id);
    if (!old) return;
    this.endpoints.delete(id);
    for (const n of this.namesOf(old)) {
      const set = this.byName.get(n);
      set?.delete(id);
      if (set?.size === 0) {
        this.byName.delete(n);
        this.turn.delete(n);
      }
    }
  }

  /**
   * Answers `qname`: a short name (`web`, `web-1.default`), the same under the
   * network's zone (`web.pods.weft.internal`). Names elsewhere under the
   * domain (another network's zone) are NXDOMAIN: isolation holds for names too.
   * Several endpoints under one name: all addresses, rotated per query.
   */
  lookup(qname: string, family: 4 | 6): Lookup {
    const q = normalize(qname);
    const domain = normalize(this.domain);
    let short: string | undefined;
    if (q.endsWith(`.${this.zone}`)) short = q.slice(0, -this.zone.length - 1);
    else if (q === this.zone || q === domain || q.endsWith(`.${domain}`)) return q === this.zone || q === domain ? { kind: "answer", addresses: [] } : { kind: "nxdomain" };
    else short = q;
    const ids = this.byName.get(short);
    if (!ids) return short === q ? { kind: "forward" } : { kind: "nxdomain" };
    const all: string[] = [];
    for (const id of ids) for (const ip of this.endpoints.get(id)!.ips) if (ip.includes(":") === (family === 6)) all.push(ip);
    const unique = [...new Set(all)];
    if (unique.length > 1) {
      const t = (this.turn.get(short) ?? 0) % unique.length;
      this.turn.set(short, t + 1);
      return { kind: "answer", addresses: [...unique.slice(t), ...unique.slice(0, t)] };
    }
    return { kind: "answer", addresses: unique };
  }
}
