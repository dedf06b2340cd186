// The agent's memory across restarts: the last config it applied and its own
// VTEP MACs. A restart while the controller is down re-applies exactly this
// (fail static), and the MACs keep recreated devices' addresses stable so
// peers' FDB/neighbour entries stay right (flannel#1795).
import fs from "node:fs/promises";
import path from "node:path";
import { NetworkConfig, type DesiredConfig, type DesiredNetwork } from "../api/index.js";
import { normalizeMac } from "../ip/index.js";

export const STATE_FILE = "agent-state.json";
const FORMAT = 1;

export interface PersistedState {
  /** Controller revision of the config below. */
  revision: number;
  /** The controller's config for this node, as last applied. */
  networks: NetworkConfig[];
  /** Network name -> MAC of this node's VXLAN device. */
  vtepMacs: Record<string, string>;
  /** Network name -> this node's subnet (sent back as previous_subnets). */
  subnets: Record<string, string>;
}

export function stateFromConfig(config: DesiredConfig, vtepMacs: Record<string, string>, subnets: Record<string, string>): PersistedState {
  const networks = [...config.networks.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((n) => ({ ...n, peers: [...n.peers.values()].sort((a, b) => a.nodeName.localeCompare(b.nodeName)) }));
  return { revision: config.revision, networks, vtepMacs: { ...vtepMacs }, subnets: { ...subnets } };
}

export function configFromState(state: PersistedState): DesiredConfig {
  const networks = new Map<string, DesiredNetwork>();
  for (const n of state.networks) networks.set(n.name, { ...n, peers: new Map(n.peers.map((p) => [p.nodeName, p])) });
  return { revision: state.revision, networks };
}

export function serializeState(state: PersistedState): string {
  return JSON.stringify({ format: FORMAT, revision: state.revision, vtepMacs: state.vtepMacs, subnets: state.subnets, networks: state.networks.map((n) => NetworkConfig.toJSON(n)) }, null, 1) + "\n";
}

function stringRecord(v: unknown, field: string): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${field}: not an object`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== "string") throw new Error(`${field}.${k}: not a string`);
  return { ...(v as Record<string, string>) };
}

/** Parses a state file's text; throws with the offending field on anything unexpected. */
export function parseState(text: string): PersistedState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error("not a JSON object");
  const o = raw as Record<string, unknown>;
  if (o.format !== FORMAT) throw new Error(`format: expected ${FORMAT}, got ${JSON.stringify(o.format)}`);
  if (typeof o.revision !== "number" || !Number.isSafeInteger(o.revision) || o.revision < 0) throw new Error("revision: not a non-negative integer");
  if (!Array.isArray(o.networks)) throw new Error("networks: not an array");
  const networks = o.networks.map((n, i) => {
    if (typeof n !== "object" || n === null) throw new Error(`networks[${i}]: not an object`);
    const c = NetworkConfig.fromJSON(n);
    if (!c.name) throw new Error(`networks[${i}].name: empty`);
    return c;
  });
  const vtepMacs = stringRecord(o.vtepMacs, "vtepMacs");
  for (const [net, mac] of Object.entries(vtepMacs)) if (!normalizeMac(mac)) throw new Error(`vtepMacs.${net}: "${mac}" is not a unicast MAC address`);
  return { revision: o.revision, networks, vtepMacs, subnets: stringRecord(o.subnets, "subnets") };
}

export function statePath(stateDir: string): string {
  return path.join(stateDir, STATE_FILE);
}

/** Writes the state atomically: a crash leaves either the old file or the new one, never half of one. */
export async function saveState(stateDir: string, state: PersistedState): Promise<void> {
  await fs.mkdir(stateDir, { recursive: true });
  const file = statePath(stateDir);
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await fs.open(tmp, "w", 0o600);
  try {
    await fh.writeFile(serializeState(state));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

/** The saved state, or undefined when there is none. Throws when the file exists but is unusable. */
export async function loadState(stateDir: string): Promise<PersistedState | undefined> {
  let text: string;
  try {
    text = await fs.readFile(statePath(stateDir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    return parseState(text);
  } catch (err) {
    throw new Error(`${statePath(stateDir)}: ${(err as Error).message}`);
  }
}

export async function removeState(stateDir: string): Promise<void> {
  await fs.rm(statePath(stateDir), { force: true });
}
