// weftctl's command tree: networks, leases and nodes in a Weft etcd
// (standalone mode). main.ts only runs it; tests inspect it without etcd.
import { checkNetworkConflicts, validateNetworkSpec } from "../../pkg/spec/index.js";
import { Command, envOption, parseBool, parseDuration, parseLabels } from "../../pkg/cli/index.js";
import { etcdConnection, etcdFlagOptions, Store, type EtcdFlags, type NetworkSpec } from "../../pkg/store/index.js";
import { readSpecFile } from "./input.js";
import { print, type Row } from "./table.js";

interface Global extends EtcdFlags {
  timeout: number;
}

type SaveResult = "created" | "updated" | "unchanged";

async function withStore<T>(g: Global, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = Store.connect({ ...etcdConnection(g), timeoutMs: g.timeout });
  try {
    return await fn(store);
  } catch (err) {
    const msg = (err as Error).message ?? String(err);
    if (/UNAVAILABLE|ECONNREFUSED|no answer within/.test(msg)) throw new Error(`cannot reach etcd at ${g.etcdEndpoints.join(",")}: ${msg.split(". ")[0]}`);
    throw err;
  } finally {
    await store.close();
  }
}

const alreadyExists = (name: string) => new Error(`network "${name}" already exists (use "network apply" to change it)`);

/**
 * Writes `spec` after checking it against the stored networks inside the
 * store's transaction. `createOnly` refuses an existing network there too, so
 * two concurrent creates cannot both win.
 */
async function save(store: Store, spec: NetworkSpec, createOnly = false): Promise<SaveResult> {
  let result: SaveResult = "created";
  const existing = await store.getNetwork(spec.name);
  if (existing && createOnly) throw alreadyExists(spec.name);
  if (existing && JSON.stringify(existing) === JSON.stringify(spec)) return "unchanged";
  await store.saveNetwork(spec, (s, others, stored) => {
    if (stored && createOnly) throw alreadyExists(s.name);
    checkNetworkConflicts(s, others, stored);
    result = stored ? "updated" : "created";
  });
  return result;
}

/** Flags arrive as strings; whole numbers are converted, anything else is left for validation to reject by field name. */
function num(v: string | undefined): unknown {
  return v !== undefined && /^-?\d+$/.test(v) ? Number(v) : v;
}

const outputOption = () => envOption("-o, --output <format>", "table or json", "table").choices(["table", "json"]);

const networkColumns: [string, string][] = [
  ["NAME", "name"], ["CIDR", "cidr"], ["VNI", "vni"], ["NODE PREFIX", "nodePrefixLength"], ["MODE", "mode"], ["MTU", "mtu"], ["PORT", "port"],
  ["NAT", "natOutgoing"], ["ISOLATED", "isolated"], ["DEFAULT", "default"], ["FLOOD", "flood"], ["DNS", "dns"], ["SELECTOR", "nodeSelector"],
];
const leaseColumns: [string, string][] = [["NETWORK", "network"], ["NODE", "node"], ["SUBNET", "subnet"], ["VTEP IP", "vtepIP"], ["VTEP MAC", "vtepMac"], ["ACQUIRED", "acquired"]];
const endpointColumns: [string, string][] = [["NETWORK", "network"], ["NAME", "name"], ["NODE", "node"], ["IP", "ips"], ["MAC", "mac"]];
const nodeColumns: [string, string][] = [["NAME", "name"], ["UNDERLAY IP", "underlayIP"], ["SUBNETS", "subnets"], ["VTEP MACS", "vtepMacs"], ["LABELS", "labels"], ["VERSION", "agentVersion"], ["LAST SEEN", "lastSeen"]];

/** Builds a fresh command tree (no global state), ready for parseAsync. */
export function buildProgram(): Command {
  // Commander's default on a usage error is one line, "error: …"; no help dump after it.
  const program = new Command("weftctl")
    .description("Manage Weft networks, leases, nodes and endpoints stored in etcd.\nEvery flag shown with an env: can also be set through that environment variable.");
  for (const o of etcdFlagOptions()) program.addOption(o);
  program
    .addOption(envOption("--timeout <duration>", "give up on etcd after this long", 5000, "5s").argParser(parseDuration));
  const store = <T>(fn: (s: Store) => Promise<T>) => withStore(program.opts<Global>(), fn);

  const network = program.command("network").description("create, apply, list, get and delete networks");

  network
    .command("create <name>")
    .description("create a network (fails if it exists; use apply to update)")
    .requiredOption("--cidr <cidr>", "IPv4 range of the network, e.g. 10.244.0.0/16")
    .requiredOption("--vni <vni>", "VXLAN network identifier, 1-16777215, unique")
    .requiredOption("--node-prefix-length <n>", "prefix length of each node's subnet, e.g. 24")
    .option("--mode <mode>", "routed or switched (default: routed)")
    .option("--mtu <n>", "overlay MTU; 0 = uplink MTU - 50 (default: 0)")
    .option("--port <n>", "VXLAN UDP port (default: 4789)")
    .option("--nat-outgoing [bool]", "masquerade traffic leaving the network (default: true)", parseBool)
    .option("--isolated [bool]", "drop traffic to other Weft networks (default: true)", parseBool)
    .option("--default [bool]", "the network pods get through 10-weft.conflist (default: false)", parseBool)
    .option("--flood [bool]", "switched only: flood broadcast/multicast to every node (default: false)", parseBool)
    .option("--dns [bool]", "agents answer DNS for the network's endpoints on their gateway (default: false)", parseBool)
    .option("--node-selector <k=v,...>", "labels a node must have to join (default: every node)", parseLabels)
    .action(async (name: string, o: Record<string, string | boolean | Record<string, string> | undefined>) => {
      const input: Record<string, unknown> = { name, cidr: o.cidr, vni: num(o.vni as string), nodePrefixLength: num(o.nodePrefixLength as string) };
      if (o.mode !== undefined) input.mode = o.mode;
      if (o.mtu !== undefined) input.mtu = num(o.mtu as string);
      if (o.port !== undefined) input.port = num(o.port as string);
      for (const f of ["natOutgoing", "isolated", "default", "flood", "dns"]) if (o[f] !== undefined) input[f] = o[f];
      if (o.nodeSelector !== undefined) input.nodeSelector = o.nodeSelector;
      const spec = validateNetworkSpec(input);
      await store((s) => save(s, spec, true));
      process.stdout.write(`network/${name} created\n`);
    });

  network
    .command("apply")
    .description("create or update the networks in a YAML file (bare specs or OverlayNetwork objects; several documents allowed)")
    .requiredOption("-f, --filename <file>", "YAML file, or - for stdin")
    .action(async (o: { filename: string }) => {
      // Validate every document before writing any, so a bad file changes nothing.
      const specs = readSpecFile(o.filename).map((doc, i) => {
        try {
          return validateNetworkSpec(doc);
        } catch (err) {
          throw new Error(`${o.filename}: document ${i + 1}${typeof doc.name === "string" ? ` (${doc.name})` : ""}: ${(err as Error).message}`);
        }
      });
      const seen = new Set<string>();
      for (const spec of specs) {
        if (seen.has(spec.name)) throw new Error(`${o.filename}: network "${spec.name}" appears more than once`);
        seen.add(spec.name);
      }
      await store(async (s) => {
        // Check the whole file against what is stored (and against itself) before writing any of it.
        const planned = new Map((await s.listNetworks()).map((n) => [n.name, n]));
        const stored = new Map(planned);
        for (const spec of specs) {
          try {
            checkNetworkConflicts(spec, [...planned.values()].filter((n) => n.name !== spec.name), stored.get(spec.name));
          } catch (err) {
            throw new Error(`${o.filename}: ${spec.name}: ${(err as Error).message}`);
          }
          planned.set(spec.name, spec);
        }
        for (const spec of specs) process.stdout.write(`network/${spec.name} ${await save(s, spec)}\n`);
      });
    });

  network
    .command("list")
    .description("list networks")
    .addOption(outputOption())
    .action(async (o: { output: string }) => {
      const nets = await store((s) => s.listNetworks());
      print(nets.sort((a, b) => a.name.localeCompare(b.name)) as unknown as Row[], networkColumns, o.output);
    });

  network
    .command("get <name>")
    .description("show one network (-o json: the object itself)")
    .addOption(outputOption())
    .action(async (name: string, o: { output: string }) => {
      const net = await store((s) => s.getNetwork(name));
      if (!net) throw new Error(`network "${name}" not found`);
      if (o.output === "json") process.stdout.write(JSON.stringify(net, null, 2) + "\n");
      else print([net as unknown as Row], networkColumns, o.output);
    });

  network
    .command("delete <name>")
    .description("delete a network (refused while nodes hold subnets of it, unless --force)")
    .option("--force", "also delete its leases; nodes lose their subnets")
    .action(async (name: string, o: { force?: boolean }) => {
      const found = await store((s) => s.deleteNetwork(name, { force: !!o.force }));
      if (!found) throw new Error(`network "${name}" not found`);
      process.stdout.write(`network/${name} deleted\n`);
    });

  program
    .command("lease")
    .description("subnet leases held by nodes")
    .command("list")
    .description("list leases")
    .option("--network <name>", "only this network")
    .addOption(outputOption())
    .action(async (o: { network?: string; output: string }) => {
      const leases = await store((s) => s.listLeases(o.network));
      leases.sort((a, b) => a.network.localeCompare(b.network) || a.node.localeCompare(b.node));
      print(leases as unknown as Row[], leaseColumns, o.output);
    });

  program
    .command("endpoint")
    .description("pod interfaces attached on nodes, as their agents reported them")
    .command("list")
    .description("list endpoints (-o json adds id and aliases)")
    .option("--network <name>", "only this network")
    .addOption(outputOption())
    .action(async (o: { network?: string; output: string }) => {
      const eps = await store((s) => s.listEndpoints(o.network));
      eps.sort((a, b) => a.network.localeCompare(b.network) || a.name.localeCompare(b.name) || a.node.localeCompare(b.node) || a.id.localeCompare(b.id));
      print(eps as unknown as Row[], endpointColumns, o.output);
    });

  const node = program.command("node").description("nodes known to the controller");

  node
    .command("list")
    .description("list nodes")
    .addOption(outputOption())
    .action(async (o: { output: string }) => {
      const nodes = await store((s) => s.listNodes());
      nodes.sort((a, b) => a.name.localeCompare(b.name));
      print(nodes as unknown as Row[], nodeColumns, o.output);
    });

  node
    .command("remove <name>")
    .description("remove a node: its subnets are released and every peer drops its entries")
    .action(async (name: string) => {
      const found = await store((s) => s.removeNode(name));
      if (!found) throw new Error(`node "${name}" not found`);
      process.stdout.write(`node/${name} removed\n`);
    });

  return program;
}
