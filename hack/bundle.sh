#!/usr/bin/env bash
# Bundles weft-agent and weft-controller (from dist/, after tsc) into a few ES
# modules each with esbuild, and the weft CNI plugin into one.
# Why: Node resolves and compiles hundreds of small files on start; bundled, the
# agent sends its Join 2-3x sooner (measured in bench/results/agent-5000-peers.md),
# which is what lets peers reach a new node sooner, and a restarted controller
# is ready sooner (bench/results/controller-scale.md). Dynamic imports
# (the agent's dataplane and metrics, the controller's Kubernetes client) stay
# separate chunks, loaded only when used.
set -euo pipefail
cd "$(dirname "$0")/.."
# CommonJS dependencies bundled into ES modules still expect require,
# __filename and __dirname (write-file-atomic names its temp files from
# __filename: without it every endpoint the agent persisted failed).
BANNER="import { createRequire as __weftRequire } from 'module'; import { fileURLToPath as __weftPath } from 'url'; import { dirname as __weftDir } from 'path'; const require = __weftRequire(import.meta.url); const __filename = __weftPath(import.meta.url); const __dirname = __weftDir(__filename);"
bundle() {
  local name=$1; shift
  local out=dist/bundle/$name
  rm -rf "$out"
  node_modules/.bin/esbuild "dist/cmd/$name/main.js" --bundle --splitting --platform=node --format=esm --target=node20 \
    --outdir="$out" --log-level=warning "$@" \
    --banner:js="$BANNER"
  chmod +x "$out/main.js"
}
bundle weft-agent
bundle weft-controller
# etcd3 reads its .proto files from `${__dirname}/../proto` at run time, which
# bundled is dist/bundle/proto. (Left outside the bundle, etcd3 and the second
# copy of grpc-js it loaded from node_modules cost a restarted controller
# ~120 ms of its ~590 ms to ready.)
rm -rf dist/bundle/proto
cp -r node_modules/etcd3/proto dist/bundle/proto
# The `weft` CNI plugin as one file: the DaemonSet's init container copies it
# (with the image's node) into the host's CNI bin dir, where a runtime runs it
# for every pod; one file loads fastest and needs no node_modules on the host.
node_modules/.bin/esbuild dist/cmd/weft-cni/main.js --bundle --platform=node --format=esm --target=node20 \
  --outfile=dist/bundle/weft-cni/main.mjs --log-level=warning
