# shellcheck shell=bash
# DELETED: the claim is gone (the event holds its last state). Its PV is
# found by the uid-derived name; with reclaim policy Delete a Job removes the
# directory, then the PV is deleted. Retain keeps both.

release_claim() {
  claim_load
  release_wanted || return 0
  local json
  # A provisioning attempt cut short may have left its Job.
  job_delete "$MKDIR_JOB"
  json=$(pv_get) || claim_fail 1 VolumeCleanupFailed "could not read PersistentVolume $PV_NAME"
  if [[ -z $json ]]; then
    log_info "pvc: claim $CLAIM_REF deleted; it has no PersistentVolume $PV_NAME, nothing to clean up"
    return 0
  fi
  if ! pv_is_ours "$json"; then
    log_warning "pvc: PersistentVolume $PV_NAME was not made for claim $CLAIM_REF; leaving it"
    return 0
  fi
  release_volume "$json"
}

release_wanted() {
  claim_is_ours || return 1
  local problems
  problems=$(config_problems)
  [[ -z $problems ]] || claim_fail 100 VolumeCleanupFailed "invalid configuration: ${problems//$'\n'/; }"
  # Normally DELETED comes after Kubernetes let go of the claim. If a pod may
  # still use it (e.g. the runner's --finalizer), its directory must stay.
  if jq -e 'any(.object.metadata.finalizers[]?; . == "kubernetes.io/pvc-protection")' \
    "$EVENT_FILE" >/dev/null; then
    log_warning "pvc: claim $CLAIM_REF is deleted but may still be in use (kubernetes.io/pvc-protection); not cleaning up yet"
    exit 1
  fi
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
