// The OverlayNetwork custom resource (deploy/crd/overlaynetwork.yaml) as
// TypeScript types. Kept by hand next to the CRD: the test suite applies the
// CRD and round-trips objects through the real API server.
import type { NetworkMode } from "../store/types.js";

export const GROUP = "weft.dev";
export const VERSION = "v1alpha1";
export const PLURAL = "overlaynetworks";
export const KIND = "OverlayNetwork";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** As written by users; the API server fills in the schema's defaults. */
export interface OverlayNetworkSpec {
  cidr: string;
  vni: number;
  nodePrefixLength: number;
  mode?: NetworkMode;
  mtu?: number;
  port?: number;
  natOutgoing?: boolean;
  isolated?: boolean;
  nodeSelector?: Record<string, string>;
  default?: boolean;
  flood?: boolean;
  dns?: boolean;
}

export type ConditionType = "Ready" | "Invalid" | "PoolExhausted";

export interface OverlayNetworkCondition {
  type: ConditionType;
  /** Weft writes only True and False (the CRD also admits Unknown for other writers). */
  status: "True" | "False";
  reason: string;
  message: string;
  /** RFC 3339. */
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface OverlayNetworkStatus {
  observedGeneration?: number;
  conditions?: OverlayNetworkCondition[];
  allocated?: number;
  capacity?: number;
  nodes?: string[];
}

export interface ObjectMeta {
  name: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  /** RFC 3339 (raw JSON: custom objects are not deserialised into Dates). */
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface OverlayNetwork {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: OverlayNetworkSpec;
  status?: OverlayNetworkStatus;
}

/** What the controller needs of an OverlayNetwork (matches pkg/controller's NetworkObject). */
export interface NetworkObject {
  name: string;
  generation: number;
  creationTimestamp: string;
  /** Unvalidated: the controller validates it and reports problems in status. */
  spec: unknown;
  status?: OverlayNetworkStatus;
}

/** What the controller needs of a Node (matches pkg/controller's KubeNode). */
export interface KubeNode {
  name: string;
  labels: Record<string, string>;
  /** The Node carries NetworkUnavailable=False with Weft's reason. */
  weftUp: boolean;
}

/** Node condition Weft writes once a node's agent has applied its config. */
export const NETWORK_UNAVAILABLE = "NetworkUnavailable";
export const WEFT_UP_REASON = "WeftIsUp";

export interface Stoppable {
  stop(): Promise<void>;
}
