// Running iproute2 and iptables, in the current namespace (production) or in
// a named one (tests, the lab, benchmarks). Every command has a timeout (a
// hung `ip` or `iptables` — rtnl or xtables lock contention — must not block
// the dataplane forever), reads are retried, and the command running longest
// is visible to the watchdog behind /healthz.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
    /** Exit code; -1 when it was killed (timeout) or could not start. */
    readonly exitCode = 1,
  ) {
    super(`${command}: ${stderr.trim().split("\n").slice(0, 3).join(" | ") || "failed"}`);
    this.name = "CommandError";
  }
}

export type IptablesBackend = "legacy" | "nft";

export interface RunnerOptions {
  /** Kill a command after this long (default 10 s). */
  timeoutMs?: number;
  /** Extra attempts for read-only commands (default 2). */
  readRetries?: number;
  /** Which iptables binaries to run; default "nft" until detected (see detectIptablesBackend). */
  iptablesBackend?: IptablesBackend;
  /** Write batches through long-lived `ip`/`bridge -batch` processes (default true; see BatchProcess). */
  persistentBatches?: boolean;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;

export interface RunStats {
  commands: number;
  timeouts: number;
  retries: number;
}

export class Runner {
  readonly timeoutMs: number;
  private readonly readRetries: number;
  iptablesBackend: IptablesBackend;
  /** Start times of running commands, by a running id. */
  private readonly inFlight = new Map<number, number>();
  private nextId = 0;
  readonly stats: RunStats = { commands: 0, timeouts: 0, retries: 0 };
  private readonly persistent: boolean;
  private readonly batchers = new Map<"ip" | "bridge", BatchProcess>();

  constructor(
    readonly netns?: string,
    opts: RunnerOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.readRetries = opts.readRetries ?? 2;
    this.iptablesBackend = opts.iptablesBackend ?? "nft";
    this.persistent = opts.persistentBatches ?? true;
  }

  /** Stops the long-lived batch processes (they are restarted on demand). */
  close(): void {
    for (const b of this.batchers.values()) b.close();
    this.batchers.clear();
  }

  /** How long the oldest running command has been running, in seconds (0: none). */
  stuckSeconds(now = performance.now()): number {
    let oldest = now;
    for (const t of this.inFlight.values()) if (t < oldest) oldest = t;
    return (now - oldest) / 1000;
  }

  private argv(cmd: string, args: string[]): [string, string[]] {
    if (cmd === "ip" || cmd === "bridge") return [cmd, this.netns ? ["-n", this.netns, ...args] : args];
    return this.netns ? ["ip", ["netns", "exec", this.netns, cmd, ...args]] : [cmd, args];
  }

  /** One spawn with a timeout; the whole process group is killed on expiry (a wrapper script's children too). */
  private once(cmd: string, args: string[], input?: string): Promise<string> {
    const [file, argv] = this.argv(cmd, args);
    const label = `${cmd} ${args.join(" ")}`.slice(0, 200);
    const id = this.nextId++;
    this.inFlight.set(id, performance.now());
    this.stats.commands++;
    return new Promise<string>((resolve, reject) => {
      const child = spawn(file, argv, { stdio: ["pipe", "pipe", "pipe"], detached: true });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.stats.timeouts++;
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          child.kill("SIGKILL");
        }
      }, this.timeoutMs);
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      child.stdin.on("error", () => undefined); // a command that exits early closes its stdin
      child.on("error", (e) => {
        clearTimeout(timer);
        this.inFlight.delete(id);
        reject(new CommandError(label, e.message, -1));
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        this.inFlight.delete(id);
        if (timedOut) return reject(new CommandError(label, `timed out after ${this.timeoutMs} ms`, -1));
        const stdout = Buffer.concat(out).toString();
        if (code !== 0) return reject(new CommandError(label, Buffer.concat(err).toString() || stdout, code ?? -1));
        resolve(stdout);
      });
      child.stdin.end(input ?? "");
    });
  }

  /** Read-only commands: retried (a timeout or a transient netlink error) before giving up. */
  private async read(cmd: string, args: string[], input?: string, retryIf: (e: CommandError) => boolean = () => true): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(cmd, args, input);
      } catch (e) {
        if (!(e instanceof CommandError) || attempt >= this.readRetries || !retryIf(e)) throw e;
        this.stats.retries++;
      }
    }
  }

  async json<T>(cmd: "ip" | "bridge", ...args: string[]): Promise<T[]> {
    const out = (await this.read(cmd, ["-json", ...args])).trim();
    return out ? (JSON.parse(out) as T[]) : [];
  }

  /** Several `show` commands in one spawn (`ip -json -batch`): one parsed array per command. */
  async jsonBatch<T>(cmd: "ip" | "bridge", flags: string[], commands: string[]): Promise<T[][]> {
    if (commands.length === 0) return [];
    return splitJsonValues(await this.read(cmd, ["-json", ...flags, "-batch", "-"], commands.join("\n") + "\n")) as T[][];
  }

  /**
   * Runs a batch; stops at the first failing line (no -force), so later lines are never applied out of order.
   * Not retried here: after a failure the dataplane reads the kernel again and plans afresh.
   */
  async batch(cmd: "ip" | "bridge", lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    if (!this.persistent) {
      await this.once(cmd, ["-batch", "-"], lines.join("\n") + "\n");
      return;
    }
    let b = this.batchers.get(cmd);
    if (!b) this.batchers.set(cmd, (b = new BatchProcess(...this.argv(cmd, ["-force", "-batch", "-"]), this.timeoutMs)));
    const id = this.nextId++;
    this.inFlight.set(id, performance.now());
    this.stats.commands++;
    try {
      await b.run(lines);
    } catch (e) {
      if (e instanceof CommandError && e.exitCode === -1 && /timed out/.test(e.stderr)) this.stats.timeouts++;
      throw e;
    } finally {
      this.inFlight.delete(id);
    }
  }

  private ipt(tool: "iptables" | "iptables-save" | "iptables-restore"): string {
    return tool.replace("iptables", `iptables-${this.iptablesBackend}`);
  }

  /** `iptables -t <table> -S <chain>`; undefined when the chain does not exist. */
  async listChain(table: string, chain: string): Promise<string[] | undefined> {
    try {
      const out = await this.read(this.ipt("iptables"), ["-w", "5", "-t", table, "-S", chain], undefined, (e) => e.exitCode === -1);
      return out.split("\n").filter((l) => l.startsWith("-A ") || l.startsWith("-N ") || l.startsWith("-P "));
    } catch (e) {
      // Exit 1: no such chain (both backends). A timeout is a real failure.
      if (e instanceof CommandError && e.exitCode === 1) return undefined;
      throw e;
    }
  }

  /** The whole ruleset of one backend (start-up detection and cleanup only; never on a resync). */
  iptablesSave(backend: IptablesBackend = this.iptablesBackend): Promise<string> {
    return this.read(`iptables-${backend}-save`, []);
  }

  async iptablesRestore(script: string): Promise<void> {
    await this.once(this.ipt("iptables-restore"), ["--noflush", "-w", "5"], script);
  }

  /** Whether this backend's MASQUERADE target knows --random-fully (iptables ≥ 1.6.2). */
  async supportsRandomFully(): Promise<boolean> {
    const help = await this.once(this.ipt("iptables"), ["-j", "MASQUERADE", "-h"]).catch((e: CommandError) => e.stderr);
    return help.includes("--random-fully");
  }

  /** Reads a sysctl of this namespace. */
  async sysctl(key: string): Promise<string> {
    if (!this.netns) return (await fs.readFile(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8")).trim();
    return (await this.read("sysctl", ["-n", key])).trim();
  }

  async setSysctl(key: string, value: string): Promise<void> {
    if (!this.netns) await fs.writeFile(`/proc/sys/${key.replaceAll(".", "/")}`, value);
    else await this.once("sysctl", ["-q", "-w", `${key}=${value}`]);
  }

  /** Any other tool (ethtool): true when it succeeded. */
  async tryRun(cmd: string, ...args: string[]): Promise<boolean> {
    try {
      await this.once(cmd, args);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * One long-lived `ip -force -batch -` (or `bridge`) process fed batch after
 * batch: a spawn costs ~3-9 ms here, which is most of a one-peer update.
 * After each batch a marker line is written that always fails (a device name
 * longer than IFNAMSIZ cannot exist); with -force every failing line prints
 * its message and "Command failed -:<line>" on stderr, in order, so the
 * marker's report says the batch is done and any earlier report in the batch's
 * range is its error. -force means later lines of a failed batch still run:
 * the caller treats any error as "re-read the kernel and plan again".
 */
export class BatchProcess {
  private child?: ChildProcess;
  private line = 0;
  private buf = "";
  private messages: string[] = [];
  private waiting?: { first: number; marker: number; errors: string[]; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout };
  private queue: Promise<unknown> = Promise.resolve();
  static readonly MARKER = "weft-batch-marker";

  constructor(
    private readonly file: string,
    private readonly argv: string[],
    private readonly timeoutMs: number,
  ) {}

  run(lines: string[]): Promise<void> {
    const next = this.queue.then(() => this.runNow(lines));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private start(): ChildProcess {
    const child = spawn(this.file, this.argv, { stdio: ["pipe", "ignore", "pipe"], detached: true });
    this.line = 0;
    this.buf = "";
    this.messages = [];
    child.stdin!.on("error", () => undefined);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => this.onStderr(chunk));
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.fail(new CommandError(this.label(), why, -1));
    };
    child.on("error", (e) => gone(e.message));
    child.on("close", (code) => gone(`batch process exited (${code ?? "signal"})${this.messages.length ? `: ${this.messages.join(" | ")}` : ""}`));
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    return child;
  }

  private label(): string {
    return `${this.file} ${this.argv.join(" ")}`;
  }

  private runNow(lines: string[]): Promise<void> {
    this.child ??= this.start();
    const child = this.child;
    const first = this.line + 1;
    const marker = this.line + lines.length + 1;
    this.line = marker;
    const markerCmd = this.file === "bridge" ? `fdb show dev ${BatchProcess.MARKER}` : `link show dev ${BatchProcess.MARKER}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new CommandError(this.label(), `timed out after ${this.timeoutMs} ms`, -1));
        this.kill(child);
      }, this.timeoutMs);
      this.waiting = { first, marker, errors: [], resolve, reject, timer };
      child.stdin!.write(lines.join("\n") + "\n" + markerCmd + "\n");
    });
  }

  private onStderr(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const l = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      const m = /^Command failed -:(\d+)$/.exec(l);
      if (!m) {
        if (l.trim()) this.messages.push(l.trim());
        continue;
      }
      const n = Number(m[1]);
      const w = this.waiting;
      const msg = this.messages.filter((x) => !x.includes(BatchProcess.MARKER)).join(" | ");
      this.messages = [];
      if (!w) continue;
      if (n === w.marker) {
        clearTimeout(w.timer);
        this.waiting = undefined;
        if (w.errors.length === 0) w.resolve();
        else w.reject(new CommandError(`${this.file} -batch`, w.errors.slice(0, 3).join(" | ")));
      } else if (n >= w.first && n < w.marker) w.errors.push(`line ${n - w.first + 1}: ${msg || "failed"}`);
    }
  }

  private fail(e: Error): void {
    const w = this.waiting;
    if (!w) return;
    clearTimeout(w.timer);
    this.waiting = undefined;
    w.reject(e);
  }

  private kill(child: ChildProcess): void {
    if (this.child === child) this.child = undefined;
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  }

  close(): void {
    if (this.child) this.kill(this.child);
  }
}

/**
 * `ip -json -batch` prints one JSON array per command, back to back. iproute2
 * prints each on its own line, which JSON.parse handles fastest; anything else
 * falls back to scanning for top-level values.
 */
export function splitJsonValues(text: string): unknown[] {
  try {
    return text
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as unknown);
  } catch {
    return scanJsonValues(text);
  }
}

function scanJsonValues(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "[" || ch === "{") {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === "]" || ch === "}") {
      depth--;
      if (depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return out;
}
