#!/bin/sh
# Runs a command as part of a kube-lab node: in the node's cgroup (every
# hierarchy, so `kube-lab down` finds and kills all it started, containers
# included) and in its network, mount and UTS namespaces. exec all the way, so
# the PID the caller records is the command's own.
#   in-node.sh CGROUP NETNS_FILE MOUNT_NS_FILE UTS_NS_FILE -- COMMAND...
cg="$1"; net="$2"; mnt="$3"; uts="$4"; shift 4
[ "$1" = -- ] && shift
for h in /sys/fs/cgroup/*/; do
  [ -f "$h$cg/cgroup.procs" ] && echo $$ > "$h$cg/cgroup.procs"
done
exec nsenter --net="$net" --mount="$mnt" --uts="$uts" -- "$@"
