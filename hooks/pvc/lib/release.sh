# shellcheck shell=bash
# DELETED: the claim is gone (the event holds its last state). Its PV is
# found by the uid-derived name; with reclaim policy Delete a Job removes the
# directory, then the PV is deleted. Retain keeps both.

release_claim() {
  claim_load
  release_wanted || return 0
  release_wait_mkdir
  release_found && return 0
  release_orphan
  # A snapshot run that took the claim just before it was deleted may have made
  # its Job, or even its PV, while the orphan's Job ran (which takes seconds):
  # look once more, and release what it made.
  release_wait_mkdir
  release_found || true
}

# Releases the claim's PV; false when there is none.
release_found() {
  local json
  json=$(pv_get) || claim_fail 1 VolumeCleanupFailed "could not read PersistentVolume $PV_NAME"
  [[ -n $json ]] || return 1
  if ! pv_is_ours "$json"; then
    log_warning "pvc: PersistentVolume $PV_NAME was not made for claim $CLAIM_REF; leaving it"
    return 0
  fi
  release_volume "$json"
}

release_wanted() {
  claim_is_ours || return 1
  local problems in_use
  problems=$(config_problems)
  [[ -z $problems ]] || claim_fail 100 VolumeCleanupFailed "invalid configuration: ${problems//$'\n'/; }"
  in_use=$(claim_in_use) || claim_fail 1 VolumeCleanupFailed "could not look up the claim in the API"
  if [[ $in_use == yes ]]; then
    log_warning "pvc: claim $CLAIM_REF still exists with kubernetes.io/pvc-protection (a pod may use it); cleanup waits"
    exit 1
  fi
}

# The snapshot hook may be making the claim's directory right now: it creates the
# PVs of a Job before it deletes the Job, so once no Job serves the claim, the PV
# lookup below is final. A Job nobody deletes (the runner restarted meanwhile, and
# the claim is gone from its snapshots) is deleted after JOB_TIMEOUT and a margin.
release_wait_mkdir() {
  local jobs=() job
  mapfile -t jobs < <(kubectl get jobs -n "$JOB_NAMESPACE" -l "$CLAIM_JOB_LABEL" -o name) \
    || claim_fail 1 VolumeCleanupFailed "could not look up the Jobs making its directory"
  ((${#jobs[@]} > 0)) || return 0
  log_info "pvc: claim $CLAIM_REF deleted while ${jobs[*]} makes its directory; waiting for it to end"
  kubectl wait --for=delete -n "$JOB_NAMESPACE" "${jobs[@]}" \
    --timeout="$(($(timeout_seconds) + 30))s" >/dev/null 2>&1 && return 0
  for job in "${jobs[@]}"; do job_delete "${job#*/}"; done
}

# A DELETED event may carry the claim's last stored state, finalizers and all,
# so ask the API: "yes" while the claim (this uid) still exists and
# kubernetes.io/pvc-protection holds it (possible with the runner's
# --finalizer). A directory a pod may still be using is never removed.
claim_in_use() {
  local json
  json=$(kubectl get pvc -n "$CLAIM_NS" "$CLAIM_NAME" --ignore-not-found -o json) || return 1
  [[ -n $json ]] || { echo no; return 0; }
  jq -r --arg uid "$CLAIM_UID" 'if .metadata.uid == $uid
    and any(.metadata.finalizers[]?; . == "kubernetes.io/pvc-protection") then "yes" else "no" end' <<<"$json"
}

# No PV: an attempt whose Job made the directory may have failed to create
# the PV. Remove the directory if the claim named a real node, so nothing
# is left half-done.
release_orphan() {
  NODE=$(claim_node)
  if ! subdomain_ok "$NODE" || ! kubectl get node "$NODE" >/dev/null 2>&1; then
    log_info "pvc: claim $CLAIM_REF deleted; it has no PersistentVolume $PV_NAME and no node, nothing to clean up"
    return 0
  fi
  job_run VolumeCleanupFailed "$RM_JOB" rm rm -rf "$VOLUME_PATH"
  log_info "pvc: claim $CLAIM_REF deleted; it had no PersistentVolume, removed $NODE:$VOLUME_PATH in case an attempt made it"
}

# release_volume PV_JSON
release_volume() {
  local policy path
  policy=$(jq -r '.spec.persistentVolumeReclaimPolicy // "Delete"' <<<"$1")
  if [[ $policy != Delete ]]; then
    log_info "pvc: claim $CLAIM_REF deleted; PersistentVolume $PV_NAME and its directory are kept (reclaim policy $policy)"
    return 0
  fi
  # Never remove anything but the directory these hooks would have made.
  path=$(jq -r '.spec.local.path // empty' <<<"$1")
  [[ $path == "$VOLUME_PATH" ]] || claim_fail 100 VolumeCleanupFailed \
    "PersistentVolume $PV_NAME has local.path $(printf '%q' "$path"), expected $VOLUME_PATH; not removing it"
  NODE=$(pv_node "$1")
  node_check VolumeCleanupFailed
  job_run VolumeCleanupFailed "$RM_JOB" rm rm -rf "$VOLUME_PATH"
  kubectl delete pv "$PV_NAME" --ignore-not-found --wait=false >/dev/null \
    || claim_fail 1 VolumeCleanupFailed "removed $NODE:$VOLUME_PATH but could not delete PersistentVolume $PV_NAME"
  log_info "pvc: claim $CLAIM_REF deleted; removed $NODE:$VOLUME_PATH and deleted PersistentVolume $PV_NAME"
}
