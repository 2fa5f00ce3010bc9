# shellcheck shell=bash
# Scheduling for the pod simulator (sourced by sim.sh).

# pick_node POD_JSON: echoes the least loaded node the pod fits on, or "".
pick_node() {
  local nodes load
  nodes=$(kubectl get nodes -o json)
  # One line per pod that occupies a node: its node's name.
  load=$(kubectl get pods -A -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' \
    --field-selector=status.phase!=Succeeded,status.phase!=Failed)
  jq -r --argjson nodes "$nodes" --arg load "$load" -f "$SIM_LIB/schedule.jq" <<<"$1"
}

# Reports why the pod waits, once: a repeated identical patch is skipped.
mark_unschedulable() {
  local pod=$1 msg="0/3 nodes are available: no simulated node matches the pod's nodeSelector, required node affinity and tolerations"
  local patch
  patch=$(jq -c --arg msg "$msg" --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
    if any(.status.conditions[]?; .type == "PodScheduled" and .status == "False"
                                  and .message == $msg) then empty
    else {status: {phase: "Pending", conditions: [{type: "PodScheduled", status: "False",
      reason: "Unschedulable", message: $msg, lastProbeTime: null, lastTransitionTime: $now}]}}
    end' <<<"$pod")
  [[ -n $patch ]] || return 0
  patch_status "$patch"
  log_info "pod $POD_NS/$POD_NAME is unschedulable: $msg"
}
