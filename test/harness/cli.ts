// How tests run Weft's commands as child processes: the compiled dist/ (what
// `make test` builds; it starts faster), unless it is older than the sources,
// in which case the sources through tsx, so a stale build is never tested.
import fs from "node:fs";
import path from "node:path";
import { makeCniBinDir } from "../../pkg/lab/cluster.js";

export const REPO = path.resolve(import.meta.dirname, "../..");

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (e.name.endsWith(".ts")) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** Arguments for `node` that run `cmd` (weftctl, weft-controller, weft-agent, the weft CNI plugin). */
export function commandArgv(cmd: "weftctl" | "weft-controller" | "weft-agent" | "weft-cni"): string[] {
  const built = path.join(REPO, "dist/cmd", cmd, "main.js");
  const fresh = fs.existsSync(built) && fs.statSync(built).mtimeMs >= Math.max(newestSource(path.join(REPO, "cmd", cmd)), newestSource(path.join(REPO, "pkg")));
  return fresh ? [built] : ["--import", "tsx", path.join(REPO, "cmd", cmd, "main.ts")];
}

/**
 * A CNI bin dir for tests: Debian's plugins linked in, plus `weft` as a
 * wrapper that runs the plugin from this checkout (a runtime finds plugins by
 * type name in CNI_PATH).
 */
export function cniBinDir(dir: string, system = "/usr/lib/cni"): string {
  return makeCniBinDir(dir, commandArgv("weft-cni"), system);
}
