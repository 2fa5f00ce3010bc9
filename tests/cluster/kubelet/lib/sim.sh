# shellcheck shell=bash source-path=SCRIPTDIR
# The pod simulator: scheduler and kubelet stand-in for the test cluster.
# Sourced by the added, modified and sync hooks; see ../README.md.
#
# Every decision is taken from the pod itself (phase, nodeName, startTime),
# never from memory, so any event may be replayed. Nothing here sleeps: a
# pod that must wait is looked at again on its next SYNC event.

# shellcheck source=../../../../hooks/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../../hooks/lib/log.sh"
# shellcheck source=schedule.sh
source "$(dirname "${BASH_SOURCE[0]}")/schedule.sh"
# shellcheck source=commands.sh
source "$(dirname "${BASH_SOURCE[0]}")/commands.sh"

SIM_RUN_SECONDS=${SIM_RUN_SECONDS:-1}
KEEP_RUNNING_ANNOTATION=sim.operator-rs/keep-running

# What to do next with a pod: delete | schedule | start | finish | none.
sim_stage() {
  jq -r --argjson run "$SIM_RUN_SECONDS" --arg keep "$KEEP_RUNNING_ANNOTATION" '
    if .metadata.deletionTimestamp then "delete"
    elif (.status.phase == "Succeeded" or .status.phase == "Failed") then "none"
    elif (.spec.nodeName // "") == "" then "schedule"
    elif .status.phase != "Running" then "start"
    elif (.spec.restartPolicy // "Always") == "Always" then "none"
    elif (.metadata.annotations[$keep] // "") == "true" then "none"
    elif (now - (.status.startTime // "1970-01-01T00:00:00Z" | fromdateiso8601)) >= $run
      then "finish"
    else "none" end'
}

# Entry point of the hooks.
sim_main() {
  local pod stage ns name
  stage=$(jq '.object' "$EVENT_FILE" | sim_stage)
  [[ $stage == none ]] && return 0
  ns=$EVENT_OBJECT_METADATA_NAMESPACE
  name=$EVENT_OBJECT_METADATA_NAME
  # The event may be older than the pod: decide on its current state.
  pod=$(kubectl get pod -n "$ns" "$name" -o json --ignore-not-found)
  [[ -n $pod ]] || return 0
  stage=$(sim_stage <<<"$pod")
  case $stage in
    delete) sim_delete "$ns" "$name" ;;
    schedule) sim_schedule "$pod" ;;
    start) sim_start "$pod" ;;
    finish) sim_finish "$pod" ;;
  esac
}

# No kubelet confirms graceful deletion here, so finish it at once.
sim_delete() {
  kubectl delete pod -n "$1" "$2" --grace-period=0 --force --wait=false \
    --ignore-not-found >/dev/null 2>&1
  log_info "deleted pod $1/$2 (no kubelet to confirm a graceful deletion)"
}

sim_schedule() {
  local pod=$1 ns name node
  ns=$(jq -r .metadata.namespace <<<"$pod")
  name=$(jq -r .metadata.name <<<"$pod")
  node=$(pick_node "$pod")
  if [[ -z $node ]]; then
    mark_unschedulable "$pod"
    return 0
  fi
  jq -n --arg ns "$ns" --arg name "$name" --arg node "$node" \
    '{apiVersion: "v1", kind: "Binding", metadata: {name: $name, namespace: $ns},
      target: {apiVersion: "v1", kind: "Node", name: $node}}' |
    kubectl create --raw "/api/v1/namespaces/$ns/pods/$name/binding" -f - >/dev/null
  log_info "scheduled pod $ns/$name on $node"
  sim_start "$(jq --arg node "$node" '.spec.nodeName = $node' <<<"$pod")"
}

# patch_status POD PATCH_JSON: merge-patch the pod's status subresource.
patch_status() {
  local ns name
  ns=$(jq -r .metadata.namespace <<<"$1")
  name=$(jq -r .metadata.name <<<"$1")
  kubectl patch pod -n "$ns" "$name" --subresource=status --type=merge -p "$2" >/dev/null
}

node_known() {
  jq -e --arg n "$1" 'has($n)' "$CLUSTER_DIR/node-info.json" >/dev/null
}

# Pending -> Running, as a kubelet reports a started pod.
sim_start() {
  local pod=$1 node patch
  node=$(jq -r .spec.nodeName <<<"$pod")
  if ! node_known "$node"; then
    log_debug "pod $(pod_ref "$pod") is bound to $node, which is not simulated: left Pending"
    return 0
  fi
  prepare_host_paths "$pod" "$node"
  patch=$(jq --slurpfile info "$CLUSTER_DIR/node-info.json" \
    --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" -f "$SIM_LIB/running.jq" <<<"$pod")
  patch_status "$pod" "$patch"
  log_info "pod $(pod_ref "$pod") Running on $node"
}

# Running -> Succeeded/Failed: run the simulated commands, report exit codes.
sim_finish() {
  local pod=$1 results patch phase
  results=$(run_pod_commands "$pod")
  patch=$(jq --argjson results "$results" \
    --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" -f "$SIM_LIB/finished.jq" <<<"$pod")
  patch_status "$pod" "$patch"
  phase=$(jq -r .status.phase <<<"$patch")
  if [[ $phase == Failed ]]; then
    log_info "pod $(pod_ref "$pod") Failed: $(jq -r '.status.message // "a container failed"' <<<"$patch")"
  else
    log_info "pod $(pod_ref "$pod") Succeeded"
  fi
}

pod_ref() { jq -r '.metadata.namespace + "/" + .metadata.name' <<<"$1"; }

SIM_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
