# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# Settings and Kubernetes helpers shared by the EVC hooks. Sourced, never run.
# shellcheck source=../../lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/log.sh"

EVC_LIB=$(dirname "${BASH_SOURCE[0]}")
EVC_RESOURCE=ephemeralvolumeclaims.zalando.org
# Status fields to write at the end of the hook, gathered so that one run makes
# at most one status write (each write comes back to us as a MODIFIED event).
STATUS_PATCH='{}'
# "namespace/name" of the claim at hand, the prefix of every log line about it.
EVC_REF=
# Set by ensure_pvc (pvc.sh) when the claim cannot have its PVC: no lifecycle then.
# shellcheck disable=SC2034  # read by reconcile in lifecycle.sh
CLAIM_FAILED=

# jq with lib/evc.jq loaded: evc_jq PROGRAM [jq options and files].
evc_jq() {
  jq -L "$EVC_LIB" "include \"evc\"; $1" "${@:2}"
}

# Periods in whole seconds from the environment (or the runner's -E).
settings_json() {
  local name
  for name in EXPIRY_PERIOD GRACE_PERIOD COUNTDOWN_INTERVAL; do
    if [[ -n ${!name:-} && ! ${!name} =~ ^[0-9]+$ ]]; then
      log_error "$name must be a whole number of seconds, got '${!name}'"
      exit 100
    fi
  done
  jq -cn --argjson e "${EXPIRY_PERIOD:-30}" --argjson g "${GRACE_PERIOD:-30}" \
    --argjson i "${COUNTDOWN_INTERVAL:-10}" '{expiry: $e, grace: $g, interval: $i}'
}

# The claim as the server has it now (events may be stale), or nothing if gone.
evc_get() {
  kubectl get "$EVC_RESOURCE" "$2" -n "$1" -o json --ignore-not-found
}

status_set() {
  STATUS_PATCH=$(jq -c --argjson add "$1" '. + $add' <<<"$STATUS_PATCH")
}

status_flush() {
  local ns=$1 name=$2
  [[ $STATUS_PATCH != '{}' ]] || return 0
  kubectl patch "$EVC_RESOURCE" "$name" -n "$ns" --subresource=status --type=merge \
    -p "$(jq -c '{status: .}' <<<"$STATUS_PATCH")" >/dev/null
  STATUS_PATCH='{}'
}

# Records a core/v1 Event about the claim: type Normal or Warning.
emit_event() {
  local evc=$1 type=$2 reason=$3 message=$4
  jq -n --argjson evc "$evc" --arg type "$type" --arg reason "$reason" \
    --arg message "$message" --arg now "$(date -u +%FT%TZ)" '
    {apiVersion: "v1", kind: "Event",
     metadata: {generateName: "\($evc.metadata.name).", namespace: $evc.metadata.namespace},
     involvedObject: {apiVersion: "zalando.org/v1", kind: "EphemeralVolumeClaim",
                      name: $evc.metadata.name, namespace: $evc.metadata.namespace,
                      uid: $evc.metadata.uid},
     type: $type, reason: $reason, message: $message, count: 1,
     firstTimestamp: $now, lastTimestamp: $now, source: {component: "operator-evc"}}' |
    kubectl create -f - >/dev/null
}

# Deletes the object at an API path only if it still has this uid: a same-named
# object created meanwhile (someone else's) is left alone. Gone already is fine.
delete_with_uid() {
  local path=$1 uid=$2 body out
  body=$(mktemp)
  jq -n --arg uid "$uid" \
    '{kind: "DeleteOptions", apiVersion: "v1", preconditions: {uid: $uid}}' >"$body"
  if out=$(kubectl delete --raw "$path" -f "$body" 2>&1); then
    rm -f "$body"
    return 0
  fi
  rm -f "$body"
  case $out in
    *NotFound* | *"not found"*) return 0 ;;
    *Conflict* | *"Precondition failed"*) log_warning "$EVC_REF: not deleted, $path was replaced: $out" ;;
    *) log_error "$EVC_REF: deleting $path failed: $out"; return 1 ;;
  esac
}
