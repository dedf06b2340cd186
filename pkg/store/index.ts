// Everything that knows etcd. Nothing here knows the kernel or gRPC.
export * from "./types.js";
export { Keys, DEFAULT_PREFIX, subnetSegment, segmentSubnet, type ParsedKey } from "./keys.js";
export {
  Store,
  PoolExhaustedError,
  NodeGoneError,
  ConflictError,
  type StoreOptions,
  type Versioned,
  type StoreEvent,
  type Snapshot,
  type NodeRegistration,
  type StoreWatch,
} from "./store.js";
export { loadEtcdTls, type EtcdTls, type EtcdTlsFiles } from "./tls.js";
export { etcdFlagOptions, etcdConnection, type EtcdFlags } from "./flags.js";
export {
  decodeRecord,
  checkRecord,
  decodeNetwork,
  decodeNode,
  decodeLease,
  MAX_RECORD_BYTES,
  type RecordKind,
  type RecordEvent,
  type RecordResult,
  type DecodedRecord,
  type InvalidRecord,
  type Decoded,
} from "./records.js";
