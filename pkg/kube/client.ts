// Weft's access to the Kubernetes API: informers for OverlayNetworks and
// Nodes, the OverlayNetwork status writer and the Node condition writer.
// Nothing here knows etcd or the controller's rules; the controller takes a
// KubeClient as its KubePort.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Logger } from "../log/index.js";
import { silentLogger } from "../log/index.js";
import { toKubeNode, toNetworkObject, type NodeLike } from "./convert.js";
import { Reflector, type WatchFn } from "./reflector.js";
import {
  GROUP,
  NETWORK_UNAVAILABLE,
  PLURAL,
  VERSION,
  WEFT_UP_REASON,
  type KubeNode,
  type NetworkObject,
  type OverlayNetwork,
  type OverlayNetworkStatus,
  type Stoppable,
} from "./types.js";

export interface KubeConfigOptions {
  /** A kubeconfig file; without it, the in-cluster service account (or, outside a pod, $KUBECONFIG / ~/.kube/config). */
  kubeconfig?: string;
}

export function loadKubeConfig(opts: KubeConfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (err) {
      throw new Error(`--kubeconfig: cannot load ${opts.kubeconfig}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  } else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else if (process.env.KUBECONFIG || fs.existsSync(path.join(os.homedir(), ".kube", "config"))) kc.loadFromDefault();
  // client-node would otherwise fall back to http://localhost:8080 and retry it forever.
  else throw new Error("--kube: not in a pod (KUBERNETES_SERVICE_HOST is unset) and no $KUBECONFIG or ~/.kube/config; pass --kubeconfig");
  if (!kc.getCurrentCluster()) throw new Error(`no Kubernetes cluster in ${opts.kubeconfig ?? "the default kubeconfig"}`);
  return kc;
}

export interface InformerOptions {
  log?: Logger;
  /** Every failed list or watch (e.g. 403 when RBAC is missing); the informer keeps retrying. */
  onError?(err: unknown): void;
  /** An object that did not decode and was skipped; `what` is the resource ("overlaynetworks", "nodes"). */
  onInvalid?(what: string, err: unknown): void;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  watchTimeoutSeconds?: number;
  /** Replaces client-node's watch (tests). */
  watch?: WatchFn;
}

const LIST_PAGE = 500;

/** The part of a Reflector's options both informers take from InformerOptions as they are. */
function reflectorTuning(opts: InformerOptions) {
  const { onError, onInvalid, watch, backoffBaseMs, backoffCapMs, watchTimeoutSeconds } = opts;
  return { log: opts.log ?? silentLogger(), onError, onInvalid, watch, backoffBaseMs, backoffCapMs, watchTimeoutSeconds };
}

export interface NetworkWatchHandlers {
  /** The whole current set, after the first list and after each change. */
  onNetworks(list: NetworkObject[]): void;
}

/** Informer for OverlayNetworks (cluster-scoped). */
export function watchOverlayNetworks(kc: KubeConfig, handlers: NetworkWatchHandlers, opts: InformerOptions = {}): Reflector<OverlayNetwork, NetworkObject> {
  const api = kc.makeApiClient(CustomObjectsApi);
  return new Reflector<OverlayNetwork, NetworkObject>({
    what: PLURAL,
    kc,
    listPage: async (cont) => {
      const res = (await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, limit: LIST_PAGE, _continue: cont })) as {
        items?: OverlayNetwork[];
        metadata?: { resourceVersion?: string; continue?: string };
      };
      return { items: res.items ?? [], resourceVersion: res.metadata?.resourceVersion ?? "", continue: res.metadata?.continue };
    },
    watchPath: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
    key: (o) => o.metadata.name,
    project: toNetworkObject,
    onChange: (items) => handlers.onNetworks(items),
    ...reflectorTuning(opts),
  }).start();
}

export interface NodeWatchHandlers {
  /** The whole current set (name, labels, whether Weft marked it up), after the first list and after each change that matters. */
  onNodes(list: KubeNode[]): void;
  /** A Node left (deleted, or gone from a re-list). */
  onNodeDeleted?(name: string): void;
}

/** Informer for Nodes; heartbeats and other status churn that Weft does not use are not reported. */
export function watchNodes(kc: KubeConfig, handlers: NodeWatchHandlers, opts: InformerOptions = {}): Reflector<NodeLike, KubeNode> {
  const api = kc.makeApiClient(CoreV1Api);
  return new Reflector<NodeLike, KubeNode>({
    what: "nodes",
    kc,
    listPage: async (cont) => {
      const res = await api.listNode({ limit: LIST_PAGE, _continue: cont });
      return { items: res.items, resourceVersion: res.metadata?.resourceVersion ?? "", continue: res.metadata?._continue };
    },
    watchPath: "/api/v1/nodes",
    key: (n) => n.metadata?.name ?? "",
    project: toKubeNode,
    onChange: (items, deleted) => {
      for (const name of deleted) handlers.onNodeDeleted?.(name);
      handlers.onNodes(items);
    },
    ...reflectorTuning(opts),
  }).start();
}

/** Writes an OverlayNetwork's whole status through the status subresource (JSON merge patch). */
export async function patchOverlayNetworkStatus(kc: KubeConfig, name: string, status: OverlayNetworkStatus): Promise<void> {
  const api = kc.makeApiClient(CustomObjectsApi);
  await api.patchClusterCustomObjectStatus(
    { group: GROUP, version: VERSION, plural: PLURAL, name, body: { status }, fieldManager: "weft-controller" },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

/**
 * Sets the Node condition NetworkUnavailable=False (reason WeftIsUp) through
 * nodes/status. A strategic merge patch merges conditions by type, so the
 * kubelet's own conditions stay as they are.
 */
export async function setNodeNetworkAvailable(kc: KubeConfig, nodeName: string, now = new Date()): Promise<void> {
  const api = kc.makeApiClient(CoreV1Api);
  const t = now.toISOString().replace(/\.\d+Z$/, "Z");
  const condition = {
    type: NETWORK_UNAVAILABLE,
    status: "False",
    reason: WEFT_UP_REASON,
    message: "Weft agent has programmed this node's overlay networks",
    lastTransitionTime: t,
    lastHeartbeatTime: t,
  };
  await api.patchNodeStatus(
    { name: nodeName, body: { status: { conditions: [condition] } }, fieldManager: "weft-controller" },
    setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch),
  );
}

/**
 * Everything the controller needs from Kubernetes, on one KubeConfig
 * (pkg/controller's KubePort).
 */
export class KubeClient {
  private invalid?: (kind: string) => void;

  constructor(
    readonly kc: KubeConfig,
    private readonly given: InformerOptions = {},
  ) {}

  private get opts(): InformerOptions {
    return {
      ...this.given,
      onInvalid: (what, err) => {
        this.given.onInvalid?.(what, err);
        this.invalid?.(what === PLURAL ? "kube_network" : "kube_node");
      },
    };
  }

  /** Where skipped objects are counted (the controller's weft_controller_invalid_records). */
  onInvalid(handler: (kind: string) => void): void {
    this.invalid = handler;
  }

  static fromOptions(config: KubeConfigOptions, opts: InformerOptions = {}): KubeClient {
    return new KubeClient(loadKubeConfig(config), opts);
  }

  watchNetworks(onList: (objects: NetworkObject[]) => void): Stoppable {
    return watchOverlayNetworks(this.kc, { onNetworks: onList }, this.opts);
  }

  watchNodes(onList: (nodes: KubeNode[]) => void, onDeleted?: (name: string) => void): Stoppable {
    return watchNodes(this.kc, { onNodes: onList, onNodeDeleted: onDeleted }, this.opts);
  }

  patchNetworkStatus(name: string, status: OverlayNetworkStatus): Promise<void> {
    return patchOverlayNetworkStatus(this.kc, name, status);
  }

  setNodeNetworkAvailable(node: string): Promise<void> {
    return setNodeNetworkAvailable(this.kc, node);
  }
}
