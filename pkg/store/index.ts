// Everything that knows etcd. Nothing here knows the kernel or gRPC.
export * from "./types.js";
export { Keys, DEFAULT_PREFIX, subnetSegment, segmentSubnet, endpointIdSegment, segmentEndpointId, type ParsedKey } from "./keys.js";
export { Store } from "./store.js";
export { PoolExhaustedError, NodeGoneError, ConflictError, InvalidRecordError, NotLeaderError } from "./errors.js";
export type { StoreOptions, Versioned } from "./etcd.js";
export type { NodeRegistration, NodeState, NodeWrite, CommitResult } from "./nodes.js";
export type { EndpointWrite } from "./endpoints.js";
export type { StoreEvent, Snapshot, StoreWatch } from "./watch.js";
export { loadEtcdTls, type EtcdTls, type EtcdTlsFiles } from "./tls.js";
export { etcdFlagOptions, etcdConnection, type EtcdFlags } from "./flags.js";
export {
  decodeRecord,
  checkRecord,
  decodeNetwork,
  decodeNode,
  decodeLease,
  decodeEndpoint,
  MAX_RECORD_BYTES,
  type RecordKind,
  type RecordEvent,
  type RecordResult,
  type DecodedRecord,
  type InvalidRecord,
  type Decoded,
} from "./records.js";
