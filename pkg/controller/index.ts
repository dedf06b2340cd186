// The controller: network validation, lease management, membership, per-node
// config, the gRPC Join server and the leader-only jobs.
export { startController, DEFAULT_LEASE_TTL_SECONDS, SERVER_CHANNEL_OPTIONS, type ControllerOptions, type RunningController, type TlsFiles } from "./controller.js";
export { Model, Change, effectiveMtu, selectorMatches, VXLAN_OVERHEAD } from "./model.js";
export { desiredHeaders, type NodeContext } from "./view.js";
export { Distributor, type Subscriber, type OutStream } from "./distributor.js";
export { NetworkFeed } from "./change-log.js";
export { joinRequestProblems, isValidNodeName } from "./join-request.js";
export { resolveNetworks, networkStatus, sameStatus, type NetworkObject, type NetworkStatus, type Condition, type Verdict, type Usage } from "./resolve.js";
export { KubeMode, DEFAULT_KUBE_RESYNC_MS, type KubePort, type KubeNode, type Stoppable } from "./kube-mode.js";
