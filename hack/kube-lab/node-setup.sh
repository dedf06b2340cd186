#!/usr/bin/env bash
# Prepares one kube-lab node's private mount namespace. Runs inside it
# (nsenter --net=<node netns> --mount=<node mount ns> --uts=...), once:
#   - sysfs remounted so /sys/class/net shows the node's network namespace,
#     with the machine's cgroup mounts moved back under /sys/fs/cgroup;
#   - every directory kubelet, containerd, CNI and Weft's hostPath volumes use
#     bind-mounted from the node's own directory, so nodes share nothing;
#   - the global kernel tunables kubelet insists on (vm.overcommit_memory=1,
#     kernel.panic=10, kernel.panic_on_oops=1) shown to it with those values
#     by files bind-mounted over /proc/sys in this namespace only: kubelet
#     would otherwise write them machine-wide (they are not per namespace),
#     and Weft's tests must not change the machine. Its protectKernelDefaults
#     is on, so a value it sees wrong stops it instead of being written.
#   node-setup.sh NODE_NAME NODE_DIR
set -euo pipefail
name="$1"; dir="$2"
[ -n "$name" ] && [ -d "$dir" ] || { echo "usage: node-setup.sh NODE_NAME NODE_DIR" >&2; exit 2; }
hostname "$name"

hold="$dir/cgroup-hold"
mkdir -p "$hold"
mount --rbind /sys/fs/cgroup "$hold"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$hold" /sys/fs/cgroup

fs="$dir/fs"
for d in var/lib/kubelet var/lib/containerd run/containerd etc/cni/net.d opt/cni/bin var/lib/weft var/log/pods var/log/containers; do
  mkdir -p "$fs/$d" "/$d"
  mount --bind "$fs/$d" "/$d"
done
# The xtables lock is a file every iptables writer of the node shares (kube-proxy, the agent).
: > "$fs/xtables.lock"; [ -e /run/xtables.lock ] || : > /run/xtables.lock
mount --bind "$fs/xtables.lock" /run/xtables.lock

mkdir -p "$dir/sysctl"
while read -r key value; do
  f="$dir/sysctl/${key//\//.}"
  echo "$value" > "$f"
  mount --bind -o ro "$f" "/proc/sys/$key"
done <<'KEYS'
vm/overcommit_memory 1
kernel/panic 10
kernel/panic_on_oops 1
KEYS

# What a Kubernetes node is provisioned with (kubeadm's preflight requires it;
# Weft's unprivileged agent only checks it): forwarding on, in this node's
# network namespace only.
sysctl -qw net.ipv4.ip_forward=1
