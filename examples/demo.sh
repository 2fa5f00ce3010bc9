#!/usr/bin/env bash
# One command from a fresh clone to a working operator on the local control plane:
#
#   examples/demo.sh pvc   a claim of class local-storage: the pvc hooks make a
#                          directory on a node and a PersistentVolume; the claim
#                          becomes Bound. Shows `kubectl get pv,pvc`, then a pod
#                          (examples/pvc/pod.yaml, uid 1000) writes into the
#                          volume: its `kubectl logs` and the file on the node's
#                          disk; then deletes the claim (the hooks remove both).
#   examples/demo.sh evc   an EphemeralVolumeClaim: its PVC is made, a pod uses
#                          it (the pvc hooks provision it on the pod's node), the
#                          claim is InUse while the pod runs, then the countdown
#                          to cleanup is logged and both are deleted.
#
# Builds what is missing (cargo build; the control plane's and nodes' binaries on
# first use, about 10 minutes), starts a local cluster with real nodes
# (tests/cluster/start.sh --real-nodes), runs the operator with its log shown live,
# and stops everything it started at the end, on error and on Ctrl-C.
# Env: CLUSTER_DIR  a running cluster to use instead (a namespace of its own is made
#                   and deleted; the cluster is left running). Pods run only if it
#                   has real nodes; on simulated ones the pod steps are skipped.
#      OPERATOR_BIN the operator binary (default: cargo build, then target/debug/operator)
#      DEMO_TIMEOUT seconds each step may take (default 180)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

MODE=${1:-}
TIMEOUT=${DEMO_TIMEOUT:-180}
OWN_CLUSTER=0
OPERATOR_PIDS=()
TAIL_PIDS=()
CHILD_PID=
NS=
CLASS=

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }

# Everything this script started goes, whatever the way out.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  step "stopping (exit status $rc)"
  [[ -n $CHILD_PID ]] && kill "$CHILD_PID" 2>/dev/null
  stop_operator
  ((${#TAIL_PIDS[@]} == 0)) || kill "${TAIL_PIDS[@]}" 2>/dev/null
  [[ -z $CLASS ]] || kubectl delete storageclass "$CLASS" --wait=false >/dev/null 2>&1 || true
  if ((OWN_CLUSTER)); then
    if ((rc == 0 || rc == 130 || rc == 143)); then
      tests/cluster/stop.sh --clean "$CLUSTER_DIR" || true
      echo "stopped the control plane and removed $CLUSTER_DIR"
    else
      tests/cluster/stop.sh "$CLUSTER_DIR" || true
      echo "stopped the control plane; its logs are kept in $CLUSTER_DIR/logs"
    fi
  elif [[ -n $NS ]]; then
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    echo "deleted namespace $NS; the cluster in $CLUSTER_DIR keeps running"
  fi
  exit "$rc"
}

stop_operator() {
  local pid deadline=$((SECONDS + 15))
  ((${#OPERATOR_PIDS[@]} > 0)) || return 0
  kill -TERM "${OPERATOR_PIDS[@]}" 2>/dev/null || true
  for pid in "${OPERATOR_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  OPERATOR_PIDS=()
  echo "stopped the operator"
}

# waiting CMD...: runs CMD (a kubectl wait) in a session of its own and waits for it.
# In the foreground, kubectl would catch Ctrl-C itself and exit 1, and bash would then
# take the interrupt for a failure; this way only bash gets Ctrl-C, the wait builtin
# returns at once, the INT trap runs and cleanup ends CMD.
waiting() {
  local rc=0
  setsid "$@" &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=
  return "$rc"
}

build() {
  step "building what is missing"
  if [[ -z ${OPERATOR_BIN:-} ]]; then
    cargo build --locked --bin operator
    OPERATOR_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/operator
  fi
  export OPERATOR_BIN
  tests/cluster/build.sh >/dev/null
}

cluster() {
  if [[ -n ${CLUSTER_DIR:-} && -f $CLUSTER_DIR/kubeconfig ]]; then
    step "using the control plane in $CLUSTER_DIR"
  else
    step "starting a local control plane (tests/cluster/start.sh)"
    # Our own directory, so the trap knows what to stop even mid-start; the
    # watchdog stops the cluster should this script be killed outright.
    CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/operator-demo.XXXXXX")
    OWN_CLUSTER=1
    tests/cluster/start.sh --dir "$CLUSTER_DIR" --owner-pid $$ --real-nodes >/dev/null
  fi
  echo "cluster: $CLUSTER_DIR"
  export CLUSTER_DIR KUBECONFIG=$CLUSTER_DIR/kubeconfig KUBECACHEDIR=$CLUSTER_DIR/kube-cache
  NS=demo-$MODE-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
  kubectl create namespace "$NS" >/dev/null
  echo "namespace: $NS"
}

# run_operator ARGS...: in the background, its log shown as it grows.
run_operator() {
  local log=$CLUSTER_DIR/logs/demo-$NS-${#OPERATOR_PIDS[@]}.log
  : >"$log"
  step "running: operator $*"
  "$OPERATOR_BIN" "$@" -l "$log" </dev/null &
  OPERATOR_PIDS+=($!)
  tail -n +1 -f --pid=$$ "$log" &
  TAIL_PIDS+=($!)
}

real_nodes() {
  [[ -d $CLUSTER_DIR/real ]] && return 0
  echo "(simulated nodes: no pod runs; start.sh --real-nodes runs them)"
  return 1
}

# pod_run NAME: waits until pod NAME ran to its end, then shows its logs.
pod_run() {
  waiting kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$1" --timeout="${TIMEOUT}s"
  step "kubectl logs $1 (ran on node $(kubectl -n "$NS" get pod "$1" -o 'jsonpath={.spec.nodeName}'))"
  kubectl -n "$NS" logs "$1"
}

demo_pvc() {
  kubectl apply -f storageclass.yaml
  run_operator -o pvc -n "$NS" -h hooks/pvc
  step "creating the claim (examples/pvc/pvc.yaml)"
  kubectl -n "$NS" apply -f examples/pvc/pvc.yaml
  waiting kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Bound pvc/localstorage-claim --timeout="${TIMEOUT}s"
  local pv node path
  pv=$(kubectl -n "$NS" get pvc localstorage-claim -o 'jsonpath={.spec.volumeName}')
  node=$(kubectl get pv "$pv" -o 'jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}')
  path=$(kubectl get pv "$pv" -o 'jsonpath={.spec.local.path}')
  step "kubectl get pv,pvc"
  kubectl -n "$NS" get pv,pvc
  step "the directory on node $node's disk"
  ls -ld "$CLUSTER_DIR/nodes/$node$path"
  step "a pod writes into the volume (examples/pvc/pod.yaml, as uid 1000)"
  if real_nodes; then
    kubectl -n "$NS" apply -f examples/pvc/pod.yaml
    pod_run volume-writer
    step "the file on node $node's disk"
    ls -ln "$CLUSTER_DIR/nodes/$node$path/hello.txt"
    cat "$CLUSTER_DIR/nodes/$node$path/hello.txt"
    kubectl -n "$NS" delete pod volume-writer
  fi
  step "deleting the claim: the hooks remove the directory and the PersistentVolume"
  kubectl -n "$NS" delete pvc localstorage-claim
  waiting kubectl wait --for=delete "pv/$pv" --timeout="${TIMEOUT}s"
  [[ ! -e $CLUSTER_DIR/nodes/$node$path ]] && echo "removed $CLUSTER_DIR/nodes/$node$path"
}

demo_evc() {
  kubectl apply -f hooks/evc/crd.yaml
  waiting kubectl wait --for=condition=Established crd/ephemeralvolumeclaims.zalando.org --timeout=60s
  local used=0
  real_nodes && used=1
  # Short periods for a demo: unused claims expire 20 s after creation, used ones
  # go 20 s after their last pod finished.
  run_operator -o evc -n "$NS" -h hooks/evc --resync 2s -E EXPIRY_PERIOD=20,GRACE_PERIOD=20,COUNTDOWN_INTERVAL=5
  if ((used)); then
    volume_class
    run_operator -o pvc -n "$NS" -h hooks/pvc -E "STORAGE_CLASS=$CLASS,JOB_NAMESPACE=$NS"
    step "creating the claim (examples/evc/evc.yaml) in class $CLASS and a pod that uses it"
    kubectl -n "$NS" create --dry-run=client -o json -f examples/evc/evc.yaml |
      jq --arg class "$CLASS" '.spec.storageClassName = $class | del(.metadata.namespace)' | kubectl -n "$NS" apply -f -
    evc_pod | kubectl -n "$NS" apply -f -
    waiting kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=InUse evc/my-claim-1 --timeout="${TIMEOUT}s"
    step "kubectl get evc,pvc,pod while the pod runs"
    kubectl -n "$NS" get evc,pvc,pod
    pod_run evc-user
    step "the pod finished: the countdown to cleanup"
  else
    step "creating the claim (examples/evc/evc.yaml); no pod uses it, so it expires"
    kubectl -n "$NS" apply -f examples/evc/evc.yaml
    waiting kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Pending evc/my-claim-1 --timeout="${TIMEOUT}s"
    step "kubectl get evc,pvc"
    kubectl -n "$NS" get evc,pvc
    step "waiting for the expiry"
  fi
  waiting kubectl -n "$NS" wait --for=delete evc/my-claim-1 --timeout="${TIMEOUT}s"
  # kubernetes.io/pvc-protection keeps a claim while a pod names it, even a finished one.
  ((used == 0)) || kubectl -n "$NS" delete pod evc-user
  # The PVC goes with its owner (garbage collection) or by the deleted hook.
  waiting kubectl -n "$NS" wait --for=delete pvc/my-claim-1 --timeout="${TIMEOUT}s" 2>/dev/null || true
  step "kubectl get evc,pvc"
  kubectl -n "$NS" get evc,pvc 2>&1
}

# A class whose claims hooks/pvc provisions on the node the scheduler picked for
# their first pod (an EVC's claim names no node).
volume_class() {
  CLASS=demo-$NS
  kubectl apply -f - <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $CLASS}
provisioner: operator-pvc/local
volumeBindingMode: WaitForFirstConsumer
EOF
}

# examples/evc/pod.yaml, with the image the nodes hold and a shorter run.
evc_pod() {
  kubectl create --dry-run=client -o json -f examples/evc/pod.yaml | jq --arg image "$(cat "$CLUSTER_DIR/tools-image")" '
    .metadata.name = "evc-user" | del(.metadata.namespace) | .spec.terminationGracePeriodSeconds = 0
    | .spec.containers[0] += {image: $image, imagePullPolicy: "IfNotPresent",
        command: ["sh", "-c", "df -h /vol && echo used > /vol/f && sleep 5 && cat /vol/f"]}'
}

main() {
  case $MODE in
    pvc | evc) ;;
    *) usage ;;
  esac
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  build
  cluster
  "demo_$MODE"
  waiting sleep 1 # the last log lines
  step "done in ${SECONDS} s"
}

main "$@"
