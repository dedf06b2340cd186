#!/usr/bin/env node
// weftctl: networks, leases and nodes in a Weft etcd (standalone mode).
import { runMain } from "../../pkg/cli/index.js";
import { buildProgram } from "./program.js";

await runMain(async () => {
  await buildProgram().parseAsync();
});
