// Output for people (aligned columns) and for programs (-o json).

export type Row = Record<string, unknown>;

function cell(v: unknown): string {
  if (v === undefined || v === null || v === "") return "-";
  if (Array.isArray(v)) return v.length ? v.join(",") : "-";
  if (typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>);
    return entries.length ? entries.map(([k, x]) => `${k}=${x}`).join(",") : "-";
  }
  return String(v);
}

/** Columns: [header, key]. */
export function renderTable(rows: Row[], columns: [string, string][]): string {
  const cells = [columns.map(([h]) => h), ...rows.map((r) => columns.map(([, k]) => cell(r[k])))];
  const widths = columns.map((_, i) => Math.max(...cells.map((c) => c[i].length)));
  return cells.map((c) => c.map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i]))).join("   ")).join("\n") + "\n";
}

export function print(rows: Row[], columns: [string, string][], output: string): void {
  if (output === "json") process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
  else if (output === "table") process.stdout.write(renderTable(rows, columns));
  else throw new Error(`-o: unknown output format "${output}" (table or json)`);
}
