// Network specs as weftctl reads them: from flags, or from YAML files holding
// bare specs or OverlayNetwork objects (the CRD's shape), several per file.
import fs from "node:fs";
import { parseAllDocuments } from "yaml";

/** One document to an untyped spec with its name; validation happens later, in one place. */
export function specFromDocument(doc: unknown, where: string): Record<string, unknown> {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error(`${where}: expected a mapping`);
  const o = doc as Record<string, unknown>;
  if ("kind" in o || "apiVersion" in o) {
    if (o.kind !== "OverlayNetwork") throw new Error(`${where}: kind must be OverlayNetwork, got ${JSON.stringify(o.kind)}`);
    const meta = (o.metadata ?? {}) as Record<string, unknown>;
    if (typeof meta.name !== "string") throw new Error(`${where}: metadata.name is required`);
    const spec = o.spec;
    if (typeof spec !== "object" || spec === null) throw new Error(`${where}: spec is required`);
    return { ...(spec as Record<string, unknown>), name: meta.name };
  }
  return { ...o };
}

export function readSpecFile(file: string): Record<string, unknown>[] {
  let text: string;
  try {
    text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${file === "-" ? "stdin" : file}: ${(err as Error).message}`);
  }
  const docs = parseAllDocuments(text);
  const out: Record<string, unknown>[] = [];
  docs.forEach((d, i) => {
    if (d.errors.length > 0) throw new Error(`${file}: document ${i + 1}: ${d.errors[0].message}`);
    const value = d.toJS();
    if (value === null || value === undefined) return;
    out.push(specFromDocument(value, `${file}: document ${i + 1}`));
  });
  if (out.length === 0) throw new Error(`${file}: no network in it`);
  return out;
}
