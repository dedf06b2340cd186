// The node agent: Join stream to a controller, config kept in place with what
// changed, persisted in the state dir, and the reconcile loop that drives
// pkg/dataplane (whose types.ts is the one contract between the two).
export { Agent, DEFAULT_RESYNC_INTERVAL_MS, DEFAULT_STUCK_THRESHOLD_MS, type AgentOptions, type HostProbe, type TlsFiles } from "./agent.js";
export { ApplyLoop, type ApplyLoopOptions } from "./apply-loop.js";
export { cleanupNode, CNI_DATA_SUBDIR, type CleanupOptions } from "./cleanup.js";
export { CLIENT_CHANNEL_OPTIONS, ControllerConnection, type ConnectionOptions, type StreamInfo } from "./connection.js";
export { ConfigModel, toNetworkSpec, toNetworkSpecs, type NodeIdentity, type PendingChanges, type SkippedNetwork } from "./desired.js";
// agentMetrics (./metrics.js) is not re-exported: it loads prom-client, which the agent loads only after its Join.
export type { AgentMetrics } from "./metrics.js";
export { parseControllerAddresses, ReconnectPolicy, RECONNECT_BASE_MS, RECONNECT_CAP_MS, type Attempt } from "./reconnect.js";
export { configFromState, loadMacs, loadState, parseState, randomMac, removeState, saveMacsSync, saveState, serializeState, StateJournal, stateFromConfig, statePath, JOURNAL_FILE, MACS_FILE, STATE_FILE, type PersistedState } from "./state.js";
export { AGENT_VERSION } from "./version.js";
export { channelCredentials, type TokenAuth } from "./credentials.js";
