// The Linux dataplane: VXLAN device, bridge, per-peer neighbour/FDB/route
// entries, NAT and filter chains, and the CNI conflist, programmed in batches
// from a diff against what the kernel holds. Knows nothing of gRPC or etcd.
export { Dataplane, CommandError, type DataplaneOptions } from "./dataplane.js";
export type { ApplyReason, ApplyReport, NetworkDesired, NodeDesired, PeerSpec } from "./types.js";
export {
  planChanges,
  planSize,
  partialPeerCleanup,
  projectState,
  entryCounts,
  desiredCounts,
  emptyKernelState,
  wantedPeers,
  wantedByNetwork,
  effectiveMtu,
  vxlanName,
  bridgeName,
  isWeftLink,
  type KernelState,
  type LinkState,
  type Plan,
} from "./plan.js";
export { parseKernel, readKernel } from "./read.js";
export { renderRules, parseSave, rulesMatch, restoreScript, removalScript, NAT_CHAIN, FORWARD_CHAIN, ISOLATION_CHAIN } from "./iptables.js";
export { Runner } from "./exec.js";
