// NAT and filter rules in Weft's own chains, pure: rendering the rules a set
// of networks needs, reading Weft's rules out of `iptables-save`, and the
// `iptables-restore --noflush` script that replaces them atomically. Only
// Weft's chains and the two built-in chains that jump to them are ever read
// (`iptables -S <chain>`), never the whole ruleset: on a node where kube-proxy
// runs in iptables mode that is megabytes on every resync.
import type { Runner } from "./exec.js";
import type { NetworkSpec } from "./types.js";

export const NAT_CHAIN = "WEFT-POSTRTG";
export const FORWARD_CHAIN = "WEFT-FWD";
export const ISOLATION_CHAIN = "WEFT-ISOLATION";
export const JUMPS = [
  { table: "nat", from: "POSTROUTING", to: NAT_CHAIN },
  { table: "filter", from: "FORWARD", to: FORWARD_CHAIN },
] as const;
const CHAINS: Record<"nat" | "filter", string[]> = { nat: [NAT_CHAIN], filter: [FORWARD_CHAIN, ISOLATION_CHAIN] };

export interface RuleSet {
  nat: string[];
  filter: string[];
}

/** The rules for `networks`, in iptables-save's own spelling so they compare equal to what the kernel reports. */
export function renderRules(networks: NetworkSpec[], randomFully = true): RuleSet {
  const nets = [...networks].sort((a, b) => a.vni - b.vni);
  const nat: string[] = [];
  const filter: string[] = [`-A ${FORWARD_CHAIN} -j ${ISOLATION_CHAIN}`];
  for (const n of nets) {
    if (!n.natOutgoing) continue;
    // Pod to pod, within or across Weft networks, keeps its source address.
    for (const other of nets) nat.push(`-A ${NAT_CHAIN} -s ${n.cidr} -d ${other.cidr} -m comment --comment weft:${n.name} -j RETURN`);
    nat.push(`-A ${NAT_CHAIN} -s ${n.cidr} ! -d 224.0.0.0/4 -m comment --comment weft:${n.name} -j MASQUERADE${randomFully ? " --random-fully" : ""}`);
  }
  for (const a of nets) {
    for (const b of nets) {
      if (a !== b && (a.isolated || b.isolated)) filter.push(`-A ${ISOLATION_CHAIN} -s ${a.cidr} -d ${b.cidr} -m comment --comment weft:isolation -j DROP`);
    }
  }
  for (const n of nets) {
    filter.push(`-A ${FORWARD_CHAIN} -s ${n.cidr} -m comment --comment weft:${n.name} -j ACCEPT`);
    filter.push(`-A ${FORWARD_CHAIN} -d ${n.cidr} -m comment --comment weft:${n.name} -j ACCEPT`);
  }
  return { nat, filter };
}

export interface SavedState {
  rules: RuleSet;
  /** Chains of ours that exist, per table. */
  chains: { nat: Set<string>; filter: Set<string> };
  /** Jump rules from built-in chains, per table (count: duplicates are collapsed on rewrite). */
  jumps: { nat: number; filter: number };
}

/** Weft's part of `iptables-save` output. */
export function parseSave(save: string): SavedState {
  const out: SavedState = { rules: { nat: [], filter: [] }, chains: { nat: new Set(), filter: new Set() }, jumps: { nat: 0, filter: 0 } };
  let table: "nat" | "filter" | undefined;
  for (const raw of save.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("*")) {
      const t = line.slice(1);
      table = t === "nat" || t === "filter" ? t : undefined;
      continue;
    }
    if (!table) continue;
    if (line.startsWith(":")) {
      const chain = line.slice(1).split(" ")[0];
      if (CHAINS[table].includes(chain)) out.chains[table].add(chain);
      continue;
    }
    if (!line.startsWith("-A ")) continue;
    const chain = line.split(" ")[1];
    const normalized = line.replaceAll('"', "");
    if (CHAINS[table].includes(chain)) out.rules[table].push(normalized);
    else if (JUMPS.some((j) => j.table === table && j.from === chain && normalized.endsWith(`-j ${j.to}`))) out.jumps[table]++;
  }
  return out;
}

/** Whether the kernel already holds exactly `want`. */
export function rulesMatch(saved: SavedState, want: RuleSet): boolean {
  return (
    saved.jumps.nat >= 1 &&
    saved.jumps.filter >= 1 &&
    (["nat", "filter"] as const).every((t) => CHAINS[t].every((c) => saved.chains[t].has(c)) && saved.rules[t].join("\n") === want[t].join("\n"))
  );
}

/**
 * One atomic restore: declaring our chains flushes them in the same
 * transaction as their new rules; missing jumps are inserted first in the built-in chains.
 */
export function restoreScript(want: RuleSet, saved: SavedState): string {
  const lines: string[] = [];
  for (const table of ["nat", "filter"] as const) {
    lines.push(`*${table}`);
    for (const c of CHAINS[table]) lines.push(`:${c} - [0:0]`);
    for (const j of JUMPS.filter((x) => x.table === table)) {
      if (saved.jumps[table] === 0) lines.push(`-I ${j.from} 1 -m comment --comment weft -j ${j.to}`);
    }
    lines.push(...want[table], "COMMIT");
  }
  return lines.join("\n") + "\n";
}

/** Removes our jumps and chains (cleanup). */
export function removalScript(saved: SavedState, save: string): string {
  const lines: string[] = [];
  for (const table of ["nat", "filter"] as const) {
    lines.push(`*${table}`);
    let current: string | undefined;
    for (const raw of save.split("\n")) {
      const line = raw.trim();
      if (line.startsWith("*")) current = line.slice(1);
      if (current !== table || !line.startsWith("-A ")) continue;
      const normalized = line.replaceAll('"', "");
      const jump = JUMPS.find((j) => j.table === table && line.split(" ")[1] === j.from && normalized.endsWith(`-j ${j.to}`));
      if (jump) lines.push(line.replace(/^-A /, "-D "));
    }
    for (const c of saved.chains[table]) lines.push(`-F ${c}`);
    for (const c of saved.chains[table]) lines.push(`-X ${c}`);
    lines.push("COMMIT");
  }
  return lines.join("\n") + "\n";
}

/**
 * Weft's chains and the built-in chains' jumps, read chain by chain, as the
 * iptables-save text parseSave and removalScript understand. Five small
 * listings, side by side; their size does not grow with other software's rules.
 */
export async function readOwnRules(run: Runner): Promise<string> {
  const wanted: { table: "nat" | "filter"; chain: string; builtin: boolean }[] = [
    ...JUMPS.map((j) => ({ table: j.table, chain: j.from, builtin: true })),
    ...(["nat", "filter"] as const).flatMap((table) => CHAINS[table].map((chain) => ({ table, chain, builtin: false }))),
  ];
  const listings = await Promise.all(wanted.map((w) => run.listChain(w.table, w.chain)));
  const lines: string[] = [];
  for (const table of ["nat", "filter"] as const) {
    lines.push(`*${table}`);
    wanted.forEach((w, i) => {
      const l = listings[i];
      if (w.table !== table || !l) return;
      if (!w.builtin) lines.push(`:${w.chain} - [0:0]`);
      for (const r of l) if (r.startsWith("-A ") && (!w.builtin || JUMPS.some((j) => r.endsWith(`-j ${j.to}`)))) lines.push(r);
    });
    lines.push("COMMIT");
  }
  return lines.join("\n") + "\n";
}
