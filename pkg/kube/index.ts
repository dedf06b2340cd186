// Kubernetes access for Weft: the OverlayNetwork CRD's types, informers for
// OverlayNetworks and Nodes, status and Node-condition writers, and the
// conversion to NetworkSpec. No etcd, no controller logic.
export * from "./types.js";
export { overlayNetworkToSpec, toNetworkObject, toKubeNode, type NodeLike } from "./convert.js";
export { Reflector, type ReflectorOptions, type ListPage, type WatchFn } from "./reflector.js";
export {
  KubeClient,
  loadKubeConfig,
  watchOverlayNetworks,
  watchNodes,
  patchOverlayNetworkStatus,
  setNodeNetworkAvailable,
  type KubeConfigOptions,
  type InformerOptions,
  type NetworkWatchHandlers,
  type NodeWatchHandlers,
} from "./client.js";
export { AgentTokenAuthenticator, tokenReviewer, NODE_NAME_EXTRA, type TokenReviewFn, type TokenReviewResult, type AgentTokenOptions } from "./token-review.js";
