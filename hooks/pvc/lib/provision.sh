# shellcheck shell=bash
# ADDED and MODIFIED: a claim of STORAGE_CLASS that names a node gets a
# directory there (made by a Job) and a PersistentVolume bound to it.

provision_claim() {
  claim_load
  provision_wanted || return 0
  pv_exists_already && return 0
  read_request
  pick_node
  local policy
  policy=$(reclaim_policy) || claim_fail 1 ProvisioningFailed "could not read StorageClass $STORAGE_CLASS"
  job_run ProvisioningFailed "$MKDIR_JOB" mkdir mkdir -p "$VOLUME_PATH"
  pv_create "$policy"
}

# Claims of another class, bound, pre-bound to another volume or being
# deleted are not ours to provision.
provision_wanted() {
  claim_is_ours || return 1
  local problems volume
  if [[ -n $CLAIM_DELETING ]]; then
    log_info "pvc: claim $CLAIM_REF is being deleted; not provisioning"; return 1
  fi
  if [[ $CLAIM_PHASE == Bound ]]; then
    log_info "pvc: claim $CLAIM_REF is Bound; nothing to do"; return 1
  fi
  volume=$(claim_get .spec.volumeName)
  if [[ -n $volume && $volume != "$PV_NAME" ]]; then
    log_info "pvc: claim $CLAIM_REF asks for volume $(printf '%q' "$volume"); not provisioning"; return 1
  fi
  problems=$(config_problems)
  [[ -z $problems ]] || claim_fail 100 ProvisioningFailed "invalid configuration: ${problems//$'\n'/; }"
}

# A PV made by an earlier run (replayed ADDED, repeated MODIFIED) ends the work.
pv_exists_already() {
  local json
  json=$(pv_get) || claim_fail 1 ProvisioningFailed "could not read PersistentVolume $PV_NAME"
  [[ -n $json ]] || return 1
  pv_is_ours "$json" || claim_fail 100 ProvisioningFailed "PersistentVolume $PV_NAME exists but was not made for this claim"
  log_info "pvc: claim $CLAIM_REF already has PersistentVolume $PV_NAME; Kubernetes binds them"
}

# SIZE, MODE and MODES (JSON array) from the claim's spec.
read_request() {
  SIZE=$(claim_get .spec.resources.requests.storage)
  [[ -n $SIZE ]] || claim_fail 100 ProvisioningFailed "no storage size requested (spec.resources.requests.storage)"
  [[ $SIZE =~ $QUANTITY_RE ]] || claim_fail 100 ProvisioningFailed "storage request $(printf '%q' "$SIZE") is not a quantity"
  MODE=$(claim_get .spec.volumeMode)
  MODE=${MODE:-Filesystem}
  [[ $MODE == Filesystem ]] || claim_fail 100 ProvisioningFailed "volumeMode $(printf '%q' "$MODE") is not supported: a directory is a Filesystem volume"
  MODES=$(jq -c '.object.spec.accessModes // []' "$EVENT_FILE")
  jq -e 'length > 0 and all(.[]; IN("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"))' \
    <<<"$MODES" >/dev/null || claim_fail 100 ProvisioningFailed "access modes $MODES are missing or unknown"
}

# NODE from the claim. None yet (e.g. WaitForFirstConsumer before scheduling)
# is not an error: a Warning Event says why, a later MODIFIED event retries.
pick_node() {
  NODE=$(claim_node)
  if [[ -z $NODE ]]; then
    log_info "pvc: claim $CLAIM_REF names no node (selector $HOSTNAME_KEY or annotation volume.kubernetes.io/selected-node); no volume yet"
    event_warning NoNodeSelected "no node chosen: set spec.selector.matchLabels[\"$HOSTNAME_KEY\"], or use a WaitForFirstConsumer class" \
      || log_warning "pvc: could not post a NoNodeSelected Event on claim $CLAIM_REF"
    exit 0
  fi
  node_check ProvisioningFailed
}

# pv_create POLICY
pv_create() {
  local out
  if ! out=$(pv_manifest "$1" | kubectl create -f - 2>&1); then
    claim_fail 1 ProvisioningFailed "could not create PersistentVolume $PV_NAME: $out"
  fi
  log_info "pvc: created PersistentVolume $PV_NAME ($SIZE, reclaim policy $1) at $NODE:$VOLUME_PATH for claim $CLAIM_REF"
}
