// The rules by which the controller accepts an agent's ServiceAccount token
// (Kubernetes mode), on TokenReview answers given here; the real API server's
// answers are exercised by test/kube-nodes.
import assert from "node:assert/strict";
import { AgentTokenAuthenticator, NODE_NAME_EXTRA, type TokenReviewResult } from "../../pkg/kube/index.js";

const AGENT = "system:serviceaccount:weft-system:weft-agent";
const ok = (node: string, over: Partial<TokenReviewResult> = {}): TokenReviewResult => ({ authenticated: true, username: AGENT, audiences: ["weft-controller"], extra: { [NODE_NAME_EXTRA]: [node] }, ...over });

function auth(answer: (token: string) => TokenReviewResult | Error, now = () => 0) {
  const calls: string[] = [];
  const a = new AgentTokenAuthenticator({
    audience: "weft-controller",
    serviceAccount: "weft-system/weft-agent",
    now,
    review: async (token, audience) => {
      calls.push(`${token}@${audience}`);
      const r = answer(token);
      if (r instanceof Error) throw r;
      return r;
    },
  });
  return { a, calls };
}

describe("kube: agent token authentication (TokenReview rules)", () => {
  it("accepts the agents' ServiceAccount token bound to the joining node, asking for our audience", async () => {
    const { a, calls } = auth(() => ok("n1"));
    assert.equal(await a.check("Bearer t1", "n1"), undefined);
    assert.deepEqual(calls, ["t1@weft-controller"]);
  });

  it("refuses a token bound to another node, another ServiceAccount's token, an unauthenticated one, one without a node", async () => {
    assert.match((await auth(() => ok("n2")).a.check("Bearer t", "n1"))!, /bound to node "n2", not "n1"/);
    assert.match((await auth(() => ok("n1", { username: "system:serviceaccount:default:default" })).a.check("Bearer t", "n1"))!, /belongs to "system:serviceaccount:default:default"/);
    assert.match((await auth(() => ({ authenticated: false, error: "expired" })).a.check("Bearer t", "n1"))!, /not authenticated: expired/);
    assert.match((await auth(() => ok("n1", { extra: {} })).a.check("Bearer t", "n1"))!, /not bound to a node/);
    assert.match((await auth(() => ok("n1", { audiences: ["https://kubernetes.default.svc"] })).a.check("Bearer t", "n1"))!, /not for audience "weft-controller"/);
  });

  it("refuses a stream without a bearer token, and says why when the review itself fails", async () => {
    const { a, calls } = auth(() => ok("n1"));
    assert.match((await a.check(undefined, "n1"))!, /no ServiceAccount token/);
    assert.match((await a.check("Basic abc", "n1"))!, /no ServiceAccount token/);
    assert.equal(calls.length, 0);
    assert.match((await auth(() => new Error("connect ECONNREFUSED")).a.check("Bearer t", "n1"))!, /TokenReview failed: connect ECONNREFUSED/);
  });

  it("reuses a positive answer for the same token and node until its TTL, never a refusal", async () => {
    let t = 0;
    let answer = ok("n1");
    const { a, calls } = auth(() => answer, () => t);
    await a.check("Bearer t1", "n1");
    await a.check("Bearer t1", "n1");
    assert.equal(calls.length, 1);
    // Same token for another node: not the cached answer.
    assert.match((await a.check("Bearer t1", "n2"))!, /bound to node "n1"/);
    assert.match((await a.check("Bearer t1", "n2"))!, /bound to node "n1"/);
    assert.equal(calls.length, 3);
    t = 61_000;
    answer = { authenticated: false, error: "revoked" };
    assert.match((await a.check("Bearer t1", "n1"))!, /revoked/);
  });

  it("rejects a ServiceAccount that is not namespace/name", () => {
    assert.throws(() => new AgentTokenAuthenticator({ audience: "a", serviceAccount: "weft-agent", review: async () => ok("n") }), /--agent-service-account: "weft-agent" is not <namespace>\/<name>/);
  });
});
