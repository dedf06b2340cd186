// Network spec validation and defaults: pure, shared by weftctl, the
// controller (etcd writes and Kubernetes mode) and pkg/kube's conversions.
export { validateNetworkSpec, checkNetworkConflicts, ValidationError, IMMUTABLE_FIELDS, NETWORK_DEFAULTS, MAX_VNI, MAX_NODE_PREFIX_LENGTH, MIN_MTU, MAX_MTU, type Problem } from "./validation.js";
