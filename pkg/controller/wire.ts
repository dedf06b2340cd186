// Pieces of a ConfigUpdate encoded once and assembled by concatenation.
//
// Protobuf lets a message be the concatenation of its fields in any order, and
// a repeated field be the concatenation of its elements. So a peer entry is
// encoded once when it changes (as a NetworkConfig.peers element and as a
// ConfigUpdate.peer_updates element) and every agent's snapshot or delta is
// built by copying those bytes, never by encoding the peer again. Pure.
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { EndpointUpdate, NetworkConfig, Peer, PeerUpdate, type Endpoint } from "../api/index.js";

// Tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
const TAG_REVISION = (1 << 3) | 0; // ConfigUpdate.revision
const TAG_SNAPSHOT = (2 << 3) | 0; // ConfigUpdate.snapshot
const TAG_NETWORKS = (3 << 3) | 2; // ConfigUpdate.networks
const TAG_REMOVED = (4 << 3) | 2; // ConfigUpdate.removed_networks
const TAG_PEER_UPDATES = (5 << 3) | 2; // ConfigUpdate.peer_updates
const TAG_ENDPOINT_UPDATES = (6 << 3) | 2; // ConfigUpdate.endpoint_updates
const TAG_PEERS = (12 << 3) | 2; // NetworkConfig.peers

function lengthDelimited(tag: number, body: Uint8Array): Buffer {
  const w = new BinaryWriter();
  w.uint32(tag).uint32(body.length);
  const head = w.finish();
  const out = Buffer.allocUnsafe(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

/** One element of NetworkConfig.peers. */
export function encodePeerElement(p: Peer): Buffer {
  return lengthDelimited(TAG_PEERS, Peer.encode(p).finish());
}

/** One element of ConfigUpdate.peer_updates. */
export function encodePeerUpdateElement(network: string, peer: Peer, removed: boolean): Buffer {
  return lengthDelimited(TAG_PEER_UPDATES, PeerUpdate.encode({ network, peer, removed }).finish());
}

/** One element of ConfigUpdate.endpoint_updates (snapshots carry the same elements, with removed unset). */
export function encodeEndpointUpdateElement(network: string, endpoint: Endpoint, removed: boolean): Buffer {
  return lengthDelimited(TAG_ENDPOINT_UPDATES, EndpointUpdate.encode({ network, endpoint, removed }).finish());
}

/** ConfigUpdate.revision and .snapshot. */
export function encodeUpdateHead(revision: number, snapshot: boolean): Buffer {
  const w = new BinaryWriter();
  if (revision !== 0) w.uint32(TAG_REVISION).int64(revision);
  if (snapshot) w.uint32(TAG_SNAPSHOT).bool(true);
  return Buffer.from(w.finish());
}

export function encodeRemovedNetwork(name: string): Buffer {
  const w = new BinaryWriter();
  w.uint32(TAG_REMOVED).string(name);
  return Buffer.from(w.finish());
}

/**
 * One ConfigUpdate.networks element: the node's own header (encoded here,
 * small) followed by peer bytes encoded elsewhere. Returns the pieces to
 * concatenate, without copying the peer bytes.
 */
export function networkElementPieces(header: NetworkConfig, peerPieces: Buffer[]): Buffer[] {
  const h = NetworkConfig.encode({ ...header, peers: [] }).finish();
  let len = h.length;
  for (const p of peerPieces) len += p.length;
  const w = new BinaryWriter();
  w.uint32(TAG_NETWORKS).uint32(len);
  return [Buffer.from(w.finish()), Buffer.from(h), ...peerPieces];
}
