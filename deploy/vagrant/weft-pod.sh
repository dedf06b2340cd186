#!/usr/bin/env bash
# weft-pod: a stand-in for a pod on a VM with no container runtime. Creates a network
# namespace and attaches it with the CNI plugins of the conflist the agent wrote, the way a
# runtime would (installed by the Vagrant provisioning as /usr/local/bin/weft-pod).
#   weft-pod add NAME     create namespace NAME, attach it, print its IPv4 address
#   weft-pod del NAME     detach it (releases the address) and delete the namespace
#   weft-pod list         namespaces made by weft-pod, with their addresses
#   ip netns exec NAME ping 10.244.1.2
set -euo pipefail
CONFLIST=${WEFT_CONFLIST:-/etc/cni/net.d/10-weft.conflist}
# /opt/cni/bin: Debian's plugins and Weft's `weft` (linked there by the provisioning).
CNI_BIN=${CNI_PATH:-/opt/cni/bin}
PREFIX=pod-

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Runs every plugin of the conflist for $1 (ADD in order, DEL in reverse) on namespace $2,
# passing each ADD result on as prevResult. Prints the last result.
run_plugins() {
  local cmd=$1 ns=$2 n i prev='' conf out
  [ -r "$CONFLIST" ] || { echo "weft-pod: $CONFLIST not found: is weft-agent running and connected?" >&2; exit 1; }
  n=$(jq '.plugins | length' "$CONFLIST")
  local order; if [ "$cmd" = ADD ]; then order=$(seq 0 $((n - 1))); else order=$(seq $((n - 1)) -1 0); fi
  for i in $order; do
    conf=$(jq -c --argjson i "$i" --argjson prev "${prev:-null}" '
      {cniVersion, name} + .plugins[$i]
      + (if $prev == null then {} else {prevResult: $prev} end)
      + (if .plugins[$i].type == "portmap" then {runtimeConfig: {portMappings: []}} else {} end)' "$CONFLIST")
    out=$(printf '%s' "$conf" | CNI_COMMAND=$cmd CNI_CONTAINERID="$PREFIX$ns" CNI_NETNS="/run/netns/$ns" \
      CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN" "$CNI_BIN/$(jq -r '.type' <<<"$conf")") || {
      echo "weft-pod: CNI $cmd $(jq -r '.type' <<<"$conf"): $out" >&2; return 1; }
    [ "$cmd" = ADD ] && prev=$out
  done
  printf '%s\n' "$prev"
}

pod_ip() { ip -n "$1" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }

case "${1:-}" in
  add)
    [ -n "${2:-}" ] || usage
    ip netns add "$2"
    ip -n "$2" link set lo up
    if ! run_plugins ADD "$2" >/dev/null; then ip netns del "$2"; exit 1; fi
    mkdir -p /run/weft-pod && touch "/run/weft-pod/$2"
    pod_ip "$2"
    ;;
  del)
    [ -n "${2:-}" ] || usage
    run_plugins DEL "$2" >/dev/null || true
    ip netns del "$2" 2>/dev/null || true
    rm -f "/run/weft-pod/$2"
    ;;
  list)
    for f in /run/weft-pod/*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      printf '%s\t%s\n' "$name" "$(pod_ip "$name")"
    done
    ;;
  *) usage ;;
esac
