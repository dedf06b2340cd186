#!/usr/bin/env bash
# Installs everything Weft's build, tests and lab need on a fresh Debian
# machine: system packages (only the missing ones) and the npm dependencies
# pinned in package-lock.json. Safe to run again: it does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# containerd..libc6-dev: make kube-lab and test/kube-nodes (one containerd per node; images built here).
packages=(etcd-server etcd-client iproute2 iptables containernetworking-plugins
  iputils-ping tcpdump ethtool ruby jq procps ca-certificates curl openssl systemd bash dnsutils dnsperf iperf3
  containerd runc conntrack buildah mmdebstrap busybox-static gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "install-deps: Node.js 20 or newer is required" >&2
  exit 1
fi

# npm ci only when package-lock.json changed since the last install.
stamp=node_modules/.weft-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
