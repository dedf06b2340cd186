// Processes the lab and the e2e tests start inside network namespaces:
// detached (the lab outlives `make lab`), logged to a file, tracked by PID
// file so `make lab-down` can stop exactly what was started.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { waitFor } from "./ports.js";

/**
 * Stops a child this process spawned: `signal`, then SIGKILL after `graceMs`;
 * resolves once `exited` (the child's exit event) has fired. No-op when it already exited.
 */
export async function stopChild(child: ChildProcess | undefined, exited: Promise<void>, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class LabProcess {
  pid?: number;
  private exitWatch?: Promise<void>;

  constructor(
    readonly name: string,
    readonly netns: string,
    readonly argv: string[],
    readonly runDir: string,
    readonly env: Record<string, string> = {},
  ) {}

  get logFile(): string {
    return path.join(this.runDir, "logs", `${this.name}.log`);
  }

  get pidFile(): string {
    return path.join(this.runDir, "pids", `${this.name}.pid`);
  }

  get running(): boolean {
    return this.pid !== undefined && pidAlive(this.pid);
  }

  start(): void {
    if (this.running) return;
    fs.mkdirSync(path.dirname(this.logFile), { recursive: true });
    fs.mkdirSync(path.dirname(this.pidFile), { recursive: true });
    const out = fs.openSync(this.logFile, "a");
    // `ip netns exec` execs the command, so the PID is the command's own.
    const child = spawn("ip", ["netns", "exec", this.netns, ...this.argv], {
      stdio: ["ignore", out, out],
      detached: true,
      env: { ...process.env, ...this.env },
    });
    fs.closeSync(out);
    child.unref();
    this.pid = child.pid;
    this.exitWatch = new Promise((resolve) => child.once("exit", () => resolve()));
    fs.writeFileSync(this.pidFile, `${child.pid}\n`);
  }

  /** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    if (pidAlive(pid)) {
      try {
        process.kill(pid, signal);
      } catch {
        /* gone already */
      }
      try {
        await waitFor(`${this.name} to exit`, () => !pidAlive(pid), graceMs, 20);
      } catch {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          /* gone */
        }
        await waitFor(`${this.name} to die`, () => !pidAlive(pid), 5000, 20);
      }
    }
    await this.exitWatch;
    this.pid = undefined;
    fs.rmSync(this.pidFile, { force: true });
  }

  kill9(): Promise<void> {
    return this.stop("SIGKILL", 1000);
  }

  async restart(): Promise<void> {
    await this.stop();
    this.start();
  }

  /** The last lines of the log, for error messages. */
  tail(lines = 15): string {
    try {
      return fs.readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }
}

/** Kills every process recorded under runDir/pids (used by `lab down` after a crash of `lab up`). */
export async function killRecorded(runDir: string): Promise<number> {
  const dir = path.join(runDir, "pids");
  let n = 0;
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const pid = Number(fs.readFileSync(path.join(dir, f), "utf8").trim());
    // A PID may have been reused since: only kill what still looks like ours.
    let cmdline = "";
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      /* gone */
    }
    if (pid > 0 && pidAlive(pid) && /weft|etcd/.test(cmdline)) {
      try {
        process.kill(pid, "SIGKILL");
        n++;
      } catch {
        /* gone */
      }
    }
    fs.rmSync(path.join(dir, f), { force: true });
  }
  return n;
}
