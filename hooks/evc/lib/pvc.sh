# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The claim's PersistentVolumeClaim once it exists: its labels and size follow the claim's.
# Creating it, and refusing someone else's PVC of that name, is the runs' (lib/evc.jq
# claim_plan, lib/bulk.sh). Sourced after common.sh.

pvc_get() {
  kubectl get persistentvolumeclaim "$2" -n "$1" -o json --ignore-not-found
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

# sync_pvc EVC PVC: the PVC owned by the claim (the pass checked that and made a missing
# one in bulk, lib/bulk.sh): the claim's labels copied, a new spec.size applied.
sync_pvc() {
  local evc=$1 pvc=$2 ns name
  read -r ns name < <(jq -r '.metadata | "\(.namespace) \(.name)"' <<<"$evc")
  pvc_sync_labels "$evc" "$pvc" "$ns" "$name"
  pvc_resize "$evc" "$pvc" "$ns" "$name"
}
