// Which iptables backend the host uses, the way kube-proxy's iptables-wrapper
// decides: rules written to the backend the host does not use are silently
// ignored by the packet path it does use. Kubernetes' hint chains win; else
// the backend holding more rules; with no rules anywhere, nft (what current
// distributions' `iptables` is).
import type { IptablesBackend, Runner } from "./exec.js";

export type IptablesBackendChoice = IptablesBackend | "auto";

export interface BackendDetection {
  backend: IptablesBackend;
  /** Why: "forced", "hint chain", "more rules", "default". */
  reason: string;
  rules: Record<IptablesBackend, number>;
}

const HINT_CHAINS = [":KUBE-IPTABLES-HINT", ":KUBE-KUBELET-CANARY"];

/** Pure: the choice from the two backends' iptables-save output. */
export function chooseBackend(saves: Record<IptablesBackend, string>): BackendDetection {
  const rules = { legacy: countRules(saves.legacy), nft: countRules(saves.nft) };
  for (const b of ["nft", "legacy"] as const) {
    if (HINT_CHAINS.some((h) => saves[b].includes(`${h} `))) return { backend: b, reason: "hint chain", rules };
  }
  if (rules.legacy > rules.nft) return { backend: "legacy", reason: "more rules", rules };
  if (rules.nft > 0) return { backend: "nft", reason: "more rules", rules };
  return { backend: "nft", reason: "default", rules };
}

/** Rules other software put there; Weft's own are left out so a restart keeps choosing the same way for the same host. */
function countRules(save: string): number {
  let n = 0;
  for (const line of save.split("\n")) if (line.startsWith("-A ") && !line.includes("WEFT-") && !line.includes("weft")) n++;
  return n;
}

/** Decides once at start-up unless one is forced: the hint chains first (two small listings per backend), the rule counts only without them. */
export async function detectIptablesBackend(run: Runner, choice: IptablesBackendChoice): Promise<BackendDetection> {
  if (choice !== "auto") return { backend: choice, reason: "forced", rules: { legacy: -1, nft: -1 } };
  const saved = run.iptablesBackend;
  for (const b of ["nft", "legacy"] as const) {
    run.iptablesBackend = b;
    const hints = await Promise.all(HINT_CHAINS.map((h) => run.listChain("mangle", h.slice(1)).catch(() => undefined)));
    if (hints.some((h) => h !== undefined)) {
      run.iptablesBackend = saved;
      return { backend: b, reason: "hint chain", rules: { legacy: -1, nft: -1 } };
    }
  }
  run.iptablesBackend = saved;
  // A backend whose binaries are missing counts as empty.
  const [legacy, nft] = await Promise.all((["legacy", "nft"] as const).map((b) => run.iptablesSave(b).catch(() => "")));
  return chooseBackend({ legacy, nft });
}
