#!/usr/bin/env bash
# The simulated nodes of a test cluster, named like cluster.yaml's kind nodes.
#
#   tests/cluster/nodes.sh create DIR      create the Node objects and Leases,
#                                          and DIR/nodes/<node>/ mirrors of
#                                          cluster.yaml's extraMounts
#   tests/cluster/nodes.sh heartbeat DIR   renew the Leases every 10 s forever
#
# The node lifecycle controller marks a node Unknown (and taints it
# unreachable) 40 s after its last heartbeat; a renewed Lease in
# kube-node-lease counts as one, which is what a kubelet does.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

NODES=(kind-control-plane kind-worker kind-worker2)
INTERVAL=${HEARTBEAT_SECONDS:-10}

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
micro_now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }

# node_json NAME INDEX: a Node as a kind node's kubelet would register it.
node_json() {
  local name=$1 i=$2 t
  t=$(now)
  jq -n --arg name "$name" --arg ip "172.18.0.$((i + 2))" --arg t "$t" \
    --arg cidr "10.244.$i.0/24" '
    def cond(type; status; reason; msg): {type: type, status: status,
      lastHeartbeatTime: $t, lastTransitionTime: $t, reason: reason, message: msg};
    {apiVersion: "v1", kind: "Node",
     metadata: {name: $name, labels: ({
       "kubernetes.io/hostname": $name, "kubernetes.io/os": "linux",
       "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
       "beta.kubernetes.io/arch": "amd64"} +
       (if $name == "kind-control-plane"
        then {"node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": ""}
        else {} end))},
     spec: ({podCIDR: $cidr, podCIDRs: [$cidr], providerID: ("kind://docker/kind/" + $name)} +
       (if $name == "kind-control-plane"
        then {taints: [{key: "node-role.kubernetes.io/master", effect: "NoSchedule"}]}
        else {} end)),
     status: {
       capacity: {cpu: "8", memory: "16393216Ki", pods: "110", "ephemeral-storage": "263174212Ki"},
       allocatable: {cpu: "8", memory: "16393216Ki", pods: "110", "ephemeral-storage": "263174212Ki"},
       conditions: [
         cond("MemoryPressure"; "False"; "KubeletHasSufficientMemory"; "kubelet has sufficient memory available"),
         cond("DiskPressure"; "False"; "KubeletHasNoDiskPressure"; "kubelet has no disk pressure"),
         cond("PIDPressure"; "False"; "KubeletHasSufficientPID"; "kubelet has sufficient PID available"),
         cond("Ready"; "True"; "KubeletReady"; "kubelet is posting ready status (simulated)")],
       addresses: [{type: "InternalIP", address: $ip}, {type: "Hostname", address: $name}],
       daemonEndpoints: {kubeletEndpoint: {Port: 10250}},
       nodeInfo: {machineID: "", systemUUID: "", bootID: "", kernelVersion: "simulated",
         osImage: "simulated (operator-rs tests/cluster)", containerRuntimeVersion: "simulated://1",
         kubeletVersion: "v1.20.2", kubeProxyVersion: "v1.20.2",
         operatingSystem: "linux", architecture: "amd64"}}}'
}

lease_json() {
  jq -n --arg name "$1" --arg t "$(micro_now)" --arg uid "$2" '
    {apiVersion: "coordination.k8s.io/v1", kind: "Lease",
     metadata: {name: $name, namespace: "kube-node-lease",
       ownerReferences: [{apiVersion: "v1", kind: "Node", name: $name, uid: $uid}]},
     spec: {holderIdentity: $name, leaseDurationSeconds: 40, renewTime: $t}}'
}

# cluster.yaml mounts /tmp/kind/volumes/workerN at /mnt/local-volumes on the
# workers; the simulator maps a hostPath P on node N to DIR/nodes/N/P.
mirror_mounts() {
  local dir=$1 n
  for n in "${NODES[@]}"; do mkdir -p "$dir/nodes/$n"; done
  mkdir -p "$dir/nodes/kind-worker/mnt/local-volumes" "$dir/nodes/kind-worker2/mnt/local-volumes"
}

# DIR/node-info.json: what the pod simulator needs to know of each node.
node_info() {
  local dir=$1 i
  for i in "${!NODES[@]}"; do
    jq -n --arg name "${NODES[$i]}" --arg ip "172.18.0.$((i + 2))" --arg net "10.244.$i" \
      '{($name): {hostIP: $ip, podNet: $net}}'
  done | jq -s add >"$dir/node-info.json"
}

create() {
  local dir=$1 i pids=() pid
  cluster_env "$dir"
  mirror_mounts "$dir"
  node_info "$dir"
  for i in "${!NODES[@]}"; do
    create_node "$dir" "$i" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

create_node() {
  local dir=$1 i=$2 name uid
  name=${NODES[$i]}
  uid=$(node_json "$name" "$i" | cluster_api "$dir" /api/v1/nodes -X POST \
    -H 'Content-Type: application/json' --data-binary @- | jq -r .metadata.uid)
  lease_json "$name" "$uid" | cluster_api "$dir" \
    /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases -X POST \
    -H 'Content-Type: application/json' --data-binary @- >/dev/null
  echo "$(date '+%F %T') created node $name"
}

renew() {
  local dir=$1 name
  for name in "${NODES[@]}"; do
    jq -n --arg t "$(micro_now)" '{spec: {renewTime: $t}}' | cluster_api "$dir" \
      "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/$name" -X PATCH \
      -H 'Content-Type: application/merge-patch+json' --data-binary @- >/dev/null \
      || echo "$(date '+%F %T') renewing the lease of $name failed"
  done
}

heartbeat() {
  local dir=$1
  cluster_env "$dir"
  while true; do
    renew "$dir"
    sleep "$INTERVAL"
  done
}

case ${1:-} in
  create) create "${2:?DIR}" ;;
  heartbeat) heartbeat "${2:?DIR}" ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
