// IPv4 CIDR and address arithmetic. Addresses are handled as unsigned 32-bit
// integers. IPv4 text is parsed by one regex (the agent validates thousands
// of peers; ipaddr.js costs ~15 µs a call); ipaddr.js only tells IPv6 apart.
import ipaddr from "ipaddr.js";

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  readonly base: number;
  readonly prefix: number;
}

// Dotted decimal, four parts, no leading zeros (what ipaddr.js' isValidFourPartDecimal accepts).
const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const IPV4_RE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** An IPv4 address as an unsigned 32-bit integer, or undefined when `s` is not one. */
export function parseIPv4(s: string): number | undefined {
  const m = IPV4_RE.exec(s);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function isIPv4(s: string): boolean {
  return parseIPv4(s) !== undefined;
}

export function ipToInt(s: string): number {
  const n = parseIPv4(s);
  if (n === undefined) throw new Error(`"${s}" is not an IPv4 address`);
  return n;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses "a.b.c.d/n". Rejects IPv6, missing prefix, and host bits set
 * ("10.244.1.5/16"), each with a message saying which.
 */
export function parseCidr(s: string): Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(s.trim());
  if (!m) throw new Error(`"${s}" is not a CIDR (expected a.b.c.d/n)`);
  if (!isIPv4(m[1])) {
    if (ipaddr.IPv6.isValid(m[1])) throw new Error(`"${s}" is IPv6; only IPv4 CIDRs are supported`);
    throw new Error(`"${s}" is not a CIDR: "${m[1]}" is not an IPv4 address`);
  }
  const prefix = Number(m[2]);
  if (prefix > 32) throw new Error(`"${s}" is not a CIDR: prefix length ${prefix} is more than 32`);
  const addr = ipToInt(m[1]);
  const base = (addr & mask(prefix)) >>> 0;
  if (base !== addr) throw new Error(`"${s}" has host bits set; did you mean ${intToIp(base)}/${prefix}?`);
  return { base, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.prefix}`;
}

/** Number of addresses in the block. */
export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function lastAddress(c: Cidr): number {
  return c.base + cidrSize(c) - 1;
}

export function containsAddress(c: Cidr, addr: number): boolean {
  return addr >= c.base && addr <= lastAddress(c);
}

export function containsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && containsAddress(outer, inner.base);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base <= lastAddress(b) && b.base <= lastAddress(a);
}

/** How many /`prefix` subnets fit in `pool`. */
export function subnetCount(pool: Cidr, prefix: number): number {
  if (prefix < pool.prefix || prefix > 32) return 0;
  return 2 ** (prefix - pool.prefix);
}

/** The i-th /`prefix` subnet of `pool`, counting from 0. */
export function nthSubnet(pool: Cidr, prefix: number, i: number): Cidr {
  const n = subnetCount(pool, prefix);
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new RangeError(`subnet index ${i} out of range 0..${n - 1}`);
  return { base: pool.base + i * 2 ** (32 - prefix), prefix };
}

/** Index of `subnet` within `pool` at its own prefix, or -1 when it is not one of the pool's subnets of that size. */
export function subnetIndex(pool: Cidr, prefix: number, subnet: Cidr): number {
  if (subnet.prefix !== prefix || !containsCidr(pool, subnet)) return -1;
  // A hand-built Cidr may have host bits set; it is then no subnet of the pool, not a fractional one.
  const i = (subnet.base - pool.base) / 2 ** (32 - prefix);
  return Number.isInteger(i) ? i : -1;
}

/** The address `n` places after the network address, e.g. hostAddress(10.244.3.0/24, 1) = 10.244.3.1. */
export function hostAddress(c: Cidr, n: number): string {
  if (!Number.isInteger(n) || n < 0 || n >= cidrSize(c)) throw new RangeError(`host ${n} is outside ${formatCidr(c)}`);
  return intToIp(c.base + n);
}

/** Lower-case colon form of a unicast Ethernet address, or undefined when `s` is not one. */
export function normalizeMac(s: string): string | undefined {
  // One separator throughout: "02:aa-bb:..." is a typo, not an address.
  const m = /^[0-9a-f]{2}(?:(:)[0-9a-f]{2}(?::[0-9a-f]{2}){4}|(-)[0-9a-f]{2}(?:-[0-9a-f]{2}){4})$/i.exec(s.trim());
  if (!m) return undefined;
  const mac = s.trim().toLowerCase().replace(/-/g, ":");
  if (mac === "00:00:00:00:00:00" || (parseInt(mac.slice(0, 2), 16) & 1) === 1) return undefined;
  return mac;
}
