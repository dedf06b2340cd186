// `weft-agent --cleanup`: take the node off the overlay and forget it.
import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log/index.js";
import type { DataplanePort } from "../dataplane/types.js";
import { removeState, statePath } from "./state.js";
import { ENDPOINTS_FILE } from "../cni/endpoint-server.js";
import { ENDPOINT_SOCKET } from "../cni/endpoint.js";

/** Where CNI host-local keeps its allocations, under the state dir (so agents sharing a machine do not collide). */
export const CNI_DATA_SUBDIR = "cni";

export interface CleanupOptions {
  stateDir: string;
  cniConfDir: string;
  log: Logger;
  /** Tests only: the namespace the dataplane lives in. */
  netns?: string;
  /** Replaces the kernel dataplane (unit tests). */
  dataplane?: DataplanePort;
}

/** Removes every kernel object and file Weft created on this node, then the agent's own state. */
export async function cleanupNode(opts: CleanupOptions): Promise<void> {
  const { stateDir, log } = opts;
  const dataplane = opts.dataplane ?? (await import("./kernel.js")).createKernelDataplane({ log, netns: opts.netns, cniConfDir: opts.cniConfDir, stateDir });
  await dataplane.cleanup();
  await removeState(stateDir);
  await fs.rm(path.join(stateDir, CNI_DATA_SUBDIR), { recursive: true, force: true });
  // The CNI plugin's socket and the endpoints reported through it (the registry's files).
  for (const f of [ENDPOINTS_FILE, ENDPOINT_SOCKET]) await fs.rm(path.join(stateDir, f), { force: true });
  // Left-over temp files of an interrupted state write.
  const base = path.basename(statePath(stateDir));
  const entries = await fs.readdir(stateDir).catch(() => [] as string[]);
  for (const e of entries) if (e.startsWith(`${base}.`) && e.endsWith(".tmp")) await fs.rm(path.join(stateDir, e), { force: true });
  // The state dir itself only when nothing else lives there.
  await fs.rmdir(stateDir).catch(() => undefined);
  log.info({ stateDir }, "cleanup done: kernel objects, CNI data and agent state removed");
}
