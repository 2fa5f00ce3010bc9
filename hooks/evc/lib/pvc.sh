# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The claim's PersistentVolumeClaim: created once, owned by the claim, never
# adopted when someone else's PVC has the name. Sourced after common.sh.

pvc_get() {
  kubectl get persistentvolumeclaim "$2" -n "$1" -o json --ignore-not-found
}

# Marks the claim Failed; the Event and log line only come with a new message.
fail_claim() {
  local evc=$1 reason=$2 message=$3
  CLAIM_FAILED=1
  if jq -e --arg m "$message" '.status.phase == "Failed" and .status.message == $m' \
    <<<"$evc" >/dev/null; then
    return 0
  fi
  note WARNING "$EVC_REF: $message"
  emit_event "$evc" Warning "$reason" "$message"
  status_set "$(jq -cn --arg m "$message" \
    '{phase: "Failed", message: $m, deadline: null, countdownLogged: null}')"
}

pvc_create() {
  local evc=$1 ns=$2 name=$3 size
  size=$(evc_jq 'size_of' -r <<<"$evc")
  if ! evc_jq 'size_of | valid_size' -e <<<"$evc" >/dev/null; then
    fail_claim "$evc" InvalidSize \
      "spec.size must be a positive quantity such as 1Gi, got '$size'; no PVC created"
    return 0
  fi
  local out
  # adopt (../../lib/children.sh): the claim of EVENT_FILE becomes the PVC's controller.
  if ! out=$(evc_jq 'pvc_manifest' <<<"$evc" | adopt | kubectl create -f - 2>&1 >/dev/null); then
    # Made meanwhile by the other path (added hook or sync-all): the next pass checks it.
    [[ $out == *AlreadyExists* ]] || { log_error "$EVC_REF: creating PVC $ns/$name failed: $out"; return 1; }
    log_debug "$EVC_REF: PVC $ns/$name was created meanwhile"
    return 0
  fi
  log_info "$EVC_REF: Created PVC $ns/$name of $size"
  status_set "$(jq -cn --arg s "$size" '{size: $s}')"
}

pvc_sync_labels() {
  local evc=$1 pvc=$2 ns=$3 name=$4 patch
  patch=$(evc_jq 'label_patch($evc; .)' -c --argjson evc "$evc" <<<"$pvc")
  [[ $patch != null ]] || return 0
  kubectl patch persistentvolumeclaim "$name" -n "$ns" --type=merge -p "$patch" >/dev/null
  log_info "$EVC_REF: Copied the labels to PVC $ns/$name: $(jq -c '.metadata.labels' <<<"$patch")"
}

# Applies a spec.size not handled yet; refusals become Warning Events, once.
pvc_resize() {
  local evc=$1 pvc=$2 ns=$3 name=$4 size verdict
  size=$(evc_jq 'size_of' -r <<<"$evc")
  [[ $size != "$(jq -r '.status.size // ""' <<<"$evc")" ]] || return 0
  verdict=$(evc_jq 'resize_verdict($evc; .)' -r --argjson evc "$evc" <<<"$pvc")
  case $verdict in
    grow) pvc_grow "$evc" "$ns" "$name" "$size" ;;
    shrink) emit_event "$evc" Warning ShrinkNotSupported \
      "spec.size $size is smaller than the PVC's request; a PVC cannot shrink" ;;
    invalid) emit_event "$evc" Warning InvalidSize \
      "spec.size must be a positive quantity such as 1Gi, got '$size'; PVC left as it is" ;;
  esac
  status_set "$(jq -cn --arg s "$size" '{size: $s}')"
}

# The server refuses expansion unless the StorageClass allows it (and the PVC is
# bound): its reason goes into the Event. Other errors are retried by the runner.
pvc_grow() {
  local evc=$1 ns=$2 name=$3 size=$4 patch out
  patch=$(jq -cn --arg s "$size" '{spec: {resources: {requests: {storage: $s}}}}')
  if out=$(kubectl patch persistentvolumeclaim "$name" -n "$ns" --type=merge -p "$patch" 2>&1); then
    log_info "$EVC_REF: Requested $size for PVC $ns/$name"
    return 0
  fi
  out=${out%%$'\n'*}
  case $out in
    *Forbidden* | *Invalid* | *forbidden* | *invalid*)
      log_warning "$EVC_REF: PVC $ns/$name not resized to $size: $out"
      emit_event "$evc" Warning ResizeRefused "PVC not resized to $size: $out" ;;
    *) log_error "$EVC_REF: resizing PVC $ns/$name failed: $out"; return 1 ;;
  esac
}

# Creates or updates the PVC; sets CLAIM_FAILED when the claim cannot have one.
# ensure_pvc EVC [PVC]: PVC, when given, is the PVC as just listed ("null": none), which
# saves reading it again.
ensure_pvc() {
  local evc=$1 ns name uid pvc=${2:-}
  read -r ns name uid < <(jq -r '.metadata | "\(.namespace) \(.name) \(.uid)"' <<<"$evc")
  # shellcheck disable=SC2034  # read by reconcile in lifecycle.sh
  CLAIM_FAILED=
  if [[ -z $pvc ]]; then pvc=$(pvc_get "$ns" "$name"); elif [[ $pvc == null ]]; then pvc=; fi
  if [[ -z $pvc ]]; then
    pvc_create "$evc" "$ns" "$name"
  elif ! evc_jq 'owned_by($uid)' -e --arg uid "$uid" <<<"$pvc" >/dev/null; then
    fail_claim "$evc" NameConflict \
      "PVC $ns/$name exists and is not owned by this EphemeralVolumeClaim; it is left alone"
  else
    pvc_sync_labels "$evc" "$pvc" "$ns" "$name"
    pvc_resize "$evc" "$pvc" "$ns" "$name"
  fi
}
