# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The claim's lifecycle: Pending (expiry countdown) -> InUse -> Released (grace
# countdown) -> deleted. Decided afresh on every event from the claim's status,
# its pods and the clock (lib/evc.jq), so nothing is kept in memory.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=pvc.sh
source "$(dirname "${BASH_SOURCE[0]}")/pvc.sh"

# The decision for the claim as JSON (see decide in lib/evc.jq).
decide_claim() {
  local evc=$1 ns=$2 pods
  pods=$(kubectl get pods -n "$ns" -o json)
  jq -cn --argjson evc "$evc" --argjson pods "$pods" '{evc: $evc, pods: $pods.items}' |
    evc_jq 'decide($now; $cfg)' -c --argjson now "$(date -u +%s)" --argjson cfg "$(settings_json)"
}

# Log lines for phase changes; the countdown lines are throttled by decide.
log_transition() {
  local d=$1 phase previous kind left
  IFS='|' read -r phase previous kind left < <(jq -r '"\(.phase)|\(.previous)|\(.kind)|\(.left)"' <<<"$d")
  if jq -e '.cancelled' <<<"$d" >/dev/null; then
    log_info "$EVC_REF: Countdown to $(jq -r '.cancelledKind' <<<"$d"): cancelled, the claim is in use."
  fi
  if [[ $phase != "$previous" ]]; then
    log_info "$EVC_REF: Phase $phase: $(jq -r '.message' <<<"$d")"
  fi
  if jq -e '.log' <<<"$d" >/dev/null; then
    log_info "$EVC_REF: Countdown to $kind: ${left}s left"
  fi
}

delete_claim() {
  local d=$1 ns=$2 name=$3 uid=$4
  log_info "$EVC_REF: Countdown to $(jq -r '.kind' <<<"$d"): reached! Deleting the EVC."
  delete_with_uid "/apis/zalando.org/v1/namespaces/$ns/ephemeralvolumeclaims/$name" "$uid"
}

run_lifecycle() {
  local evc=$1 ns=$2 name=$3 uid=$4 d
  d=$(decide_claim "$evc" "$ns")
  if jq -e '.due' <<<"$d" >/dev/null; then
    delete_claim "$d" "$ns" "$name" "$uid"
    STATUS_PATCH='{}'
    return 0
  fi
  log_transition "$d"
  if evc_jq 'status_changed($st)' -e --argjson st "$(jq -c '.status // {}' <<<"$evc")" \
    <<<"$d" >/dev/null; then
    status_set "$(evc_jq 'status_of' -c <<<"$d")"
  fi
}

# Entry point of the added, modified and sync hooks.
reconcile() {
  local ns=$1 name=$2 evc uid
  EVC_REF=$ns/$name
  evc=$(evc_get "$ns" "$name")
  if [[ -z $evc ]] || jq -e '.metadata.deletionTimestamp' <<<"$evc" >/dev/null; then
    log_debug "$EVC_REF: gone or being deleted; nothing to do"
    return 0
  fi
  uid=$(jq -r '.metadata.uid' <<<"$evc")
  ensure_pvc "$evc"
  if [[ -z $CLAIM_FAILED ]]; then
    run_lifecycle "$evc" "$ns" "$name" "$uid"
  fi
  status_flush "$ns" "$name"
}
