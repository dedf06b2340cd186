#!/usr/bin/env bash
# Bundles weft-agent (from dist/, after tsc) into a few ES modules with esbuild,
# and the weft CNI plugin into one.
# Why: Node resolves and compiles hundreds of small files on start; bundled, the
# agent sends its Join 2-3x sooner (measured in bench/results/agent-5000-peers.md),
# which is what lets peers reach a new node sooner. Dynamic imports (dataplane,
# metrics) stay separate chunks, loaded after the Join as before.
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/bundle/weft-agent
rm -rf "$out"
node_modules/.bin/esbuild dist/cmd/weft-agent/main.js --bundle --splitting --platform=node --format=esm --target=node20 \
  --outdir="$out" --log-level=warning \
  --banner:js="import { createRequire as __weftRequire } from 'module'; const require = __weftRequire(import.meta.url);"
chmod +x "$out/main.js"
# The `weft` CNI plugin as one file: the DaemonSet's init container copies it
# (with the image's node) into the host's CNI bin dir, where a runtime runs it
# for every pod; one file loads fastest and needs no node_modules on the host.
node_modules/.bin/esbuild dist/cmd/weft-cni/main.js --bundle --platform=node --format=esm --target=node20 \
  --outfile=dist/bundle/weft-cni/main.mjs --log-level=warning
