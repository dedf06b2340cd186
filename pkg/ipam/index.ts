// Choosing a free subnet for a node: pure functions, no I/O. The caller makes
// the choice stick with an etcd create-if-absent transaction and asks again
// with a fresh `taken` set when another controller won the race.
import { formatCidr, nthSubnet, parseCidr, subnetCount, subnetIndex, type Cidr } from "../ip/index.js";

export interface Pool {
  cidr: Cidr;
  /** Prefix length of each node's subnet. */
  nodePrefixLength: number;
}

export function poolCapacity(pool: Pool): number {
  return subnetCount(pool.cidr, pool.nodePrefixLength);
}

/** FNV-1a: a stable, well-spread starting point per node name. */
export function stableHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** True when `subnet` (text) is one of the pool's node subnets. */
export function isPoolSubnet(pool: Pool, subnet: string): boolean {
  try {
    return subnetIndex(pool.cidr, pool.nodePrefixLength, parseCidr(subnet)) >= 0;
  } catch {
    return false;
  }
}

/**
 * True when `subnet` is one of the pool's node subnets written canonically,
 * the only spelling `taken` is compared in: " 10.0.0.0/24" must neither be
 * handed out beside "10.0.0.0/24" nor count as taking it.
 */
function isCanonicalPoolSubnet(pool: Pool, subnet: string): boolean {
  try {
    const c = parseCidr(subnet);
    return formatCidr(c) === subnet && subnetIndex(pool.cidr, pool.nodePrefixLength, c) >= 0;
  } catch {
    return false;
  }
}

/**
 * Picks a subnet for `node` that is not in `taken` (canonical "a.b.c.d/n" strings).
 * Prefers `hint` (the subnet the node had before) when it is a free subnet of the
 * pool; otherwise probes from a start derived from the node's name, so that
 * controllers allocating for different nodes at once rarely collide.
 * Returns undefined when the pool is exhausted.
 */
export function chooseSubnet(pool: Pool, node: string, taken: ReadonlySet<string>, hint?: string): string | undefined {
  if (hint && isCanonicalPoolSubnet(pool, hint) && !taken.has(hint)) return hint;
  const count = poolCapacity(pool);
  if (taken.size >= count) {
    // Fast path for a full pool; `taken` may hold strangers, so fall through only when it might not be full.
    let inPool = 0;
    for (const s of taken) if (isCanonicalPoolSubnet(pool, s)) inPool++;
    if (inPool >= count) return undefined;
  }
  const start = stableHash(node) % count;
  for (let k = 0; k < count; k++) {
    const candidate = formatCidr(nthSubnet(pool.cidr, pool.nodePrefixLength, (start + k) % count));
    if (!taken.has(candidate)) return candidate;
  }
  return undefined;
}
