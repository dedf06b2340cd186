// The gRPC API between agent and controller, generated from proto/weft/v1 by
// hack/gen-proto.sh. Everything else imports it from here, never from gen/.
export * from "./gen/weft/v1/weft.js";
export { applyConfigUpdate, emptyDesired, endpointKey, type DesiredConfig, type DesiredNetwork } from "./desired.js";
