# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The claim's lifecycle: Pending (expiry countdown) -> InUse -> Released (grace
# countdown) -> deleted. Decided afresh on every event from the claim's status,
# its pods and the clock (lib/evc.jq), so nothing is kept in memory.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=pvc.sh
source "$(dirname "${BASH_SOURCE[0]}")/pvc.sh"

# What to do about the claim, as one line of fields separated by \x1f (see decide
# in lib/evc.jq): due cancelled cancelledKind phase previous kind left log changed
# status message.
plan_claim() {
  local evc=$1 ns=$2
  kubectl get pods -n "$ns" -o json |
    evc_jq '{evc: $evc, pods: .items} | decide($now; $cfg)
      | [.due, .cancelled, .cancelledKind, .phase, .previous, .kind, .left, .log,
         status_changed($evc.status // {}), (status_of | tojson), .message]
      | map(tostring) | join("\u001f")' -r --argjson evc "$evc" \
      --argjson now "$(date -u +%s)" --argjson cfg "$(settings_json)"
}

run_lifecycle() {
  local evc=$1 ns=$2 name=$3 uid=$4
  local plan due cancelled cancelled_kind phase previous kind left log changed status message
  plan=$(plan_claim "$evc" "$ns")
  IFS=$'\x1f' read -r due cancelled cancelled_kind phase previous kind left log changed status \
    message <<<"$plan"
  if [[ $due == true ]]; then
    log_info "$EVC_REF: Countdown to $kind: reached! Deleting the EVC."
    delete_with_uid "/apis/zalando.org/v1/namespaces/$ns/ephemeralvolumeclaims/$name" "$uid"
    STATUS_PATCH='{}'
    return 0
  fi
  # The countdown lines are throttled by decide: at most one per interval.
  [[ $cancelled != true ]] ||
    log_info "$EVC_REF: Countdown to $cancelled_kind: cancelled, the claim is in use."
  [[ $phase == "$previous" ]] || log_info "$EVC_REF: Phase $phase: $message"
  [[ $log != true ]] || log_info "$EVC_REF: Countdown to $kind: ${left}s left"
  [[ $changed != true ]] || status_set "$status"
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
