#!/usr/bin/env node
// weft: the CNI plugin chained in every Weft conflist. Reads the CNI
// environment and the network config on stdin, reports the endpoint to the
// node's agent, and prints the result (or a CNI error as JSON on stdout with a
// non-zero exit, as the CNI spec requires). All logic lives in pkg/cni.
import { CniCode, CniError, runPlugin } from "../../pkg/cni/plugin.js";

const HELP = `weft: CNI plugin that reports pod interfaces to the node's weft-agent.
Run by a container runtime, chained after "bridge" in a Weft conflist:
  CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION CNI_CONTAINERID=... CNI_NETNS=... CNI_IFNAME=... weft < config.json
Config fields: "network" (the Weft network, required), "socket" (the agent's socket,
default /var/lib/weft/cni.sock), "args": {"weft": {"name": "...", "aliases": ["..."]}}.
Under Kubernetes the endpoint is named K8S_POD_NAMESPACE/K8S_POD_NAME from CNI_ARGS.`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(): Promise<void> {
  const env = process.env;
  if (!env.CNI_COMMAND) {
    process.stderr.write(HELP + "\n");
    process.exitCode = process.argv.includes("--help") || process.argv.includes("-h") ? 0 : 2;
    return;
  }
  let version = "1.0.0";
  try {
    const stdin = env.CNI_COMMAND === "VERSION" ? "" : await readStdin();
    try {
      version = (JSON.parse(stdin) as { cniVersion?: string }).cniVersion ?? version;
    } catch {
      /* reported by runPlugin */
    }
    const cmd = { command: env.CNI_COMMAND, containerId: env.CNI_CONTAINERID ?? "", netns: env.CNI_NETNS ?? "", ifName: env.CNI_IFNAME ?? "", args: env.CNI_ARGS ?? "" };
    const out = await runPlugin(cmd, stdin, (msg) => process.stderr.write(msg + "\n"));
    if (out) process.stdout.write(out + "\n");
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(CniCode.io, (err as Error).message ?? String(err));
    process.stdout.write(JSON.stringify({ cniVersion: version, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) }) + "\n");
    process.exitCode = 1;
  }
}

void main();
