// Where forwarded queries go: --dns-upstream, else the host's /etc/resolv.conf.
import { isIPv4 } from "../ip/index.js";

export interface Upstream {
  host: string;
  port: number;
}

/** "1.2.3.4" or "1.2.3.4:5353" (IPv4; `[v6]:port` for IPv6). Throws naming the value. */
export function parseUpstream(s: string): Upstream {
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(s);
  const m = v6 ?? /^([^:]+)(?::(\d+))?$/.exec(s);
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  if (!m || (!v6 && !isIPv4(m[1])) || !(port >= 1 && port <= 65535)) throw new Error(`DNS upstream "${s}" is not IP or IP:PORT`);
  return { host: m[1], port };
}

/**
 * `nameserver` lines of a resolv.conf, in order, without the addresses in
 * `exclude` (the resolver's own addresses: forwarding to itself would loop).
 */
export function upstreamsFromResolvConf(text: string, exclude: Iterable<string> = []): Upstream[] {
  const skip = new Set(exclude);
  const out: Upstream[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m || skip.has(m[1])) continue;
    try {
      out.push(parseUpstream(m[1].includes(":") && !m[1].includes(".") ? `[${m[1]}]` : m[1]));
    } catch {
      /* a nameserver line we cannot use (e.g. a scoped IPv6 address) */
    }
  }
  return out;
}
