// Kubernetes mode: OverlayNetwork objects are the source of network specs
// (mirrored into etcd for agents), Node objects the source of node labels and
// of node existence. Every replica applies Node labels to its own agent
// streams; only the elected replica writes etcd mirrors, statuses and Node
// conditions.
import type { Logger } from "../log/index.js";
import { NotLeaderError, type Store } from "../store/index.js";
import { selectorMatches, type Model } from "./model.js";
import { immutableChanged, networkStatus, resolveNetworks, sameStatus, type NetworkObject, type NetworkStatus, type Usage, type Verdict } from "./resolve.js";
import type { KubeMetrics } from "./metrics.js";
import type { Sessions } from "./sessions.js";
import { checkNetworkConflicts } from "../spec/index.js";
import { DeposedError } from "./leader.js";

export interface KubeNode {
  name: string;
  labels: Record<string, string>;
  /** The Node already carries NetworkUnavailable=False set by Weft. */
  weftUp: boolean;
}

export interface Stoppable {
  stop(): void | Promise<void>;
}

/** What the controller needs from pkg/kube. Watches call back with the full current set after each change. */
export interface KubePort {
  watchNetworks(onList: (objects: NetworkObject[]) => void): Stoppable;
  watchNodes(onList: (nodes: KubeNode[]) => void): Stoppable;
  patchNetworkStatus(name: string, status: NetworkStatus): Promise<void>;
  setNodeNetworkAvailable(node: string): Promise<void>;
  /** Where objects the informers skipped as undecodable are reported, by kind (kube_network, kube_node). */
  onInvalid?(handler: (kind: string) => void): void;
}

export interface KubeModeDeps {
  kube: KubePort;
  store: Store;
  model: Model;
  /**
   * The leader lease to fence a leader-only write with; throws DeposedError
   * when this replica does not lead right now. Called immediately before every
   * write, so a replica deposed mid-pass writes nothing more.
   */
  leader: () => string;
  log: Logger;
  /** A Kubernetes object that did not decode (counted by kind: kube_network, kube_node). */
  onInvalid?: (kind: string) => void;
  /** Periodic full reconcile from the caches; default 5 min. */
  resyncMs?: number;
  metrics?: KubeMetrics;
}

export const DEFAULT_KUBE_RESYNC_MS = 5 * 60_000;

const RECONCILE_DELAY_MS = 100;
const RETRY_DELAY_MS = 2_000;

export class KubeMode {
  private objects?: NetworkObject[];
  private nodes?: Map<string, KubeNode>;
  private sessions?: Sessions;
  private watches: Stoppable[] = [];
  private timer?: NodeJS.Timeout;
  private resyncTimer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  /** Statuses written by this replica, so a stale informer copy does not cause a rewrite loop. */
  private written = new Map<string, { generation: number; status: NetworkStatus }>();

  constructor(private readonly deps: KubeModeDeps) {}

  start(sessions: Sessions): void {
    this.sessions = sessions;
    this.deps.kube.onInvalid?.((kind) => this.deps.onInvalid?.(kind));
    this.watches.push(
      this.deps.kube.watchNetworks((objects) => {
        this.objects = objects;
        this.schedule(0);
      }),
      this.deps.kube.watchNodes((nodes) => this.onNodes(nodes)),
    );
    // Repairs what no event reports, e.g. a status or Node condition someone else overwrote.
    this.resyncTimer = setInterval(() => {
      this.written.clear();
      this.schedule(0);
    }, this.deps.resyncMs ?? DEFAULT_KUBE_RESYNC_MS);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.resyncTimer);
    await Promise.all(this.watches.map((w) => w.stop()));
    await this.running;
  }

  /** Both lists have arrived: until then agents are refused and statuses are not written. */
  get synced(): boolean {
    return this.objects !== undefined && this.nodes !== undefined;
  }

  /** Sessions hook: a node may join only once its Node object is known; its labels come from there. */
  readonly nodeLabels = (node: string): Record<string, string> | string => {
    if (!this.nodes) return "waiting for the list of Kubernetes Nodes";
    const n = this.nodes.get(node);
    return n ? n.labels : `no Kubernetes Node named "${node}"`;
  };

  /** Something in etcd changed (leases, nodes): statuses and conditions may follow. */
  onModelChange(): void {
    this.schedule(RECONCILE_DELAY_MS);
  }

  /** Leadership changed: the new leader brings everything up to date. */
  onLeadership(): void {
    this.written.clear();
    this.schedule(0);
  }

  private onNodes(list: KubeNode[]): void {
    const before = this.nodes;
    this.nodes = new Map(list.map((n) => [n.name, n]));
    for (const n of list) {
      const old = before?.get(n.name);
      if (!old || JSON.stringify(old.labels) !== JSON.stringify(n.labels)) this.sessions?.relabel(n.name, n.labels);
    }
    for (const name of before?.keys() ?? []) {
      if (!this.nodes.has(name)) this.sessions?.disconnect(name, `Kubernetes Node "${name}" was deleted`);
    }
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, delayMs);
  }

  private async run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          if (this.leading()) await this.reconcile();
        } catch (err) {
          if (err instanceof DeposedError || err instanceof NotLeaderError) {
            // Not a failure: the new leader does the rest, and onLeadership() brings us back if we win again.
            this.deps.log.info("leadership lost during a Kubernetes reconcile pass; pass stopped");
            continue;
          }
          this.deps.metrics?.reconcileFailures.inc();
          this.deps.log.warn({ err: String(err) }, "kubernetes reconcile failed; retrying");
          this.schedule(RETRY_DELAY_MS);
        }
      } while (this.again && !this.stopped);
    })();
    await this.running;
    this.running = undefined;
  }

  private leading(): boolean {
    try {
      this.deps.leader();
      return true;
    } catch {
      return false;
    }
  }

  private async reconcile(): Promise<void> {
    if (this.objects) {
      const verdicts = resolveNetworks(this.objects, new Set(this.deps.model.networks.keys()));
      const served = [...verdicts.values()].filter((v) => v.spec).length;
      this.deps.metrics?.networks.set({ state: "served" }, served);
      this.deps.metrics?.networks.set({ state: "invalid" }, verdicts.size - served);
      await this.mirrorNetworks(verdicts);
      await this.writeStatuses(this.objects, verdicts);
    }
    if (this.nodes) await this.reconcileNodes(this.nodes);
  }

  /** etcd's networks become exactly the served OverlayNetworks. */
  private async mirrorNetworks(verdicts: Map<string, Verdict>): Promise<void> {
    const { store, model, log } = this.deps;
    const served = new Map([...verdicts].filter(([, v]) => v.spec).map(([name, v]) => [name, v.spec!]));
    // Removals first, so a network freed by a deletion can take over in the same pass.
    for (const [name, stored] of model.networks) {
      const want = served.get(name);
      if (!want || immutableChanged(stored, want)) {
        await store.deleteNetwork(name, { force: true, asLeader: this.deps.leader() });
        log.info({ network: name, reason: want ? "replaced" : "not served" }, "network removed from etcd");
      }
    }
    for (const [name, spec] of served) {
      const stored = model.networks.get(name);
      if (stored && !immutableChanged(stored, spec) && JSON.stringify(stored) === JSON.stringify(spec)) continue;
      await store.saveNetwork(spec, (s, others) => checkNetworkConflicts(s, others.filter((o) => o.name !== s.name)), { asLeader: this.deps.leader() });
      log.info({ network: name }, "network mirrored into etcd");
    }
  }

  private usage(name: string): Usage {
    const { model } = this.deps;
    const spec = model.networks.get(name);
    const nodes = [...(model.leases.get(name)?.values() ?? [])].map((l) => l.node);
    let waiting = 0;
    if (spec) {
      for (const n of model.nodes.values()) if (selectorMatches(spec.nodeSelector, n.labels) && !model.subnetOf(n.name, name)) waiting++;
    }
    return { allocated: nodes.length, nodes, waiting };
  }

  private async writeStatuses(objects: NetworkObject[], verdicts: Map<string, Verdict>): Promise<void> {
    const now = new Date().toISOString();
    for (const obj of objects) {
      const verdict = verdicts.get(obj.name)!;
      const mine = this.written.get(obj.name);
      const current = mine && mine.generation === obj.generation ? { ...obj, status: mine.status } : obj;
      const status = networkStatus(current, verdict, verdict.spec ? this.usage(obj.name) : undefined, now);
      if (sameStatus(current.status, status)) continue;
      this.deps.leader();
      await this.counted("network_status", this.deps.kube.patchNetworkStatus(obj.name, status));
      this.written.set(obj.name, { generation: obj.generation, status });
    }
    for (const name of this.written.keys()) if (!objects.some((o) => o.name === name)) this.written.delete(name);
  }

  private async counted(kind: string, write: Promise<void>): Promise<void> {
    try {
      await write;
      this.deps.metrics?.writes.inc({ kind, result: "ok" });
    } catch (err) {
      this.deps.metrics?.writes.inc({ kind, result: "error" });
      throw err;
    }
  }

  private async reconcileNodes(nodes: Map<string, KubeNode>): Promise<void> {
    const { store, model, log } = this.deps;
    for (const name of [...model.nodes.keys()]) {
      if (!nodes.has(name)) {
        await store.removeNode(name, { asLeader: this.deps.leader() });
        log.info({ node: name }, "Kubernetes Node deleted: its leases are released and peers drop it");
      }
    }
    for (const n of nodes.values()) {
      if (!n.weftUp && model.nodes.get(n.name)?.appliedAt) {
        this.deps.leader();
        await this.counted("node_condition", this.deps.kube.setNodeNetworkAvailable(n.name));
        n.weftUp = true;
        log.info({ node: n.name }, "Node condition NetworkUnavailable=False set");
      }
    }
  }
}
