# shellcheck shell=bash
# ADDED and MODIFIED: a claim of STORAGE_CLASS that names a node gets a
# directory there (made by a Job) and a PersistentVolume bound to it.
# Every kubectl run costs ~50 ms of CPU: with hundreds of claims at once that is
# the bill, so what the hook needs from the cluster comes in one run (lookup).

provision_claim() {
  claim_load
  provision_wanted || return 0
  NODE=$(claim_node)
  lookup
  pv_exists_already && return 0
  read_request
  pick_node
  local policy
  policy=$(lookup_policy)
  job_run ProvisioningFailed "$MKDIR_JOB" mkdir mkdir -p "$VOLUME_PATH"
  pv_create "$policy"
}

# Claims of another class, bound, pre-bound to another volume or being
# deleted are not ours to provision.
provision_wanted() {
  claim_is_ours || return 1
  local problems
  if [[ -n $CLAIM_DELETING ]]; then
    log_info "pvc: claim $CLAIM_REF is being deleted; not provisioning"; return 1
  fi
  if [[ $CLAIM_PHASE == Bound ]]; then
    log_info "pvc: claim $CLAIM_REF is Bound; nothing to do"; return 1
  fi
  if [[ -n $CLAIM_VOLUME && $CLAIM_VOLUME != "$PV_NAME" ]]; then
    log_info "pvc: claim $CLAIM_REF asks for volume $(printf '%q' "$CLAIM_VOLUME"); not provisioning"; return 1
  fi
  problems=$(config_problems)
  [[ -z $problems ]] || claim_fail 100 ProvisioningFailed "invalid configuration: ${problems//$'\n'/; }"
}

# One kubectl run for the claim's PV, its node, the StorageClass and the mkdir Job:
# LOOKUP_PV (JSON or empty), LOOKUP_NODE (yes/no), LOOKUP_POLICY (the class's
# reclaimPolicy or empty), JOB_STATE (as job_state says).
lookup() {
  local out err names=("pv/$PV_NAME" "job/$MKDIR_JOB") fields
  [[ -z $RECLAIM_POLICY ]] && names+=("storageclass/$STORAGE_CLASS")
  subdomain_ok "$NODE" && names+=("node/$NODE")
  err=$(mktemp)
  if ! out=$(kubectl get "${names[@]}" -n "$JOB_NAMESPACE" --ignore-not-found -o json 2>"$err"); then
    out=$(<"$err")
    rm -f "$err"
    claim_fail 1 ProvisioningFailed "could not look up PersistentVolume $PV_NAME, node, StorageClass and Job: $out"
  fi
  rm -f "$err"
  mapfile -d '' -t fields < <(jq -j --arg pv "$PV_NAME" --arg node "$NODE" --arg job "$MKDIR_JOB" \
    --arg class "$STORAGE_CLASS" "def job_state: $JOB_STATE_JQ;"'
    def one($kind; $name): [.items[]? | select(.kind == $kind and .metadata.name == $name)] | first;
    [(one("PersistentVolume"; $pv) | if . then tojson else "" end),
     (if one("Node"; $node) then "yes" else "no" end),
     (one("StorageClass"; $class).reclaimPolicy // ""),
     (one("Job"; $job) | if . == null then "missing" else job_state end)]
    | map(. + "\u0000") | add' <<<"${out:-"{}"}")
  ((${#fields[@]} == 4)) || claim_fail 1 ProvisioningFailed "could not read the lookup of PersistentVolume $PV_NAME"
  # shellcheck disable=SC2034  # JOB_STATE is read by job_start (lib/job.sh)
  LOOKUP_PV=${fields[0]} LOOKUP_NODE=${fields[1]} LOOKUP_POLICY=${fields[2]} JOB_STATE=${fields[3]}
}

# RECLAIM_POLICY, else the StorageClass's reclaimPolicy, else Kubernetes' Delete.
lookup_policy() {
  if [[ -n $RECLAIM_POLICY ]]; then echo "$RECLAIM_POLICY"; else echo "${LOOKUP_POLICY:-Delete}"; fi
}

# A PV made by an earlier run (replayed ADDED, repeated MODIFIED) ends the work.
pv_exists_already() {
  [[ -n $LOOKUP_PV ]] || return 1
  pv_is_ours "$LOOKUP_PV" || claim_fail 100 ProvisioningFailed "PersistentVolume $PV_NAME exists but was not made for this claim"
  log_info "pvc: claim $CLAIM_REF already has PersistentVolume $PV_NAME; Kubernetes binds them"
}

# SIZE, MODE and MODES (JSON array) from the claim's spec.
read_request() {
  SIZE=$CLAIM_SIZE
  [[ -n $SIZE ]] || claim_fail 100 ProvisioningFailed "no storage size requested (spec.resources.requests.storage)"
  [[ $SIZE =~ $QUANTITY_RE ]] || claim_fail 100 ProvisioningFailed "storage request $(printf '%q' "$SIZE") is not a quantity"
  MODE=${CLAIM_MODE:-Filesystem}
  [[ $MODE == Filesystem ]] || claim_fail 100 ProvisioningFailed "volumeMode $(printf '%q' "$MODE") is not supported: a directory is a Filesystem volume"
  MODES=$CLAIM_MODES
  jq -e 'length > 0 and all(.[]; IN("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"))' \
    <<<"$MODES" >/dev/null || claim_fail 100 ProvisioningFailed "access modes $MODES are missing or unknown"
}

# NODE from the claim. None yet (e.g. WaitForFirstConsumer before scheduling)
# is not an error: a Warning Event says why, a later MODIFIED event retries.
pick_node() {
  if [[ -z $NODE ]]; then
    log_info "pvc: claim $CLAIM_REF names no node (selector $HOSTNAME_KEY or annotation volume.kubernetes.io/selected-node); no volume yet"
    event_warning NoNodeSelected "no node chosen: set spec.selector.matchLabels[\"$HOSTNAME_KEY\"], or use a WaitForFirstConsumer class" \
      || log_warning "pvc: could not post a NoNodeSelected Event on claim $CLAIM_REF"
    exit 0
  fi
  subdomain_ok "$NODE" || claim_fail 100 ProvisioningFailed "node name $(printf '%q' "$NODE") is not a valid node name"
  [[ $LOOKUP_NODE == yes ]] || claim_fail 100 ProvisioningFailed "node $NODE does not exist"
}

# pv_create POLICY
pv_create() {
  local out
  if ! out=$(pv_manifest "$1" | kubectl create -f - 2>&1); then
    claim_fail 1 ProvisioningFailed "could not create PersistentVolume $PV_NAME: $out"
  fi
  log_info "pvc: created PersistentVolume $PV_NAME ($SIZE, reclaim policy $1) at $NODE:$VOLUME_PATH for claim $CLAIM_REF"
}
