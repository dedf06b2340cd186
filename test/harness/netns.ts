// A minimal network-namespace helper for dataplane/CNI tests: uniquely named
// `weft-…` namespaces, commands run inside them, and a removal that also kills
// anything left running inside. The full multi-host lab topology lives in
// pkg/lab; this is just enough for tests that build their own small topology.
import crypto from "node:crypto";
import { execa, type Result } from "execa";

/** `weft-<tag>-<6 hex>`: unique per test run, so parallel runs never collide. Keep tags short (names end up in interface names). */
export function uniqueNetnsPrefix(tag: string): string {
  return `weft-${tag}-${crypto.randomBytes(3).toString("hex")}`;
}

export class Netns {
  private constructor(readonly name: string) {}

  static async create(name: string): Promise<Netns> {
    if (!name.startsWith("weft-")) throw new Error(`netns name ${name}: test namespaces must start with "weft-"`);
    await execa("ip", ["netns", "add", name]);
    const ns = new Netns(name);
    await ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** The path CNI_NETNS expects. */
  get path(): string {
    return `/var/run/netns/${this.name}`;
  }

  /** `ip -n NAME …`; throws with stderr on failure. */
  async ip(...args: string[]): Promise<string> {
    return String((await execa("ip", ["-n", this.name, ...args])).stdout);
  }

  async ipJson<T>(...args: string[]): Promise<T[]> {
    const out = (await this.ip("-json", ...args)).trim();
    return out ? (JSON.parse(out) as T[]) : [];
  }

  async bridgeJson<T>(...args: string[]): Promise<T[]> {
    const out = String((await execa("bridge", ["-n", this.name, "-json", ...args])).stdout).trim();
    return out ? (JSON.parse(out) as T[]) : [];
  }

  /** Any command inside the namespace (`ip netns exec`). Does not throw on a non-zero exit: check `exitCode`. */
  exec(cmd: string, args: string[], opts: { input?: string } = {}): Promise<Result<{ reject: false }>> {
    return execa("ip", ["netns", "exec", this.name, cmd, ...args], { reject: false, input: opts.input }) as Promise<Result<{ reject: false }>>;
  }

  /** Kills what still runs inside, then deletes the namespace. Idempotent. */
  async delete(): Promise<void> {
    await deleteNetns(this.name);
  }
}

export async function deleteNetns(name: string): Promise<void> {
  const pids = await execa("ip", ["netns", "pids", name], { reject: false });
  for (const pid of String(pids.stdout).split("\n").filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  await execa("ip", ["netns", "del", name], { reject: false });
}

/** Every namespace whose name starts with `prefix` (to clean up after a failed setup). */
export async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  const { stdout } = await execa("ip", ["netns", "list"]);
  return String(stdout)
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n.startsWith(prefix));
}

export async function deleteNamespacesWithPrefix(prefix: string): Promise<void> {
  if (!prefix.startsWith("weft-")) throw new Error(`refusing to delete namespaces outside weft-…: ${prefix}`);
  for (const n of await namespacesWithPrefix(prefix)) await deleteNetns(n);
}

/**
 * An underlay for tests: a switch namespace `<prefix>-sw` with bridge br0,
 * and one host namespace `<prefix>-h<i>` per address, its eth0 (address/24)
 * a port `h<i>` of that bridge.
 */
export async function switchedHosts(prefix: string, addresses: string[]): Promise<{ sw: Netns; hosts: Netns[] }> {
  const sw = await Netns.create(`${prefix}-sw`);
  await sw.ip("link", "add", "br0", "type", "bridge");
  await sw.ip("link", "set", "br0", "up");
  const hosts: Netns[] = [];
  for (const [n, ip] of addresses.entries()) {
    const i = n + 1;
    const ns = await Netns.create(`${prefix}-h${i}`);
    await sw.ip("link", "add", `h${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns.name);
    await sw.ip("link", "set", `h${i}`, "master", "br0", "up");
    await ns.ip("addr", "add", `${ip}/24`, "dev", "eth0");
    await ns.ip("link", "set", "eth0", "up");
    hosts.push(ns);
  }
  return { sw, hosts };
}
