# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The claim's lifecycle: Pending (expiry countdown) -> InUse -> Released (grace
# countdown) -> deleted. Decided afresh on every pass from the claim's status,
# its pods and the clock (lib/evc.jq), so nothing is kept in memory. This is the
# one-by-one path; lib/batch.sh decides most claims of a pass in one jq run.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=pvc.sh
source "$(dirname "${BASH_SOURCE[0]}")/pvc.sh"

# What to do about the claim, as one line of fields separated by \x1f (see decide
# in lib/evc.jq): due cancelled cancelledKind phase previous kind left log changed
# status message. PODS: the pods that may use it (JSON array).
plan_claim() {
  local evc=$1 pods=$2
  evc_jq '{evc: $evc, pods: $pods} | decide($now; $cfg)
      | [.due, .cancelled, .cancelledKind, .phase, .previous, .kind, .left, .log,
         status_changed($evc.status // {}), (status_of | tojson), .message]
      | map(tostring) | join("\u001f")' -nr --argjson evc "$evc" --argjson pods "$pods" \
    --argjson now "${PASS_NOW:-$(date -u +%s)}" --argjson cfg "$(settings_json)"
}

# run_lifecycle EVC PODS NS NAME UID: the claim's phase, countdown and deletion.
run_lifecycle() {
  local evc=$1 pods=$2 ns=$3 name=$4 uid=$5
  local plan due cancelled cancelled_kind phase previous kind left log changed status message
  plan=$(plan_claim "$evc" "$pods")
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
    note INFO "$EVC_REF: Countdown to $cancelled_kind: cancelled, the claim is in use."
  [[ $phase == "$previous" ]] || note INFO "$EVC_REF: Phase $phase: $message"
  [[ $log != true ]] || note INFO "$EVC_REF: Countdown to $kind: ${left}s left"
  [[ $changed != true ]] || status_set "$status"
}

# reconcile EVC PODS PVC: PVC labels and size, then lifecycle, then one status write, for a
# claim whose own PVC needs those (rare: a relabelled or resized claim), as the pass saw it (PODS and PVC from the pass's lists). If the claim changed since the pass
# was taken (the added hook just wrote it, a user edited it), is gone or being deleted,
# it is left to the next pass: one cheap look instead of deciding on stale state.
reconcile() {
  local evc=$1 pods=$2 pvc=$3 ns name uid
  read -r ns name uid STATUS_RV < <(jq -r '.metadata | "\(.namespace) \(.name) \(.uid) \(.resourceVersion)"' <<<"$evc")
  EVC_REF=$ns/$name
  if [[ $(kubectl get "$EVC_RESOURCE" "$name" -n "$ns" --ignore-not-found \
    -o jsonpath='{.metadata.resourceVersion}') != "$STATUS_RV" ]]; then
    log_debug "$EVC_REF: changed since the pass began, or gone; left to the next pass"
    return 0
  fi
  # The claim's own event file: operator event acts on the object of EVENT_FILE,
  # and sync-all's holds the whole pass. Each reconcile runs in a process of its own.
  EVENT_FILE=$(mktemp)
  jq -c '{type: "SYNC", object: .}' <<<"$evc" >"$EVENT_FILE"
  sync_pvc "$evc" "$pvc"
  run_lifecycle "$evc" "$pods" "$ns" "$name" "$uid"
  status_flush "$ns" "$name"
  rm -f "$EVENT_FILE"
}
