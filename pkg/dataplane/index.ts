// The Linux dataplane: VXLAN device, bridge, per-peer neighbour/FDB/route
// entries, NAT and filter chains, and the CNI conflist. Holds the desired
// state and the kernel's side by side and writes only what changed (Felix's
// DeltaTracker shape). Knows nothing of gRPC or etcd.
export { Dataplane, CommandError, type DataplaneOptions } from "./dataplane.js";
export type { ApplyReason, ApplyReport, DataplanePort, EndpointProblem, EndpointSpec, NetworkDesired, NetworkSpec, NodeDesired, NodeSpec, PeerProblem, PeerSpec } from "./types.js";
export { PeerTable, validatePeer, emptyKernelPeers, type KernelPeers, type PeerPlan, type WantedPeer } from "./peers.js";
export { SwitchedTable, validateEndpoint, emptyKernelSwitched, FLOOD_MAC, type EntryPlan, type KernelSwitched, type WantedEndpoint } from "./switched.js";
export {
  planChanges,
  planDevices,
  planSize,
  kernelSwitchedFor,
  switchedTableFor,
  mergePlans,
  partialPeerCleanup,
  entryCounts,
  emptyKernelState,
  effectiveMtu,
  vxlanName,
  bridgeName,
  isWeftLink,
  VXLAN_OVERHEAD,
  type KernelState,
  type LinkState,
  type Plan,
} from "./plan.js";
export { parseKernel, readKernel } from "./read.js";
export { renderRules, parseSave, rulesMatch, restoreScript, removalScript, readOwnRules, NAT_CHAIN, FORWARD_CHAIN, ISOLATION_CHAIN } from "./iptables.js";
export { chooseBackend, detectIptablesBackend, type BackendDetection, type IptablesBackendChoice } from "./iptables-backend.js";
export { Runner, DEFAULT_COMMAND_TIMEOUT_MS, type IptablesBackend, type RunnerOptions } from "./exec.js";
