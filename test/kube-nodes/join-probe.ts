// Opens one Join stream to a controller with a ServiceAccount token and prints
// how it ended, as JSON: {"code": <grpc status>, "details": "..."}. Run inside a
// kube-lab node's network namespace (the controller Service's ClusterIP is
// reachable there through kube-proxy):
//   join-probe.ts CONTROLLER CA_FILE TOKEN_FILE NODE_NAME
import fs from "node:fs";
import { ControllerClient } from "../../pkg/api/index.js";
import { channelCredentials } from "../../pkg/agent/index.js";
import { simJoinRequest } from "../harness/sim-agent.js";

const [address, ca, token, node] = process.argv.slice(2);
const client = new ControllerClient(address, channelCredentials(undefined, { file: token, ca: fs.readFileSync(ca) }));
const call = client.join();
let done = false;
const finish = (code: number, details: string) => {
  if (done) return;
  done = true;
  process.stdout.write(JSON.stringify({ code, details }) + "\n");
  call.cancel();
  client.close();
  setTimeout(() => process.exit(0), 50);
};
call.on("data", () => finish(0, "snapshot received"));
call.on("error", (err: { code: number; details: string }) => finish(err.code, err.details));
call.on("status", (s: { code: number; details: string }) => finish(s.code, s.details));
call.write({ msg: { $case: "join", value: simJoinRequest(node, 1) } });
setTimeout(() => finish(-1, "no answer within 15 s"), 15_000);
