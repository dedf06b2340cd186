import { Command, InvalidArgumentError, Option } from "commander";
import ms from "ms";

export { Command, Option, InvalidArgumentError };

/** Environment variable that backs a flag: --etcd-endpoints -> WEFT_ETCD_ENDPOINTS. */
export function envName(flag: string): string {
  return "WEFT_" + flag.replace(/^-+/, "").replace(/-/g, "_").toUpperCase();
}

/**
 * An option whose value can also come from WEFT_<FLAG>. `flags` is commander
 * syntax, e.g. "--etcd-endpoints <urls>".
 */
export function envOption(flags: string, description: string, defaultValue?: unknown, defaultDescription?: string): Option {
  const long = flags.split(/[ ,]+/).find((f) => f.startsWith("--"));
  if (!long) throw new Error(`option ${flags} has no long form`);
  const opt = new Option(flags, description).env(envName(long));
  if (defaultValue !== undefined) opt.default(defaultValue, defaultDescription);
  return opt;
}

/** Parses "24h", "30s", "500ms" or a bare number of milliseconds. */
export function parseDuration(value: string): number {
  // ms() throws its own message on "" (an unset-looking env variable): answer like any other bad value.
  const n = /^\d+$/.test(value) ? Number(value) : value.trim() === "" ? undefined : (ms(value as ms.StringValue) as number | undefined);
  if (n === undefined || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError(`not a duration: "${value}" (examples: 500ms, 30s, 5m, 24h)`);
  }
  return n;
}

export function parsePositiveInt(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`not a whole number: "${value}"`);
  return Number(value);
}

/** Comma-separated list, empty items dropped. */
export function parseList(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

/** "true"/"false" (also 1/0, yes/no) for flags such as --nat-outgoing=false. */
export function parseBool(value: string): boolean {
  const v = value.toLowerCase();
  if (["true", "1", "yes"].includes(v)) return true;
  if (["false", "0", "no"].includes(v)) return false;
  throw new InvalidArgumentError(`not a boolean: "${value}" (true or false)`);
}

/** Parses "k=v,k2=v2" into a record. */
export function parseLabels(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of parseList(value)) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new InvalidArgumentError(`label "${item}" is not key=value`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Runs `main`, turning any thrown error into a one-line message and a non-zero
 * exit status instead of a stack trace.
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`error: ${msg}\n`);
    process.exitCode = process.exitCode && process.exitCode !== 0 ? process.exitCode : 1;
  }
}
