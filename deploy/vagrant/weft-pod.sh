#!/usr/bin/env bash
# weft-pod: a stand-in for a pod on a VM with no container runtime. Creates a network
# namespace and attaches it with the CNI plugins of the conflists the agent wrote, the way a
# runtime would (installed by the Vagrant provisioning as /usr/local/bin/weft-pod).
#   weft-pod add NAME [-n NETWORK]... [-a ALIAS]... [-p HOSTPORT:PORT]
#                     create namespace NAME, attach it to each network (default: the node's
#                     default network) as eth0, eth1, ..., print its IPv4 addresses
#   weft-pod del NAME detach it (releases the addresses) and delete the namespace
#   weft-pod list     namespaces made by weft-pod, with their addresses
#   ip netns exec NAME ping 10.244.1.2
#   ip netns exec NAME dig OTHER       (networks with dns on: resolv.conf from the CNI result)
set -euo pipefail
CONF_DIR=${WEFT_CNI_CONF_DIR:-/etc/cni/net.d}
# /opt/cni/bin: Debian's plugins and Weft's `weft` (linked there by the provisioning).
CNI_BIN=${CNI_PATH:-/opt/cni/bin}
STATE=/run/weft-pod
PREFIX=pod-

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The conflist the agent wrote for network $1 (its "name" is weft-<network>); "" = the default.
conflist_for() {
  local f
  if [ -z "$1" ]; then f=$CONF_DIR/10-weft.conflist; [ -r "$f" ] && { echo "$f"; return; }
  else
    for f in "$CONF_DIR"/10-weft.conflist "$CONF_DIR"/weft-*.conflist; do
      [ -r "$f" ] && [ "$(jq -r .name "$f")" = "weft-$1" ] && { echo "$f"; return; }
    done
  fi
  echo "weft-pod: no conflist for network '${1:-default}' in $CONF_DIR: is weft-agent running, and this node a member?" >&2
  exit 1
}

# Runs every plugin of conflist $2 (ADD in order, DEL in reverse) for namespace $3 and
# interface $4, passing each ADD result on as prevResult; $5: endpoint args (JSON), $6:
# portMappings (JSON). Prints the last result.
run_plugins() {
  local cmd=$1 list=$2 ns=$3 ifname=$4 args=${5:-'{}'} ports=${6:-'[]'} n i prev='' conf out order
  n=$(jq '.plugins | length' "$list")
  if [ "$cmd" = ADD ]; then order=$(seq 0 $((n - 1))); else order=$(seq $((n - 1)) -1 0); fi
  for i in $order; do
    conf=$(jq -c --argjson i "$i" --argjson prev "${prev:-null}" --argjson args "$args" --argjson ports "$ports" '
      {cniVersion, name} + .plugins[$i] + {args: $args}
      + (if $prev == null then {} else {prevResult: $prev} end)
      + (if .plugins[$i].capabilities.portMappings then {runtimeConfig: {portMappings: $ports}} else {} end)' "$list")
    out=$(printf '%s' "$conf" | CNI_COMMAND=$cmd CNI_CONTAINERID="$PREFIX$ns" CNI_NETNS="/run/netns/$ns" \
      CNI_IFNAME=$ifname CNI_PATH="$CNI_BIN" "$CNI_BIN/$(jq -r '.type' <<<"$conf")") || {
      echo "weft-pod: CNI $cmd $(jq -r '.type' <<<"$conf"): $out" >&2; return 1; }
    [ "$cmd" = ADD ] && prev=$out
  done
  printf '%s\n' "$prev"
}

pod_ips() { ip -n "$1" -4 -o addr show 2>/dev/null | awk '$2 != "lo" {split($4, a, "/"); print $2 " " a[1]}'; }

# DEL for every attachment recorded in $STATE/$1 (lines: ifname conflist ports), newest first,
# with the same portMappings as its ADD (portmap removes its rules only then, as with runtimes).
detach_all() {
  local ns=$1 ifname list
  [ -r "$STATE/$ns" ] || return 0
  tac "$STATE/$ns" | while read -r ifname list ports; do run_plugins DEL "$list" "$ns" "$ifname" '{}' "${ports:-[]}" >/dev/null || true; done
}

case "${1:-}" in
  add)
    [ -n "${2:-}" ] || usage
    name=$2; shift 2
    networks=() aliases=() ports='[]'
    while [ $# -gt 0 ]; do
      case "$1" in
        -n) networks+=("$2"); shift 2 ;;
        -a) aliases+=("$2"); shift 2 ;;
        -p) [[ $2 =~ ^([0-9]+):([0-9]+)$ ]] || { echo "weft-pod: -p $2: want HOSTPORT:PORT" >&2; exit 2; }
            ports=$(jq -c --argjson h "${BASH_REMATCH[1]}" --argjson c "${BASH_REMATCH[2]}" '. + [{hostPort: $h, containerPort: $c, protocol: "tcp"}]' <<<"$ports"); shift 2 ;;
        *) usage ;;
      esac
    done
    [ ${#networks[@]} -gt 0 ] || networks=("")
    args=$(jq -cn --arg n "$name" '{weft: {name: $n, aliases: $ARGS.positional}}' --args "${aliases[@]}")
    ip netns add "$name"
    ip -n "$name" link set lo up
    mkdir -p "$STATE" && : >"$STATE/$name"
    i=0 resolver=''
    for net in "${networks[@]}"; do
      list=$(conflist_for "$net") || { detach_all "$name"; ip netns del "$name"; rm -f "$STATE/$name"; exit 1; }
      p='[]'; [ $i -eq 0 ] && p=$ports
      # Recorded before ADD, so a failed ADD is undone by DEL too (DEL is idempotent).
      echo "eth$i $list $p" >>"$STATE/$name"
      if ! result=$(run_plugins ADD "$list" "$name" "eth$i" "$args" "$p"); then
        detach_all "$name"; ip netns del "$name"; rm -f "$STATE/$name"; exit 1
      fi
      # The first network whose result carries a resolver (dns on) writes the pod's resolv.conf;
      # `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
      if [ -z "$resolver" ] && [ "$(jq '.dns.nameservers // [] | length' <<<"$result")" -gt 0 ]; then
        resolver=$(jq -r '(.dns.nameservers | map("nameserver " + .)) + (if (.dns.search // []) | length > 0 then ["search " + (.dns.search | join(" "))] else [] end) | .[]' <<<"$result")
        mkdir -p "/etc/netns/$name" && printf '%s\noptions ndots:1\n' "$resolver" >"/etc/netns/$name/resolv.conf"
      fi
      i=$((i + 1))
    done
    pod_ips "$name"
    ;;
  del)
    [ -n "${2:-}" ] || usage
    detach_all "$2"
    ip netns del "$2" 2>/dev/null || true
    rm -rf "$STATE/$2" "/etc/netns/$2"
    ;;
  list)
    for f in "$STATE"/*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      printf '%s\t%s\n' "$name" "$(pod_ips "$name" | tr '\n' ' ')"
    done
    ;;
  *) usage ;;
esac
