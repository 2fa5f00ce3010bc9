#!/usr/bin/env bash
# Stops everything start.sh started for a cluster directory, by PID: the
# watchdog, the pod simulator (and the hooks it runs), the lease heartbeat,
# kube-controller-manager, kube-apiserver and etcd. TERM first, KILL after a
# few seconds. Idempotent. Leaves DIR (logs stay readable) unless --clean.
# Real nodes: their kubelets and every container first (runc's state), then
# the processes, containerd's shims, the veth; the network and mount
# namespaces (bridges, iptables rules, mounts) go with their last process.
# Works the same after a crash of start.sh, a test or any of the processes.
#
#   tests/cluster/stop.sh [--clean] DIR
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
# shellcheck source=real-nodes.sh
source "$HERE/real-nodes.sh"

CLEAN=0
DIR=
GRACE=${STOP_GRACE_SECONDS:-5}

while (($#)); do
  case $1 in
    --clean) CLEAN=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) DIR=$1; shift ;;
  esac
done
[[ -n $DIR ]] || { echo "usage: stop.sh [--clean] DIR" >&2; exit 2; }
[[ -d $DIR ]] || exit 0
DIR=$(cd "$DIR" && pwd)

# Every process start.sh runs leads its own process group (setsid), so
# signalling the group also reaches its children (hooks, sleeps, curls).
signal() {
  local sig=$1 pid=$2
  kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
}

real_stop_containers

running=()
for f in "$DIR"/pids/*; do
  [[ -f $f ]] || continue
  if alive "$f" "$DIR"; then
    running+=("$(cat "$f")")
  else
    rm -f "$f"
  fi
done

for pid in "${running[@]}"; do signal TERM "$pid"; done

deadline=$((SECONDS + GRACE))
for pid in "${running[@]}"; do
  while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
done
for pid in "${running[@]}"; do
  if [[ -e /proc/$pid ]] || pgrep -g "$pid" >/dev/null 2>&1; then
    signal KILL "$pid"
  fi
done
for pid in "${running[@]}"; do
  while [[ -e /proc/$pid ]]; do sleep 0.05; done
done
rm -f "$DIR"/pids/*
real_stop_rest

if ((CLEAN)); then
  # Only ever remove something that looks like a cluster directory.
  if [[ -d $DIR/pids && -d $DIR/logs ]]; then rm -rf "$DIR"; fi
fi
