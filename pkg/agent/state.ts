// The agent's memory across restarts: the controller's config for this node
// (with the endpoints of its networks: a switched network's FDB and neighbour
// entries hang off them) and its own VTEP MACs. A restart while the controller is down re-applies
// exactly this (fail static), and the MACs keep devices' addresses stable so
// peers' FDB/neighbour entries stay right (flannel#1795).
//
// Cost per update is O(change) and restart-safe at any instant: every update
// is appended to a journal (one write, before it reaches the kernel) and the
// whole state is rewritten atomically only now and then (debounced
// compaction), after which the journal starts over. Loading replays the
// journal on the snapshot; a torn last line (killed mid-write) is ignored.
// The MACs live in their own small file, written with fsync before a device
// is created, so the first Join after any restart carries them.
import fsSync from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { applyConfigUpdate, ConfigUpdate, Endpoint, endpointKey, NetworkConfig, type DesiredConfig, type DesiredNetwork } from "../api/index.js";
import { normalizeMac } from "../ip/index.js";

export const STATE_FILE = "agent-state.json";
export const JOURNAL_FILE = "agent-state.journal";
export const MACS_FILE = "vtep-macs.json";
const FORMAT = 1;

export interface PersistedState {
  /** Controller revision of the config below. */
  revision: number;
  /** The controller's config for this node, as last applied. */
  networks: NetworkConfig[];
  /** Network name -> its endpoints as the controller sent them (switched networks and networks with dns). */
  endpoints: Record<string, Endpoint[]>;
  /** Network name -> MAC of this node's VXLAN device. */
  vtepMacs: Record<string, string>;
  /** Network name -> this node's subnet (sent back as previous_subnets). */
  subnets: Record<string, string>;
}

export function stateFromConfig(config: DesiredConfig, vtepMacs: Record<string, string>, subnets: Record<string, string>): PersistedState {
  const sorted = [...config.networks.values()].sort((a, b) => a.name.localeCompare(b.name));
  const networks = sorted.map(({ endpoints: _endpoints, ...n }) => ({ ...n, peers: [...n.peers.values()].sort((a, b) => a.nodeName.localeCompare(b.nodeName)) }));
  const endpoints: Record<string, Endpoint[]> = {};
  for (const n of sorted) if (n.endpoints.size > 0) endpoints[n.name] = [...n.endpoints.values()];
  return { revision: config.revision, networks, endpoints, vtepMacs: { ...vtepMacs }, subnets: { ...subnets } };
}

export function configFromState(state: PersistedState): DesiredConfig {
  const networks = new Map<string, DesiredNetwork>();
  for (const n of state.networks) {
    const endpoints = new Map((state.endpoints[n.name] ?? []).map((e) => [endpointKey(e), e]));
    networks.set(n.name, { ...n, peers: new Map(n.peers.map((p) => [p.nodeName, p])), endpoints });
  }
  return { revision: state.revision, networks };
}

export function serializeState(state: PersistedState): string {
  const endpoints = Object.fromEntries(Object.entries(state.endpoints).map(([net, list]) => [net, list.map((e) => Endpoint.toJSON(e))]));
  return JSON.stringify({ format: FORMAT, revision: state.revision, vtepMacs: state.vtepMacs, subnets: state.subnets, networks: state.networks.map((n) => NetworkConfig.toJSON(n)), endpoints }, null, 1) + "\n";
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
  // Absent in files written before endpoints were kept: none.
  const endpoints: Record<string, Endpoint[]> = {};
  if (o.endpoints !== undefined) {
    if (typeof o.endpoints !== "object" || o.endpoints === null || Array.isArray(o.endpoints)) throw new Error("endpoints: not an object");
    for (const [net, list] of Object.entries(o.endpoints)) {
      if (!Array.isArray(list)) throw new Error(`endpoints.${net}: not an array`);
      endpoints[net] = list.map((e, i) => {
        if (typeof e !== "object" || e === null) throw new Error(`endpoints.${net}[${i}]: not an object`);
        return Endpoint.fromJSON(e);
      });
    }
  }
  const vtepMacs = stringRecord(o.vtepMacs, "vtepMacs");
  for (const [net, mac] of Object.entries(vtepMacs)) if (!normalizeMac(mac)) throw new Error(`vtepMacs.${net}: "${mac}" is not a unicast MAC address`);
  return { revision: o.revision, networks, endpoints, vtepMacs, subnets: stringRecord(o.subnets, "subnets") };
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

/** The saved state (snapshot + journal + MACs), or undefined when there is none. Throws when the snapshot exists but is unusable. */
export async function loadState(stateDir: string): Promise<PersistedState | undefined> {
  let state: PersistedState | undefined;
  const text = await fs.readFile(statePath(stateDir), "utf8").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  if (text !== undefined) {
    try {
      state = parseState(text);
    } catch (err) {
      throw new Error(`${statePath(stateDir)}: ${(err as Error).message}`);
    }
  }
  const journal = await fs.readFile(path.join(stateDir, JOURNAL_FILE), "utf8").catch(() => "");
  const macs = await loadMacs(stateDir);
  if (!state && !journal && Object.keys(macs).length === 0) return undefined;
  state ??= { revision: 0, networks: [], endpoints: {}, vtepMacs: {}, subnets: {} };
  if (journal) {
    let config = configFromState(state);
    for (const line of journal.split("\n")) {
      if (!line) continue;
      let update: ConfigUpdate;
      try {
        update = ConfigUpdate.fromJSON(JSON.parse(line));
      } catch {
        continue; // the torn tail of a write the process was killed in
      }
      config = applyConfigUpdate(config, update);
    }
    state = stateFromConfig(config, state.vtepMacs, state.subnets);
    for (const n of state.networks) if (n.subnet) state.subnets[n.name] = n.subnet;
  }
  state.vtepMacs = { ...state.vtepMacs, ...macs };
  return state;
}

/** The persisted VTEP MACs (network name -> MAC); a bad entry is dropped, not fatal. */
export async function loadMacs(stateDir: string): Promise<Record<string, string>> {
  const text = await fs.readFile(path.join(stateDir, MACS_FILE), "utf8").catch(() => "");
  if (!text) return {};
  try {
    const o = JSON.parse(text) as unknown;
    if (typeof o !== "object" || o === null || Array.isArray(o)) return {};
    return Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => typeof e[1] === "string" && !!normalizeMac(e[1])));
  } catch {
    return {};
  }
}

/** Writes the MACs durably (temp file, fsync, rename) before any device is created with them. Synchronous: it is tiny and must precede the kernel. */
export function saveMacsSync(stateDir: string, macs: Record<string, string>): void {
  fsSync.mkdirSync(stateDir, { recursive: true });
  const file = path.join(stateDir, MACS_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fsSync.openSync(tmp, "w", 0o600);
  try {
    fsSync.writeSync(fd, JSON.stringify(macs) + "\n");
    fsSync.fsyncSync(fd);
  } finally {
    fsSync.closeSync(fd);
  }
  fsSync.renameSync(tmp, file);
}

/** Random locally administered unicast MAC (02-style), as flannel and the kernel choose one. */
export function randomMac(random: () => number = Math.random): string {
  const b = Array.from({ length: 6 }, () => Math.floor(random() * 256));
  b[0] = (b[0] & 0xfe) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
}

export interface JournalOptions {
  stateDir: string;
  /** Compaction runs this long after the first update since the last one (default 2 s). */
  compactAfterMs?: number;
  /** The whole state to write at compaction. */
  snapshot: () => PersistedState;
  onError: (err: Error) => void;
}

/** Appends each update before it is applied; compacts into the state file on a debounce. */
export class StateJournal {
  private fd?: number;
  private timer?: NodeJS.Timeout;
  private readonly file: string;
  /** Bytes appended since the last compaction. */
  pendingBytes = 0;

  constructor(private readonly opts: JournalOptions) {
    this.file = path.join(opts.stateDir, JOURNAL_FILE);
  }

  /** One synchronous append: once it returns, a SIGKILL cannot lose the update (the page cache survives the process). */
  record(update: ConfigUpdate): void {
    try {
      if (this.fd === undefined) {
        fsSync.mkdirSync(this.opts.stateDir, { recursive: true });
        this.fd = fsSync.openSync(this.file, "a", 0o600);
      }
      const line = JSON.stringify(ConfigUpdate.toJSON(update)) + "\n";
      fsSync.writeSync(this.fd, line);
      this.pendingBytes += line.length;
    } catch (err) {
      this.opts.onError(err as Error);
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.compact();
    }, this.opts.compactAfterMs ?? 2000);
    this.timer.unref?.();
  }

  /** The whole state to the state file (atomic, fsynced), then the journal starts over. Synchronous so no append falls in between. */
  compact(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    try {
      const file = statePath(this.opts.stateDir);
      const tmp = `${file}.${process.pid}.tmp`;
      const fd = fsSync.openSync(tmp, "w", 0o600);
      try {
        fsSync.writeSync(fd, serializeState(this.opts.snapshot()));
        fsSync.fsyncSync(fd);
      } finally {
        fsSync.closeSync(fd);
      }
      fsSync.renameSync(tmp, file);
      if (this.fd !== undefined) fsSync.ftruncateSync(this.fd, 0);
      else fsSync.rmSync(this.file, { force: true });
      this.pendingBytes = 0;
    } catch (err) {
      this.opts.onError(err as Error);
    }
  }

  /** Compacts what is pending and closes the journal. */
  close(): void {
    if (this.pendingBytes > 0) this.compact();
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.fd !== undefined) fsSync.closeSync(this.fd);
    this.fd = undefined;
  }
}

export async function removeState(stateDir: string): Promise<void> {
  for (const f of [STATE_FILE, JOURNAL_FILE, MACS_FILE]) await fs.rm(path.join(stateDir, f), { force: true });
}
