// Shared by the dataplane benchmarks: a fresh namespace with an uplink, and
// one Dataplane.apply from empty timed in it.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { Dataplane, type NodeDesired } from "../../pkg/dataplane/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { percentile } from "./table.js";

/** Runs `fn` in a fresh namespace whose eth0 has 192.168.99.1/24; always removed. */
export async function withNamespace<T>(fn: (ns: string, dir: string) => Promise<T>): Promise<T> {
  const ns = `weft-bench-${crypto.randomBytes(3).toString("hex")}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-bench-"));
  await execa("ip", ["netns", "add", ns]);
  try {
    await execa("ip", ["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    await execa("ip", ["-n", ns, "addr", "add", "192.168.99.1/24", "dev", "eth0"]);
    await execa("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    await execa("ip", ["-n", ns, "link", "set", "eth0p", "up"]);
    return await fn(ns, dir);
  } finally {
    await execa("ip", ["netns", "del", ns], { reject: false });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The floor: milliseconds of the same entries written by one raw `ip -batch`, `bridge -batch`, `ip -batch` in `ns`. */
export async function rawBatches(ns: string, ip1: string[], bridge: string[], ip2: string[]): Promise<number> {
  const t0 = performance.now();
  await execa("ip", ["-n", ns, "-batch", "-"], { input: ip1.join("\n") + "\n" });
  await execa("bridge", ["-n", ns, "-batch", "-"], { input: bridge.join("\n") + "\n" });
  await execa("ip", ["-n", ns, "-batch", "-"], { input: ip2.join("\n") + "\n" });
  return performance.now() - t0;
}

/** Milliseconds of one Dataplane.apply of `desired` in a fresh namespace (devices, entries, rules, conflist); fails below `minChanges`. */
export async function applyFromEmpty(desired: NodeDesired, minChanges: number): Promise<number> {
  return withNamespace(async (ns, dir) => {
    const dp = new Dataplane({ log: silentLogger(), netns: ns, cniConfDir: dir, stateDir: dir });
    const t0 = performance.now();
    const report = await dp.apply(desired);
    const ms = performance.now() - t0;
    dp.close();
    if (report.changes < minChanges) throw new Error(`only ${report.changes} changes, expected at least ${minChanges}`);
    return ms;
  });
}

/** Median ms of Weft and of the floor at each size (`reps` runs each, interleaved): one table row per size. */
/**
 * Applies `base`, then times `samples` single additions on top of it (the
 * agent's path: one entry handed to the dataplane, then a flush of what is
 * pending), each of which must be exactly 3 kernel changes. Sorted times, ms.
 */
export async function addOneSamples(base: NodeDesired, samples: number, add: (dp: Dataplane, sample: number) => void): Promise<number[]> {
  return withNamespace(async (ns, dir) => {
    const dp = new Dataplane({ log: silentLogger(), netns: ns, cniConfDir: dir, stateDir: dir });
    await dp.apply(base);
    const out: number[] = [];
    for (let s = 0; s < samples; s++) {
      const t0 = performance.now();
      add(dp, s);
      const r = await dp.flush();
      out.push(performance.now() - t0);
      if (r.changes !== 3) throw new Error(`expected 3 changes, got ${r.changes}`);
    }
    dp.close();
    return out.sort((a, b) => a - b);
  });
}

export async function fromEmptyRows(sizes: number[], label: (n: number) => string, weft: (n: number) => Promise<number>, floor: (n: number) => Promise<number>): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  for (const n of sizes) {
    const w: number[] = [];
    const f: number[] = [];
    const reps = n >= 5000 ? 3 : 5;
    for (let i = 0; i < reps; i++) {
      w.push(await weft(n));
      f.push(await floor(n));
    }
    const mw = percentile(w.sort((a, b) => a - b), 50);
    const mf = percentile(f.sort((a, b) => a - b), 50);
    rows.push([label(n), reps, mw, mf, (mw / mf).toFixed(2)]);
  }
  return rows;
}
