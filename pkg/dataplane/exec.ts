// Running iproute2 and iptables, in the current namespace (production) or in
// a named one (tests, the lab, benchmarks).
import fs from "node:fs/promises";
import { execa } from "execa";

export class CommandError extends Error {
  constructor(readonly command: string, readonly stderr: string) {
    super(`${command}: ${stderr.trim().split("\n").slice(0, 3).join(" | ") || "failed"}`);
    this.name = "CommandError";
  }
}

export class Runner {
  constructor(readonly netns?: string) {}

  private nsArgs(): string[] {
    return this.netns ? ["-n", this.netns] : [];
  }

  private async run(cmd: string, args: string[], input?: string): Promise<string> {
    const [file, argv] = this.netns && !(cmd === "ip" || cmd === "bridge") ? ["ip", ["netns", "exec", this.netns, cmd, ...args]] : [cmd, cmd === "ip" || cmd === "bridge" ? [...this.nsArgs(), ...args] : args];
    const res = await execa(file, argv, { input, reject: false, stripFinalNewline: false });
    // A command that could not start at all (not installed) has no output: say why instead.
    if (res.exitCode !== 0) throw new CommandError(`${cmd} ${args.join(" ")}`, String(res.stderr || res.stdout || res.shortMessage));
    return String(res.stdout);
  }

  async json<T>(cmd: "ip" | "bridge", ...args: string[]): Promise<T[]> {
    const out = (await this.run(cmd, ["-json", ...args])).trim();
    return out ? (JSON.parse(out) as T[]) : [];
  }

  /** Several `show` commands in one spawn (`ip -json -batch`): one parsed array per command. */
  async jsonBatch<T>(cmd: "ip", flags: string[], commands: string[]): Promise<T[][]> {
    return splitJsonValues(await this.run(cmd, ["-json", ...flags, "-batch", "-"], commands.join("\n") + "\n")) as T[][];
  }

  /** Runs a batch; stops at the first failing line (no -force), so later lines are never applied out of order. */
  async batch(cmd: "ip" | "bridge", lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.run(cmd, ["-batch", "-"], lines.join("\n") + "\n");
  }

  iptablesSave(): Promise<string> {
    return this.run("iptables-save", []);
  }

  async iptablesRestore(script: string): Promise<void> {
    await this.run("iptables-restore", ["--noflush", "-w", "5"], script);
  }

  async iptables(...args: string[]): Promise<boolean> {
    try {
      await this.run("iptables", ["-w", "5", ...args]);
      return true;
    } catch {
      return false;
    }
  }

  /** Reads a sysctl of this namespace. */
  async sysctl(key: string): Promise<string> {
    if (!this.netns) return (await fs.readFile(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8")).trim();
    return (await this.run("sysctl", ["-n", key])).trim();
  }

  async setSysctl(key: string, value: string): Promise<void> {
    if (!this.netns) await fs.writeFile(`/proc/sys/${key.replaceAll(".", "/")}`, value);
    else await this.run("sysctl", ["-q", "-w", `${key}=${value}`]);
  }

  /** Any other tool (ethtool): true when it succeeded. */
  async tryRun(cmd: string, ...args: string[]): Promise<boolean> {
    try {
      await this.run(cmd, args);
      return true;
    } catch {
      return false;
    }
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
