#!/usr/bin/env bash
# Generates pkg/api/gen/ from proto/ with ts-proto. Reproducible: pinned protoc
# and ts-proto from package-lock.json, fixed options, output wiped first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=pkg/api/gen
rm -rf "$out"
mkdir -p "$out"
node_modules/.bin/protoc \
  --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,env=node,useOptionals=none,forceLong=number,oneof=unions-value \
  -I proto \
  proto/weft/v1/*.proto
