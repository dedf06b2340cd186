#!/usr/bin/env bash
# Regenerates pkg/api/gen into a temp copy and fails if it differs from the
# checked-in code: proto/ and pkg/api/gen/ must never drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a pkg/api/gen "$tmp/checked-in"
hack/gen-proto.sh
if ! diff -r "$tmp/checked-in" pkg/api/gen >/dev/null; then
  diff -ru "$tmp/checked-in" pkg/api/gen | head -40 >&2
  rm -rf pkg/api/gen && cp -a "$tmp/checked-in" pkg/api/gen
  echo "verify-gen: pkg/api/gen is stale; run 'make gen' and commit the result" >&2
  exit 1
fi
