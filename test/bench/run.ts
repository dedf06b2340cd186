// `make bench`: runs every benchmark module (test/bench/*.bench.ts), each of
// which prints its tables and writes them to bench/results/. BENCH=name runs one.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const only = process.env.BENCH;
const files = fs.readdirSync(here).filter((f) => f.endsWith(".bench.ts") && (!only || f.startsWith(only))).sort();
if (files.length === 0) {
  console.error(`no benchmark matches ${only ?? "*"}`);
  process.exit(1);
}
for (const f of files) {
  console.log(`## ${f}\n`);
  const mod = (await import(pathToFileURL(path.join(here, f)).href)) as { run: () => Promise<void> };
  await mod.run();
}
