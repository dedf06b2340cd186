#!/usr/bin/env bash
# Builds kube-apiserver for the Kubernetes tests from the Go module proxy (no
# kube-apiserver package exists for Debian), the way envtest supplies one.
# k8s.io/kubernetes requires its staging modules at v0.0.0, so a wrapper
# go.mod replaces each with its published v0.<minor>.<patch>.
# Prints the binary's path. Skipped when the cached binary exists;
# KUBE_APISERVER=/path uses that binary instead.
set -euo pipefail

if [ -n "${KUBE_APISERVER:-}" ]; then
  [ -x "$KUBE_APISERVER" ] || { echo "KUBE_APISERVER=$KUBE_APISERVER is not executable" >&2; exit 1; }
  echo "$KUBE_APISERVER"
  exit 0
fi

version="${KUBE_VERSION:-v1.34.4}"
cache="${WEFT_CACHE:-$HOME/.cache/weft}"
bin="$cache/bin/kube-apiserver-$version"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "build-kube-apiserver: Go is required (https://go.dev/dl)" >&2; exit 1; }
work="$cache/build/kube-apiserver-$version"
mkdir -p "$work" "$cache/bin"
cd "$work"
staging="v0.${version#v1.}"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

cat > go.mod <<MOD
module weft.dev/kube-apiserver-build

go 1.24
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO

# Every k8s.io module k8s.io/kubernetes requires at v0.0.0 is a staging module.
modules=$(curl -fsSL "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/$version.mod" | awk '$1 ~ /^k8s.io\// && $2 == "v0.0.0" {print $1}' | sort -u)
[ -n "$modules" ] || { echo "build-kube-apiserver: could not read the staging modules of k8s.io/kubernetes $version" >&2; exit 1; }
{
  echo "require k8s.io/kubernetes $version"
  for m in $modules; do echo "replace $m => $m $staging"; done
} >> go.mod

start=$(date +%s)
echo "build-kube-apiserver: resolving modules for k8s.io/kubernetes $version" >&2
go mod tidy >&2 2>&1 || go get k8s.io/kubernetes/cmd/kube-apiserver@"$version" >&2
echo "build-kube-apiserver: compiling (several minutes on 2 cores)" >&2
go build -trimpath -ldflags="-s -w" -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
mv "$bin.tmp" "$bin"
echo "build-kube-apiserver: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
