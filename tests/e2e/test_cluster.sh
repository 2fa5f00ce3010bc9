#!/usr/bin/env bash
# The local control plane itself (tests/cluster): what every other e2e test
# relies on. Each test fails when the feature it names is broken.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cluster_up

# apply NS MANIFEST: kubectl apply from a string.
apply() { kubectl -n "$1" apply -f - <<<"$2" >/dev/null; }

pod_field() { kubectl -n "$1" get pod "$2" -o "jsonpath=$3"; }

test_crd_established_created_and_watched() {
  local ns group watch
  ns=$(new_namespace crd)
  group=$ns.example.com
  kubectl apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.$group}
spec:
  group: $group
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
EOF
  kubectl wait --for=condition=Established "crd/widgets.$group" --timeout=30s >/dev/null \
    || fail "CRD widgets.$group never became Established"
  watch=$CLUSTER_DIR/logs/$ns-watch.json
  kubectl -n "$ns" get "widgets.$group" -w -o json --output-watch-events >"$watch" 2>&1 &
  local wpid=$!
  wait_until 30 kubectl -n "$ns" get "widgets.$group" >/dev/null 2>&1 || fail "widgets not listable"
  sleep 1
  apply "$ns" "{\"apiVersion\": \"$group/v1\", \"kind\": \"Widget\", \"metadata\": {\"name\": \"w1\"}, \"spec\": {\"size\": 3}}" \
    || fail "creating a Widget failed"
  [[ $(kubectl -n "$ns" get "widget.$group" w1 -o jsonpath='{.spec.size}') == 3 ]] \
    || fail "the Widget did not keep spec.size"
  wait_until 10 watched "$watch" ADDED w1 || fail "the watch did not stream ADDED w1: $(cat "$watch")"
  kill "$wpid"
}

# watched FILE TYPE NAME: FILE (a stream of watch events) has TYPE for NAME.
watched() {
  jq -e -s --arg t "$2" --arg n "$3" \
    'any(.[]; .type == $t and .object.metadata.name == $n)' "$1" >/dev/null 2>&1
}

job_manifest() {
  local name=$1 command=$2
  cat <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $name}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, command: $command}
EOF
}

test_job_pod_scheduled_and_completed() {
  local ns pod node
  ns=$(new_namespace job)
  apply "$ns" "$(job_manifest ok '["true"]')"
  kubectl -n "$ns" wait --for=condition=complete job/ok --timeout=60s >/dev/null \
    || fail "Job ok never became Complete"
  pod=$(kubectl -n "$ns" get pods -l job-name=ok -o jsonpath='{.items[0].metadata.name}')
  node=$(pod_field "$ns" "$pod" '{.spec.nodeName}')
  [[ $node == kind-worker || $node == kind-worker2 ]] \
    || fail "the Job's pod ran on '$node', not on a worker"
  [[ $(pod_field "$ns" "$pod" '{.status.phase}') == Succeeded ]] || fail "pod $pod not Succeeded"
  [[ $(pod_field "$ns" "$pod" '{.status.containerStatuses[0].state.terminated.reason}') == Completed ]] \
    || fail "pod $pod has no terminated container status"
  [[ -n $(pod_field "$ns" "$pod" '{.status.containerStatuses[0].state.terminated.finishedAt}') ]] \
    || fail "pod $pod has no finishedAt"
}

test_job_with_false_command_fails() {
  local ns
  ns=$(new_namespace false)
  apply "$ns" "$(job_manifest bad '["false"]')"
  kubectl -n "$ns" wait --for=condition=failed job/bad --timeout=60s >/dev/null \
    || fail "Job bad (command false) never became Failed"
  [[ $(kubectl -n "$ns" get pods -l job-name=bad \
        -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}') == 1 ]] \
    || fail "the failed pod does not report exit code 1"
}

test_scheduling_honours_selectors_affinity_and_taints() {
  local ns
  ns=$(new_namespace sched)
  apply "$ns" "$(cat <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: on-master}
spec:
  nodeSelector: {node-role.kubernetes.io/master: ""}
  tolerations: [{key: node-role.kubernetes.io/master, operator: Exists, effect: NoSchedule}]
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: untolerated}
spec:
  nodeSelector: {node-role.kubernetes.io/master: ""}
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: affine}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [kind-worker2]}]
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: kept, annotations: {sim.operator-rs/keep-running: "true"}}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: ["true"]}]
EOF
)"
  kubectl -n "$ns" wait --for=condition=Ready pod/on-master pod/affine pod/kept --timeout=30s >/dev/null \
    || fail "pods did not become Ready"
  [[ $(pod_field "$ns" on-master '{.spec.nodeName}') == kind-control-plane ]] \
    || fail "on-master is not on kind-control-plane"
  [[ $(pod_field "$ns" affine '{.spec.nodeName}') == kind-worker2 ]] || fail "affine is not on kind-worker2"
  [[ -n $(pod_field "$ns" affine '{.status.podIP}') ]] || fail "affine has no podIP"
  wait_until 10 unschedulable "$ns" untolerated || fail "untolerated is not marked Unschedulable"
  [[ -z $(pod_field "$ns" untolerated '{.spec.nodeName}') ]] || fail "untolerated was scheduled"
  sleep "$((${SIM_RUN_SECONDS:-1} + 2))"
  [[ $(pod_field "$ns" kept '{.status.phase}') == Running ]] || fail "the keep-running pod did not stay Running"
}

unschedulable() {
  [[ $(pod_field "$1" "$2" '{.status.conditions[?(@.type=="PodScheduled")].reason}') == Unschedulable ]]
}

test_prebound_claim_becomes_bound() {
  local ns
  ns=$(new_namespace pv)
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $ns}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /mnt/local-volumes/$ns}
  claimRef: {namespace: $ns, name: data}
EOF
  apply "$ns" "$(cat <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 1Gi}}
EOF
)"
  wait_until 30 claim_bound "$ns" data || fail "claim data never became Bound"
  [[ $(kubectl -n "$ns" get pvc data -o jsonpath='{.spec.volumeName}') == "$ns" ]] \
    || fail "claim data is bound to the wrong volume"
  kubectl delete pv "$ns" --wait=false >/dev/null
}

claim_bound() { [[ $(kubectl -n "$1" get pvc "$2" -o jsonpath='{.status.phase}') == Bound ]]; }

test_deleting_owner_collects_dependents() {
  local ns uid
  ns=$(new_namespace gc)
  kubectl -n "$ns" create configmap owner >/dev/null
  uid=$(kubectl -n "$ns" get configmap owner -o jsonpath='{.metadata.uid}')
  apply "$ns" "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"dependent\",
    \"ownerReferences\": [{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"name\": \"owner\", \"uid\": \"$uid\"}]}}"
  sleep 1
  kubectl -n "$ns" get configmap dependent >/dev/null || fail "the dependent is gone before its owner"
  kubectl -n "$ns" delete configmap owner >/dev/null
  wait_until 60 gone "$ns" configmap dependent || fail "the dependent was not garbage-collected"
}

gone() { ! kubectl -n "$1" get "$2" "$3" >/dev/null 2>&1; }

test_pod_watch_streams_added_modified_deleted() {
  local ns watch
  ns=$(new_namespace watch)
  watch=$CLUSTER_DIR/logs/$ns-watch.json
  kubectl -n "$ns" get pods -w -o json --output-watch-events >"$watch" 2>&1 &
  local wpid=$!
  sleep 1
  apply "$ns" '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
    "spec": {"containers": [{"name": "main", "image": "busybox"}]}}'
  kubectl -n "$ns" wait --for=condition=Ready pod/p --timeout=30s >/dev/null || fail "pod p never Ready"
  kubectl -n "$ns" delete pod p --timeout=30s >/dev/null || fail "deleting pod p did not complete"
  local t
  for t in ADDED MODIFIED DELETED; do
    wait_until 10 watched "$watch" "$t" p || fail "the watch did not stream $t: $(jq -c .type "$watch")"
  done
  kill "$wpid"
}

# hostpath_job NS NAME NODE PATH...: a Job running `mkdir -p -- PATH...` (or
# `mkdir -m MODE -p -- PATH...` with MKDIR_MODE set, as hooks/pvc does) with
# the node's /mnt/local-volumes mounted at /data.
hostpath_job() {
  local ns=$1 name=$2 node=$3
  shift 3
  apply "$ns" "$(jq -n --arg name "$name" --arg node "$node" --arg mode "${MKDIR_MODE:-}" --args '
    {apiVersion: "batch/v1", kind: "Job", metadata: {name: $name}, spec: {backoffLimit: 0,
      template: {spec: {restartPolicy: "Never", nodeSelector: {"kubernetes.io/hostname": $node},
        volumes: [{name: "v", hostPath: {path: "/mnt/local-volumes", type: "Directory"}}],
        containers: [{name: "main", image: "busybox",
          command: (["mkdir"] + (if $mode == "" then [] else ["-m", $mode] end) + ["-p", "--"] + $ARGS.positional),
          volumeMounts: [{name: "v", mountPath: "/data"}]}]}}}}' "$@")"
}

test_hostpath_mkdir_mode_is_applied() {
  local ns
  ns=$(new_namespace mode)
  MKDIR_MODE=0777 hostpath_job "$ns" mk kind-worker "/data/$ns/open"
  kubectl -n "$ns" wait --for=condition=complete job/mk --timeout=60s >/dev/null || fail "Job mk not Complete"
  [[ $(stat -c %a "$CLUSTER_DIR/nodes/kind-worker/mnt/local-volumes/$ns/open") == 777 ]] \
    || fail "mkdir -m 0777 did not make a 0777 directory"
}

test_hostpath_mkdir_lands_on_the_node_directory() {
  local ns
  ns=$(new_namespace hostpath)
  hostpath_job "$ns" mk kind-worker2 "/data/$ns/a/b"
  kubectl -n "$ns" wait --for=condition=complete job/mk --timeout=60s >/dev/null || fail "Job mk not Complete"
  [[ -d $CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/$ns/a/b ]] \
    || fail "mkdir did not create nodes/kind-worker2/mnt/local-volumes/$ns/a/b"
  [[ ! -e $CLUSTER_DIR/nodes/kind-worker/mnt/local-volumes/$ns ]] || fail "mkdir ran on the wrong node"
  apply "$ns" "$(jq -n '{apiVersion: "v1", kind: "Pod", metadata: {name: "rm"}, spec: {
    restartPolicy: "Never", nodeSelector: {"kubernetes.io/hostname": "kind-worker2"},
    volumes: [{name: "v", hostPath: {path: "/mnt/local-volumes"}}],
    containers: [{name: "main", image: "busybox", command: ["rm", "-rf", "--"], args: ["/data/'"$ns"'/a"],
      volumeMounts: [{name: "v", mountPath: "/data"}]}]}}')"
  wait_until 30 pod_phase "$ns" rm Succeeded || fail "pod rm not Succeeded"
  [[ ! -e $CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/$ns/a && \
     -d $CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/$ns ]] || fail "rm -rf did not remove just $ns/a"
}

pod_phase() { [[ $(pod_field "$1" "$2" '{.status.phase}') == "$3" ]]; }

test_hostpath_escape_is_refused() {
  local ns pod message
  ns=$(new_namespace escape)
  hostpath_job "$ns" esc kind-worker "/data/../../../../$ns"
  kubectl -n "$ns" wait --for=condition=failed job/esc --timeout=60s >/dev/null \
    || fail "Job esc escaping its volume was not Failed"
  pod=$(kubectl -n "$ns" get pods -l job-name=esc -o jsonpath='{.items[0].metadata.name}')
  message=$(pod_field "$ns" "$pod" '{.status.message}')
  [[ $message == *refused* ]] || fail "pod $pod does not say why it failed: '$message'"
  [[ -z $(find "$CLUSTER_DIR" -name "$ns") ]] || fail "a directory $ns was created: $(find "$CLUSTER_DIR" -name "$ns")"
}

test_two_clusters_side_by_side_and_watchdog() {
  local owner second port1 port2
  sleep 600 &
  owner=$!
  second=$("$REPO_ROOT/tests/cluster/start.sh" --owner-pid "$owner") || fail "a second cluster did not start"
  port1=$(cat "$CLUSTER_DIR/api-port")
  port2=$(cat "$second/api-port")
  [[ $port1 != "$port2" ]] || fail "both clusters use port $port1"
  KUBECONFIG=$second/kubeconfig kubectl create namespace only-in-second >/dev/null \
    || fail "the second cluster does not answer"
  [[ $(KUBECONFIG=$second/kubeconfig kubectl get nodes -o name | wc -l) == 3 ]] \
    || fail "the second cluster has no nodes"
  ! kubectl get namespace only-in-second >/dev/null 2>&1 || fail "the clusters share their state"
  local apiserver
  apiserver=$(cat "$second/pids/kube-apiserver")
  kill "$owner"
  wait "$owner" 2>/dev/null || true
  wait_until 20 process_gone "$apiserver" \
    || fail "the watchdog did not stop the second cluster when its owner died"
  wait_until 10 no_pids "$second" || fail "processes left: $(ls "$second/pids")"
  "$REPO_ROOT/tests/cluster/stop.sh" --clean "$second"
}

process_gone() { ! kill -0 "$1" 2>/dev/null; }
no_pids() { [[ -z $(ls "$1/pids") ]]; }

# Last, so the cluster is old enough: nodes go NotReady 40 s after their
# last heartbeat unless their Leases are renewed.
test_nodes_stay_ready() {
  local age
  age=$(($(date +%s) - $(stat -c %Y "$CLUSTER_DIR/kubeconfig")))
  ((age >= 60)) || sleep $((60 - age))
  local n
  for n in kind-control-plane kind-worker kind-worker2; do
    [[ $(kubectl get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]] \
      || fail "node $n is not Ready after 60 s"
    [[ $(kubectl get node "$n" -o jsonpath='{.spec.taints[*].key}') != *unreachable* ]] \
      || fail "node $n got an unreachable taint"
  done
  [[ $(kubectl get node kind-worker -o jsonpath='{.metadata.labels.kubernetes\.io/hostname}') == kind-worker ]] \
    || fail "kind-worker lacks its kubernetes.io/hostname label"
}

run_tests
