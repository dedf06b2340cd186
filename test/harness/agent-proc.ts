// A real Agent in its own process (so tests can SIGKILL it), talking gRPC from
// the test's network namespace and programming the kernel in `netns`. Options
// come as JSON in WEFT_AGENT_OPTS; it prints {"idle":true,...} on stdout
// whenever it becomes idle after an apply, so a test knows when to look.
import { Agent } from "../../pkg/agent/index.js";
import { silentLogger } from "../../pkg/log/index.js";

const opts = JSON.parse(process.env.WEFT_AGENT_OPTS ?? "{}");
const agent = new Agent({ ...opts, log: silentLogger(), reconnectBaseMs: 100, reconnectCapMs: 500, retryBaseMs: 50 });
await agent.start();
let last = "";
setInterval(() => {
  const s = JSON.stringify({ idle: agent.idle && agent.lastApplied !== undefined, revision: agent.appliedRevision, ready: agent.ready });
  if (s !== last) process.stdout.write(s + "\n");
  last = s;
}, 20);
process.on("SIGTERM", () => void agent.stop().then(() => process.exit(0)));
