// The store's public face: one object callers hold, each method delegating to
// the file that does that job (etcd.ts plumbing, networks.ts, nodes.ts,
// leases.ts, leader.ts, watch.ts).
import type { Etcd3 } from "etcd3";
import { EtcdKv, type StoreOptions, type Versioned } from "./etcd.js";
import type { Keys } from "./keys.js";
import * as endpoints from "./endpoints.js";
import * as leader from "./leader.js";
import * as leases from "./leases.js";
import * as networks from "./networks.js";
import * as nodes from "./nodes.js";
import * as view from "./watch.js";
import { CommitBatcher } from "./commit-batch.js";
import type { CommitResult, NodeState, NodeWrite } from "./nodes.js";
import type { Snapshot, StoreEvent, StoreWatch } from "./watch.js";
import type { EndpointWrite } from "./endpoints.js";
import type { EndpointRecord, LeaseRecord, NetworkSpec, NodeRecord } from "./types.js";

/**
 * Everything that knows etcd: keys, serialisation, transactions, watches.
 * Every write that could race is a transaction comparing a revision, so two
 * controller replicas (or weftctl and a controller) never overwrite each other.
 */
export class Store {
  readonly etcd: EtcdKv;
  private readonly commits: CommitBatcher;

  private constructor(opts: StoreOptions) {
    this.etcd = new EtcdKv(opts);
    this.commits = new CommitBatcher(this.etcd);
  }

  static connect(opts: StoreOptions): Store {
    if (opts.endpoints.length === 0) throw new Error("no etcd endpoints given");
    return new Store(opts);
  }

  get keys(): Keys {
    return this.etcd.keys;
  }
  get client(): Etcd3 {
    return this.etcd.client;
  }

  async close(): Promise<void> {
    this.etcd.close();
  }

  // ---- networks
  listNetworks(): Promise<NetworkSpec[]> {
    return networks.listNetworks(this.etcd);
  }
  getNetwork(name: string): Promise<NetworkSpec | undefined> {
    return networks.getNetwork(this.etcd, name);
  }
  /** `asLeader`: commit only while the leader key carries this lease (else NotLeaderError). */
  saveNetwork(spec: NetworkSpec, check: (spec: NetworkSpec, others: NetworkSpec[], existing: NetworkSpec | undefined) => void, opts: { asLeader?: string } = {}): Promise<void> {
    return networks.saveNetwork(this.etcd, spec, check, opts);
  }
  deleteNetwork(name: string, opts: { force?: boolean; asLeader?: string } = {}): Promise<boolean> {
    return networks.deleteNetwork(this.etcd, name, opts);
  }

  // ---- nodes
  listNodes(): Promise<NodeRecord[]> {
    return nodes.listNodes(this.etcd);
  }
  getNode(name: string): Promise<Versioned<NodeRecord> | undefined> {
    return nodes.getNode(this.etcd, name);
  }
  removeNode(name: string, opts: { asLeader?: string } = {}): Promise<boolean> {
    return nodes.removeNode(this.etcd, name, opts);
  }
  markNodesApplied(names: string[]): Promise<void> {
    return nodes.markNodesApplied(this.etcd, names);
  }
  readNodeState(name: string): Promise<NodeState> {
    return nodes.readNodeState(this.etcd, name);
  }
  /** Registrations committed while others are in flight share one transaction (commit-batch.ts). */
  commitNode(state: NodeState, write: NodeWrite): Promise<CommitResult> {
    return this.commits.commit(state, write);
  }

  // ---- subnet leases
  listLeases(network?: string): Promise<LeaseRecord[]> {
    return leases.listLeases(this.etcd, network);
  }

  // ---- endpoints
  writeEndpoints(w: EndpointWrite): Promise<number> {
    return endpoints.writeEndpoints(this.etcd, w);
  }
  listEndpoints(network?: string): Promise<EndpointRecord[]> {
    return endpoints.listEndpoints(this.etcd, network);
  }

  // ---- etcd leases
  grantLease(ttlSeconds: number): Promise<string> {
    return this.etcd.grantLease(ttlSeconds);
  }
  keepAlive(leaseId: string): Promise<number> {
    return this.etcd.keepAlive(leaseId);
  }
  revokeLease(leaseId: string): Promise<void> {
    return this.etcd.revokeLease(leaseId);
  }

  // ---- view
  snapshot(): Promise<Snapshot> {
    return view.snapshot(this.etcd);
  }
  watch(fromRevision: number, onEvents: (events: StoreEvent[], revision: number) => void, onLost: (err: Error) => void): Promise<StoreWatch> {
    return view.watch(this.etcd, fromRevision, onEvents, onLost);
  }

  // ---- leadership
  tryLead(identity: string, leaseId: string): Promise<boolean> {
    return leader.tryLead(this.etcd, identity, leaseId);
  }
  resign(leaseId: string): Promise<void> {
    return leader.resign(this.etcd, leaseId);
  }
  deleteAsLeader(leaseId: string, victims: { key: string; modRevision: number }[]): Promise<string[]> {
    return leader.deleteAsLeader(this.etcd, leaseId, victims);
  }
}
