# shellcheck shell=bash
# Scheduling for the pod simulator (sourced by sim.sh).

# pick_node POD_JSON: echoes the least loaded node the pod fits on, or "".
pick_node() {
  local nodes load
  nodes=$(kubectl get nodes -o json)
  load=$(kubectl get pods -A -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' \
    --field-selector=status.phase!=Succeeded,status.phase!=Failed |
    jq -R -s 'split("\n") | map(select(. != "")) | group_by(.)
              | map({(.[0]): length}) | add // {}')
  jq -r --argjson nodes "$nodes" --argjson load "$load" \
    -f "$SIM_LIB/schedule.jq" <<<"$1"
}

# Reports why the pod waits, once: a repeated identical patch is skipped.
mark_unschedulable() {
  local pod=$1 msg="0/3 nodes are available: no simulated node matches the pod's nodeSelector, required node affinity and tolerations"
  if jq -e --arg msg "$msg" 'any(.status.conditions[]?;
       .type == "PodScheduled" and .status == "False" and .message == $msg)' \
       <<<"$pod" >/dev/null; then
    return 0
  fi
  patch_status "$pod" "$(jq -n --arg msg "$msg" --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    '{status: {phase: "Pending", conditions: [{type: "PodScheduled", status: "False",
      reason: "Unschedulable", message: $msg, lastProbeTime: null, lastTransitionTime: $now}]}}')"
  log_info "pod $(pod_ref "$pod") is unschedulable: $msg"
}
