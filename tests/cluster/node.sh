#!/usr/bin/env bash
# Becomes the containerd of one real node, inside the node's own mount
# namespace (start.sh runs it as `unshare --mount --propagation private`, in
# the cluster's network namespace; the node's kubelet joins this namespace).
# Every mount made here lives and dies with the namespace: nothing shows on
# the machine, nothing is left when the node's processes are gone.
#
#   tests/cluster/node.sh DIR NODE CONTAINER_PATH...
#
# CONTAINER_PATH: cluster.yaml's extraMounts of the node; the node's disk
# behind each is DIR/nodes/NODE/CONTAINER_PATH (kind mounts a host directory
# there; here every cluster gets its own, so clusters never share a disk).
set -euo pipefail

DIR=$1
NODE=$2
shift 2
ND=$DIR/real/$NODE

# bind SOURCE TARGET: TARGET (made on the machine if missing, empty) shows SOURCE.
bind() {
  mkdir -p "$1" "$2"
  mount --bind "$1" "$2"
}

for path in "$@"; do bind "$DIR/nodes/$NODE$path" "$path"; done
# Paths the kubelet, containerd's shims and the CNI plugins use whatever they
# are configured with: the node's own copies.
bind "$ND/log" /var/log
bind "$ND/cni-cache" /var/lib/cni
mkdir -p /run/containerd
mount -t tmpfs -o mode=0711 tmpfs /run/containerd
exec containerd --config "$ND/containerd.toml"
