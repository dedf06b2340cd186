#!/usr/bin/env bash
# Bundles weft-agent (from dist/, after tsc) into a few ES modules with esbuild.
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
