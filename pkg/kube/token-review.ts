// Node identity in Kubernetes mode without any node holding a key: the agent
// presents its projected ServiceAccount token (own audience, short expiry,
// bound to its pod and so to its node), and the controller asks the API
// server's TokenReview who it is. The token must be authenticated for our
// audience, belong to the agent's ServiceAccount, and carry the node it is
// bound to (`authentication.kubernetes.io/node-name` in the review's extra),
// which must be the node the agent joins as.
import crypto from "node:crypto";
import { AuthenticationV1Api, type KubeConfig, type V1TokenReview } from "@kubernetes/client-node";

export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

export interface TokenReviewResult {
  authenticated: boolean;
  username?: string;
  audiences?: string[];
  extra?: Record<string, string[]>;
  error?: string;
}

/** Sends one TokenReview; a port so the decision logic is testable without an API server. */
export type TokenReviewFn = (token: string, audience: string) => Promise<TokenReviewResult>;

export function tokenReviewer(kc: KubeConfig): TokenReviewFn {
  const api = kc.makeApiClient(AuthenticationV1Api);
  return async (token, audience) => {
    const res: V1TokenReview = await api.createTokenReview({ body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token, audiences: [audience] } } });
    const s = res.status ?? {};
    return { authenticated: s.authenticated === true, username: s.user?.username, audiences: s.audiences, extra: s.user?.extra, error: s.error };
  };
}

export interface AgentTokenOptions {
  review: TokenReviewFn;
  /** The audience agents' tokens are issued for (the projected volume's `audience`). */
  audience: string;
  /** `<namespace>/<name>` of the agents' ServiceAccount. */
  serviceAccount: string;
  /** How long a positive answer is reused for the same token and node (bounded by the cache size). */
  cacheTtlMs?: number;
  cacheSize?: number;
  now?: () => number;
}

/**
 * Decides whether a bearer token may join as `node`: undefined when it may,
 * else the reason (sent to the agent as PERMISSION_DENIED). Positive answers
 * are cached briefly, so a reconnect storm of 5000 agents costs the API
 * server one review per agent, not one per attempt.
 */
export class AgentTokenAuthenticator {
  private readonly cache = new Map<string, number>();
  private readonly username: string;

  constructor(private readonly opts: AgentTokenOptions) {
    const [ns, name, ...rest] = opts.serviceAccount.split("/");
    if (!ns || !name || rest.length) throw new Error(`--agent-service-account: "${opts.serviceAccount}" is not <namespace>/<name>`);
    this.username = `system:serviceaccount:${ns}:${name}`;
  }

  async check(authorization: string | undefined, node: string): Promise<string | undefined> {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!m) return "no ServiceAccount token (authorization: Bearer …) on the Join stream";
    const token = m[1];
    const now = (this.opts.now ?? Date.now)();
    const key = crypto.createHash("sha256").update(token).update("\0").update(node).digest("base64");
    const until = this.cache.get(key);
    if (until !== undefined && until > now) return undefined;
    if (until !== undefined) this.cache.delete(key);
    let r: TokenReviewResult;
    try {
      r = await this.opts.review(token, this.opts.audience);
    } catch (err) {
      return `TokenReview failed: ${(err as Error).message}`;
    }
    const denied = this.decide(r, node);
    if (!denied) {
      if (this.cache.size >= (this.opts.cacheSize ?? 10_000)) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, now + (this.opts.cacheTtlMs ?? 60_000));
    }
    return denied;
  }

  /** The rules, on a review's result. */
  decide(r: TokenReviewResult, node: string): string | undefined {
    if (!r.authenticated) return `token not authenticated${r.error ? `: ${r.error}` : ""}`;
    if (r.audiences && !r.audiences.includes(this.opts.audience)) return `token is not for audience "${this.opts.audience}"`;
    if (r.username !== this.username) return `token belongs to "${r.username}", not the agents' ServiceAccount "${this.username}"`;
    const bound = r.extra?.[NODE_NAME_EXTRA]?.[0];
    if (!bound) return "token is not bound to a node (no node-name claim: not a pod's projected token)";
    if (bound !== node) return `token is bound to node "${bound}", not "${node}"`;
    return undefined;
  }
}
