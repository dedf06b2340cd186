// Reading back what the kernel holds for Weft, as JSON.
import { BRIDGE_PREFIX, isWeftLink, VXLAN_PREFIX, type KernelState, type LinkState } from "./plan.js";
import type { Runner } from "./exec.js";

interface IpLink {
  ifname: string;
  mtu: number;
  address?: string;
  flags?: string[];
  master?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: { id?: number; local?: string; link?: string; port?: number; learning?: boolean };
    info_slave_kind?: string;
    info_slave_data?: { learning?: boolean; neigh_suppress?: boolean };
  };
}
interface IpAddr {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}
interface BridgeFdb {
  mac: string;
  ifname?: string;
  dev?: string;
  dst?: string;
  /** Set on the bridge's entries for this port (`master`). */
  master?: string;
  state?: string;
}
interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  protocol?: string;
}

/**
 * Reads Weft's devices and only what hangs off them: two rounds of spawns,
 * each side by side. Per-device neighbour, FDB and route dumps, so the cost
 * does not grow with what other software put on the host (its routes, its
 * interfaces' neighbours, other bridges' FDBs).
 */
export async function readKernel(run: Runner, uplink: string): Promise<KernelState> {
  const [vxlans, bridges, uplinks] = await run.jsonBatch<IpLink & IpAddr>("ip", ["-d"], ["addr show type vxlan", "addr show type bridge", `link show dev ${uplink}`]).catch((err: Error) => {
    throw /Cannot find device|does not exist/.test(err.message) ? new Error(`uplink ${uplink} not found`) : err;
  });
  const links = [...(vxlans ?? []), ...(bridges ?? []), ...(uplinks ?? [])];
  const devs = (vxlans ?? []).map((l) => l.ifname).filter((n) => n.startsWith(VXLAN_PREFIX));
  // Bridges carry switched networks' endpoint neighbours.
  const brs = (bridges ?? []).map((l) => l.ifname).filter((n) => n.startsWith(BRIDGE_PREFIX));
  const [perDev, fdbs] = await Promise.all([
    run.jsonBatch<unknown>("ip", [], [...devs.flatMap((d) => [`neigh show dev ${d} nud permanent`, `route show dev ${d}`]), ...brs.map((b) => `neigh show dev ${b} nud permanent`)]),
    run.jsonBatch<BridgeFdb>("bridge", [], devs.map((d) => `fdb show dev ${d}`)),
  ]);
  const neighs: IpNeigh[] = [];
  const routes: IpRoute[] = [];
  devs.forEach((dev, i) => {
    // Per-device dumps leave `dev` out of each entry: put it back.
    for (const n of (perDev[2 * i] ?? []) as IpNeigh[]) neighs.push({ ...n, dev });
    for (const r of (perDev[2 * i + 1] ?? []) as IpRoute[]) routes.push({ ...r, dev });
  });
  brs.forEach((dev, i) => {
    for (const n of (perDev[2 * devs.length + i] ?? []) as IpNeigh[]) neighs.push({ ...n, dev });
  });
  const fdbFlat = devs.flatMap((dev, i) => (fdbs[i] ?? []).map((f) => ({ ...f, ifname: f.ifname ?? dev })));
  return parseKernel(links, links, neighs, fdbFlat, routes);
}

/** Pure: the JSON of `ip`/`bridge` to a KernelState of Weft's objects only. */
export function parseKernel(links: IpLink[], addrs: IpAddr[], neighs: IpNeigh[], fdbs: BridgeFdb[], routes: IpRoute[]): KernelState {
  const state: KernelState = { links: new Map(), neigh: new Map(), fdb: new Map(), master: new Map(), routes: new Map(), mtus: new Map(links.map((l) => [l.ifname, l.mtu])) };
  const addrsOf = new Map(addrs.map((a) => [a.ifname, (a.addr_info ?? []).filter((i) => i.family === "inet").map((i) => `${i.local}/${i.prefixlen}`)]));
  for (const l of links) {
    if (!isWeftLink(l.ifname)) continue;
    const info = l.linkinfo?.info_data;
    const kind = l.linkinfo?.info_kind ?? "";
    const link: LinkState = {
      name: l.ifname,
      kind,
      mtu: l.mtu,
      mac: (l.address ?? "").toLowerCase(),
      up: (l.flags ?? []).includes("UP"),
      addrs: addrsOf.get(l.ifname) ?? [],
    };
    if (kind === "vxlan" && info) link.vxlan = { id: info.id ?? 0, local: info.local ?? "", link: info.link ?? "", port: info.port ?? 0, learning: info.learning ?? true };
    if (l.master) link.master = l.master;
    const port = l.linkinfo?.info_slave_kind === "bridge" ? l.linkinfo.info_slave_data : undefined;
    if (port) link.port = { learning: port.learning ?? true, neighSuppress: port.neigh_suppress ?? false };
    state.links.set(l.ifname, link);
  }
  const ours = (dev: string | undefined): dev is string => !!dev && dev.startsWith(VXLAN_PREFIX) && state.links.has(dev);
  const ourBridge = (dev: string | undefined): dev is string => !!dev && dev.startsWith(BRIDGE_PREFIX) && state.links.has(dev);
  for (const n of neighs) {
    if (!(ours(n.dev) || ourBridge(n.dev)) || !n.lladdr) continue;
    let m = state.neigh.get(n.dev);
    if (!m) state.neigh.set(n.dev, (m = new Map()));
    m.set(n.dst, n.lladdr.toLowerCase());
  }
  for (const f of fdbs) {
    const dev = f.ifname ?? f.dev;
    if (!ours(dev)) continue;
    // The bridge's static entries for this port are Weft's (the port never learns); its permanent one is the port's own MAC.
    if (f.master && !f.dst && f.state === "static") {
      let m = state.master.get(dev);
      if (!m) state.master.set(dev, (m = new Set()));
      m.add(f.mac.toLowerCase());
      continue;
    }
    if (!f.dst) continue;
    let m = state.fdb.get(dev);
    if (!m) state.fdb.set(dev, (m = new Map()));
    const mac = f.mac.toLowerCase();
    m.set(mac, [...(m.get(mac) ?? []), f.dst]);
  }
  for (const r of routes) {
    if (!ours(r.dev) || !r.gateway || r.protocol === "kernel") continue;
    let m = state.routes.get(r.dev);
    if (!m) state.routes.set(r.dev, (m = new Map()));
    m.set(r.dst, r.gateway);
  }
  return state;
}
