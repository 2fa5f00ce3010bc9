# shellcheck shell=bash
# shellcheck disable=SC2034  # globals set here are read by the other libraries
# The claim of the current event, read from $EVENT_FILE with jq (label and
# annotation keys hold dots and slashes, which the flattened EVENT_OBJECT_*
# variables cannot tell apart), and the names derived from it.

UUID_RE='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
DNS_LABEL_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
DNS_SUBDOMAIN_RE='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'
QUANTITY_RE='^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?$'

# claim_get FILTER: one field of the claim, empty when absent. FILTER is always
# a constant of these scripts; nothing from the claim becomes jq code.
claim_get() {
  jq -r "(.object | $1) // empty | tostring" "$EVENT_FILE"
}

subdomain_ok() { [[ ${#1} -le 253 && $1 =~ $DNS_SUBDOMAIN_RE ]]; }

# Loads CLAIM_* (and the raw request: CLAIM_SIZE, CLAIM_MODE, CLAIM_MODES, CLAIM_NODE)
# in one jq run, then the derived names. The apiserver already validated name,
# namespace and uid; they are checked again because they end up in a path.
claim_load() {
  [[ -n ${EVENT_FILE:-} && -r $EVENT_FILE ]] || { log_error "pvc: EVENT_FILE is unset or unreadable"; exit 100; }
  local fields
  # NUL-separated: no value can end a field early, whatever it holds.
  mapfile -d '' -t fields < <(jq -j '.object | [.metadata.namespace, .metadata.name, .metadata.uid,
      (.spec.storageClassName // .metadata.annotations["volume.beta.kubernetes.io/storage-class"]),
      .status.phase, .metadata.deletionTimestamp, .spec.volumeName,
      ([.spec.selector.matchLabels["kubernetes.io/hostname"],
        .metadata.annotations["volume.kubernetes.io/selected-node"]] | map(select(. != null and . != "")) | first),
      .spec.resources.requests.storage, .spec.volumeMode, (.spec.accessModes // [] | tojson)]
    | map((. // "" | tostring) + "\u0000") | add' "$EVENT_FILE")
  ((${#fields[@]} == 11)) || { log_error "pvc: cannot read the claim from EVENT_FILE"; exit 100; }
  CLAIM_NS=${fields[0]} CLAIM_NAME=${fields[1]} CLAIM_UID=${fields[2]}
  CLAIM_REF=$(printf '%q/%q' "$CLAIM_NS" "$CLAIM_NAME")
  if [[ ! $CLAIM_NS =~ $DNS_LABEL_RE ]] || ! subdomain_ok "$CLAIM_NAME" || [[ ! $CLAIM_UID =~ $UUID_RE ]]; then
    log_error "pvc: refusing claim $CLAIM_REF with uid $(printf '%q' "$CLAIM_UID"): not a valid namespace, name and uid"
    exit 100
  fi
  CLAIM_CLASS=${fields[3]} CLAIM_PHASE=${fields[4]} CLAIM_DELETING=${fields[5]}
  CLAIM_VOLUME=${fields[6]} CLAIM_NODE=${fields[7]} CLAIM_SIZE=${fields[8]}
  CLAIM_MODE=${fields[9]} CLAIM_MODES=${fields[10]}
  claim_names
}

# PV, directory and Job names depend on the uid (unique across namespaces and
# across a delete and re-create of the same name), so a replayed event finds
# what an earlier run made. The directory also names namespace and claim for
# people looking at the disk; DNS names hold no "_" or "/", so it is one
# unambiguous path component, cut to stay far below NAME_MAX.
claim_names() {
  PV_NAME="pvc-$CLAIM_UID"
  DIR_NAME="pvc-${CLAIM_UID}_${CLAIM_NS}_${CLAIM_NAME}"
  DIR_NAME=${DIR_NAME:0:200}
  VOLUME_PATH="$VOLUMES_DIR/$DIR_NAME"
  RM_JOB="pvc-$CLAIM_UID-rm"
  # The label of the snapshot hook's mkdir Jobs that serve this claim (manifests.jq).
  CLAIM_JOB_LABEL="operator-pvc/claim-$CLAIM_UID"
}

# True when the claim asks for STORAGE_CLASS; says so at INFO otherwise.
claim_is_ours() {
  [[ $CLAIM_CLASS == "$STORAGE_CLASS" ]] && return 0
  log_info "pvc: ignoring claim $CLAIM_REF of storage class '${CLAIM_CLASS:-<none>}' (handling '$STORAGE_CLASS')"
  return 1
}

# The node that should hold the volume: the claim's selector, or the node the
# scheduler picked for a WaitForFirstConsumer class.
claim_node() {
  printf '%s' "$CLAIM_NODE"
}

# claim_fail CODE REASON MESSAGE: ERROR line plus a Warning Event on the
# claim, then ends the hook with CODE (1 = retry later, 100 = permanent).
claim_fail() {
  local code=$1 reason=$2 message=$3
  log_error "pvc: claim $CLAIM_REF: $message"
  event_warning "$reason" "$message" || log_warning "pvc: could not post a $reason Event on claim $CLAIM_REF"
  exit "$code"
}
