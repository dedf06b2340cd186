// The node agent: Join stream to a controller, config cache persisted in the
// state dir, and the reconcile loop that drives pkg/dataplane.
export { Agent, DEFAULT_RESYNC_INTERVAL_MS, type AgentOptions, type HostProbe, type TlsFiles } from "./agent.js";
export { ApplyLoop, type ApplyItem, type ApplyLoopOptions } from "./apply-loop.js";
export { cleanupNode, CNI_DATA_SUBDIR, type CleanupOptions } from "./cleanup.js";
export { CLIENT_CHANNEL_OPTIONS, ControllerConnection, type ConnectionOptions, type StreamInfo } from "./connection.js";
export type { ApplyReason, ApplyReport, DataplanePort, NetworkDesired, NodeDesired, PeerSpec } from "./dataplane-port.js";
export { peerCounts, peerProblem, sameDesired, subnetsOf, toNetworkDesired, toNodeDesired, type Conversion, type NodeIdentity, type SkippedNetwork, type SkippedPeer } from "./desired.js";
export { agentMetrics, type AgentMetrics } from "./metrics.js";
export { parseControllerAddresses, ReconnectPolicy, RECONNECT_BASE_MS, RECONNECT_CAP_MS, type Attempt } from "./reconnect.js";
export { configFromState, loadState, parseState, removeState, saveState, serializeState, stateFromConfig, statePath, STATE_FILE, type PersistedState } from "./state.js";
export { AGENT_VERSION } from "./version.js";
export { channelCredentials, type TokenAuth } from "./credentials.js";
