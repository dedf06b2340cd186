#!/usr/bin/env bash
# Builds kube-apiserver for the Kubernetes tests from the Go module proxy (no
# kube-apiserver package exists for Debian), the way envtest supplies one.
# k8s.io/kubernetes requires its staging modules at v0.0.0, so a wrapper
# go.mod replaces each with its published v0.<minor>.<patch>.
# Prints the binary's path. Skipped when the cached binary exists;
# KUBE_APISERVER=/path uses that binary instead.
#   hack/build-kube-apiserver.sh [kube-apiserver|kubectl|kubelet|kube-controller-manager|kube-scheduler|kube-proxy]
# `kubectl` builds kubectl the same way (for machines without one) and links
# it as $cache/bin/kubectl, which the Makefile puts at the end of PATH.
# kubelet, kube-controller-manager, kube-scheduler and kube-proxy (for
# `make kube-lab` and test/kube-nodes) share the module and build caches, so
# after kube-apiserver each is mostly a link.
set -euo pipefail

cmd="${1:-kube-apiserver}"
case "$cmd" in
  kube-apiserver|kubectl) group=kube-apiserver; tools="kube-apiserver kubectl" ;;
  kubelet|kube-controller-manager|kube-scheduler|kube-proxy) group=kube-node; tools="kubelet kube-controller-manager kube-scheduler kube-proxy" ;;
  *) echo "build-kube-apiserver: unknown command $cmd (kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler or kube-proxy)" >&2; exit 2 ;;
esac

if [ "$cmd" = kube-apiserver ] && [ -n "${KUBE_APISERVER:-}" ]; then
  [ -x "$KUBE_APISERVER" ] || { echo "KUBE_APISERVER=$KUBE_APISERVER is not executable" >&2; exit 1; }
  echo "$KUBE_APISERVER"
  exit 0
fi

version="${KUBE_VERSION:-v1.34.4}"
cache="${WEFT_CACHE:-$HOME/.cache/weft}"
bin="$cache/bin/$cmd-$version"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "build-kube-apiserver: Go 1.24 or newer is required (https://go.dev/dl; expected in /usr/local/go or on PATH)" >&2; exit 1; }
gominor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[ "${gominor:-0}" -ge 24 ] || { echo "build-kube-apiserver: Go 1.24 or newer is required to build Kubernetes ${KUBE_VERSION:-v1.34}; found $(go env GOVERSION)" >&2; exit 1; }
start=$(date +%s)
work="$cache/build/$group-$version"
mkdir -p "$work" "$cache/bin"
cd "$work"
staging="v0.${version#v1.}"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

cat > go.mod <<MOD
module weft.dev/kube-apiserver-build

go 1.24
MOD
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for t in $tools; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$t"; done
  printf ')\n'
} > tools.go

# Every k8s.io module k8s.io/kubernetes requires at v0.0.0 is a staging module.
# `go mod download` reads it through whatever GOPROXY/GOFLAGS the machine has.
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[ -f "$gomod" ] || { echo "build-kube-apiserver: could not download k8s.io/kubernetes $version" >&2; exit 1; }
modules=$(awk '$1 ~ /^k8s.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u)
[ -n "$modules" ] || { echo "build-kube-apiserver: could not read the staging modules of k8s.io/kubernetes $version" >&2; exit 1; }
{
  echo "require k8s.io/kubernetes $version"
  for m in $modules; do echo "replace $m => $m $staging"; done
} >> go.mod

echo "build-kube-apiserver: resolving modules for k8s.io/kubernetes $version" >&2
go mod tidy >&2 2>&1 || go get "k8s.io/kubernetes/cmd/$cmd@$version" >&2
# Measured from nothing (empty module and build caches): 17.9 min on 2 busy cores
# (load ~6), ~10 min of CPU per core; with warm Go caches, a relink only.
echo "build-kube-apiserver: compiling $cmd (10-20 minutes on 2 cores from empty caches)" >&2
# Stamp the version so `kube-apiserver --version` and /version tell the truth
# (kubectl warns about skew otherwise); the Go build cache makes this link-only
# when only these flags change.
minor="${version#v1.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
go build -p "$(nproc)" -trimpath -ldflags="$ldflags" -o "$bin.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
mv "$bin.tmp" "$bin"
[ "$cmd" = kubectl ] && ln -sfn "$(basename "$bin")" "$cache/bin/kubectl"
echo "build-kube-apiserver: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
