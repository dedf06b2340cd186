import fs from "node:fs";
import path from "node:path";

export interface BenchTable {
  /** File name under bench/results/ (without extension), e.g. "controller-scale". */
  id: string;
  title: string;
  columns: string[];
  rows: (string | number)[][];
  /** Free text printed under the table: machine, method, target. */
  notes?: string[];
}

export function formatTable(t: BenchTable): string {
  const cells = [t.columns, ...t.rows.map((r) => r.map((c) => (typeof c === "number" ? fmt(c) : c)))];
  const widths = t.columns.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? "").length)));
  const line = (r: (string | number)[]) => "| " + r.map((c, i) => String(c ?? "").padEnd(widths[i])).join(" | ") + " |";
  const sep = "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|";
  return [`### ${t.title}`, "", line(cells[0]), sep, ...cells.slice(1).map(line), "", ...(t.notes ?? []).map((n) => `- ${n}`)].join("\n");
}

function fmt(n: number): string {
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toPrecision(3);
}

/** Prints the table and writes it to bench/results/<id>.md and .json. */
export function publish(t: BenchTable, dir = path.resolve("bench/results")): void {
  fs.mkdirSync(dir, { recursive: true });
  const text = formatTable(t);
  process.stdout.write(text + "\n\n");
  const stamp = new Date().toISOString();
  fs.writeFileSync(path.join(dir, `${t.id}.md`), `${text}\n\n_measured ${stamp}_\n`);
  fs.writeFileSync(path.join(dir, `${t.id}.json`), JSON.stringify({ ...t, measuredAt: stamp }, null, 2) + "\n");
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
