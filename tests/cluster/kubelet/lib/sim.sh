# shellcheck shell=bash source-path=SCRIPTDIR
# The pod simulator: scheduler and kubelet stand-in for the test cluster.
# Sourced by the added, modified and sync hooks; see ../README.md.
#
# Every decision is taken from the pod itself (phase, nodeName, startTime),
# never from memory, so any event may be replayed. Nothing here sleeps: a
# pod that must wait is looked at again on its next SYNC event (--resync 1s).
# Every second (--resync 1s) the sync-all hook gets every pod at once and
# handles only those that need something now (sim_all); the added and
# modified hooks decide the common cases from the EVENT_OBJECT_* variables
# alone, without starting a process.

SIM_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../../hooks/lib/log.sh
source "$SIM_LIB/../../../../hooks/lib/log.sh"
# shellcheck source=schedule.sh
source "$SIM_LIB/schedule.sh"
# shellcheck source=commands.sh
source "$SIM_LIB/commands.sh"

SIM_RUN_SECONDS=${SIM_RUN_SECONDS:-1}
# Pods handled at once by one pass of sync-all.
SIM_PARALLEL=8
KEEP_RUNNING_ANNOTATION=sim.operator-rs/keep-running

# Whether the event shows a pod that needs nothing now. The pod may have
# moved on since, but only ever to a later stage that needs nothing either.
sim_idle() {
  [[ -z ${EVENT_OBJECT_METADATA_DELETIONTIMESTAMP:-} ]] || return 1
  case ${EVENT_OBJECT_STATUS_PHASE:-} in
    Succeeded|Failed) return 0 ;;
    Running) ;;
    *) return 1 ;;
  esac
  [[ ${EVENT_OBJECT_SPEC_RESTARTPOLICY:-Always} != Always ]] || return 0
  [[ ${EVENT_OBJECT_METADATA_ANNOTATIONS_SIM_OPERATOR_RS_KEEP_RUNNING:-} != true ]] || return 0
  local started
  started=$(date -d "${EVENT_OBJECT_STATUS_STARTTIME:-1970-01-01T00:00:00Z}" +%s) || return 1
  (($(date +%s) - started < SIM_RUN_SECONDS))
}

# Entry point of the added and modified hooks.
sim_main() {
  sim_idle && return 0
  sim_pod "$EVENT_OBJECT_METADATA_NAMESPACE" "$EVENT_OBJECT_METADATA_NAME"
}

# Entry point of the sync-all hook: the pods of the pass (EVENT_FILE) that need
# something now, SIM_PARALLEL at a time, each in a process of its own (one pod's
# failure is logged and retried at the next pass, a second later).
sim_all() {
  local ns name running=0
  while IFS=$'\t' read -r ns name; do
    (sim_pod "$ns" "$name") &
    running=$((running + 1))
    if ((running >= SIM_PARALLEL)); then
      wait -n || true
      running=$((running - 1))
    fi
  done < <(jq -r -L "$SIM_LIB" --argjson run "$SIM_RUN_SECONDS" --arg keep "$KEEP_RUNNING_ANNOTATION" \
    'include "stage"; .objects[] | select(stage($run; $keep) != "none")
     | [.metadata.namespace, .metadata.name] | @tsv' "$1")
  while ((running > 0)); do
    wait -n || true
    running=$((running - 1))
  done
}

# sim_pod NS NAME: one step for one pod. The event may be older than the pod:
# decide on its current state.
sim_pod() {
  POD_NS=$1
  POD_NAME=$2
  local pod stage node
  pod=$(kubectl get pod -n "$POD_NS" "$POD_NAME" -o json --ignore-not-found)
  [[ -n $pod ]] || return 0
  { read -r stage; read -r node; } < <(jq -r -L "$SIM_LIB" --argjson run "$SIM_RUN_SECONDS" \
    --arg keep "$KEEP_RUNNING_ANNOTATION" 'include "stage"; stage($run; $keep), (.spec.nodeName // "")' <<<"$pod")
  case $stage in
    delete) sim_delete ;;
    schedule) sim_schedule "$pod" ;;
    start) sim_start "$pod" "$node" ;;
    finish) sim_finish "$pod" "$node" ;;
  esac
}

# No kubelet confirms graceful deletion here, so finish it at once.
sim_delete() {
  kubectl delete pod -n "$POD_NS" "$POD_NAME" --grace-period=0 --force --wait=false \
    --ignore-not-found >/dev/null 2>&1
  log_info "deleted pod $POD_NS/$POD_NAME (no kubelet to confirm a graceful deletion)"
}

sim_schedule() {
  local pod=$1 node
  node=$(pick_node "$pod")
  if [[ -z $node ]]; then
    mark_unschedulable "$pod"
    return 0
  fi
  jq -n --arg ns "$POD_NS" --arg name "$POD_NAME" --arg node "$node" \
    '{apiVersion: "v1", kind: "Binding", metadata: {name: $name, namespace: $ns},
      target: {apiVersion: "v1", kind: "Node", name: $node}}' |
    kubectl create --raw "/api/v1/namespaces/$POD_NS/pods/$POD_NAME/binding" -f - >/dev/null
  log_info "scheduled pod $POD_NS/$POD_NAME on $node"
  sim_start "$pod" "$node"
}

# patch_status PATCH_JSON: merge-patch the pod's status subresource.
patch_status() {
  kubectl patch pod -n "$POD_NS" "$POD_NAME" --subresource=status --type=merge -p "$1" >/dev/null
}

# Pending -> Running, as a kubelet reports a started pod.
sim_start() {
  local pod=$1 node=$2 patch
  patch=$(jq -c --arg node "$node" --slurpfile info "$CLUSTER_DIR/node-info.json" \
    --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" -f "$SIM_LIB/running.jq" <<<"$pod")
  if [[ -z $patch ]]; then
    log_debug "pod $POD_NS/$POD_NAME is bound to $node, which is not simulated: left Pending"
    return 0
  fi
  prepare_host_paths "$pod" "$node"
  patch_status "$patch"
  log_info "pod $POD_NS/$POD_NAME Running on $node"
}

# Running -> Succeeded/Failed: run the simulated commands, report exit codes.
sim_finish() {
  local pod=$1 node=$2 results patch phase message
  results=$(run_pod_commands "$pod" "$node")
  patch=$(jq -c --argjson results "$results" \
    --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" -f "$SIM_LIB/finished.jq" <<<"$pod")
  patch_status "$patch"
  { read -r phase; read -r message; } < <(jq -r '.status.phase, (.status.message // "")' <<<"$patch")
  if [[ $phase == Failed ]]; then
    log_info "pod $POD_NS/$POD_NAME Failed: ${message:-a container failed}"
  else
    log_info "pod $POD_NS/$POD_NAME Succeeded"
  fi
}
