# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# Settings and Kubernetes helpers shared by the EVC hooks. Sourced, never run.
# shellcheck source=../../lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/log.sh"
# shellcheck source=../../lib/events.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/events.sh"
# The reporter of the hooks' Events (operator event).
# shellcheck disable=SC2034  # read by events.sh
EVENTS_COMPONENT=operator-evc

EVC_LIB=$(dirname "${BASH_SOURCE[0]}")
EVC_RESOURCE=ephemeralvolumeclaims.zalando.org
# Status fields to write at the end of the hook, gathered so that one run makes
# at most one status write (each write comes back to us as a MODIFIED event).
STATUS_PATCH='{}'
# The claim's resourceVersion the status write is conditional on (status_flush).
STATUS_RV=
# Events waiting for the status write that records them (emit_event, status_flush).
PENDING_EVENTS=()
# Log lines announcing that status (note, status_flush): "LEVEL<US>message" each.
PENDING_LOGS=()
# What delete_with_uid did: deleted, gone (already) or replaced (another uid).
# shellcheck disable=SC2034  # read by the callers of delete_with_uid
DELETE_RESULT=
# "namespace/name" of the claim at hand, the prefix of every log line about it.
EVC_REF=

# jq with lib/evc.jq loaded: evc_jq PROGRAM [jq options and files].
evc_jq() {
  jq -L "$EVC_LIB" "include \"evc\"; $1" "${@:2}"
}

# Periods in whole seconds from the environment (or the runner's -E).
settings_json() {
  local name
  for name in EXPIRY_PERIOD GRACE_PERIOD COUNTDOWN_INTERVAL; do
    if [[ -n ${!name:-} && ! ${!name} =~ ^[0-9]{1,9}$ ]]; then
      log_error "$name must be a whole number of seconds, got '${!name}'"
      exit 100
    fi
  done
  # Without a process: every run reads them.
  printf '{"expiry":%d,"grace":%d,"interval":%d}\n' "$((10#${EXPIRY_PERIOD:-30}))" \
    "$((10#${GRACE_PERIOD:-30}))" "$((10#${COUNTDOWN_INTERVAL:-10}))"
}

status_set() {
  STATUS_PATCH=$(jq -c --argjson add "$1" '. + $add' <<<"$STATUS_PATCH")
}

# Writes the gathered status fields, conditional on STATUS_RV (the claim's
# resourceVersion as this run saw it): if the claim changed meanwhile (another run
# decided on it first), nothing is written and this run's Events are dropped; the next
# pass decides again. So an Event is posted once, with the status that records it.
status_flush() {
  local ns=$1 name=$2 patch out
  if [[ $STATUS_PATCH != '{}' ]]; then
    patch=$(jq -c --arg rv "${STATUS_RV:-}" '{metadata: {resourceVersion: $rv}, status: .}' <<<"$STATUS_PATCH")
    if ! out=$(kubectl patch "$EVC_RESOURCE" "$name" -n "$ns" --subresource=status --type=merge \
      -p "$patch" 2>&1 >/dev/null); then
      STATUS_PATCH='{}' PENDING_EVENTS=() PENDING_LOGS=()
      case $out in
        *Conflict* | *"has been modified"* | *NotFound*)
          log_debug "$EVC_REF: changed or gone meanwhile; decided again at the next pass"
          return 0 ;;
        *) log_error "$EVC_REF: writing the status failed: $out"; return 1 ;;
      esac
    fi
    STATUS_PATCH='{}'
  fi
  print_notes
  post_events
}

# note LEVEL MESSAGE: a log line about a status change, written once the status is
# (status_flush), so a run that loses the race to another says nothing.
note() {
  PENDING_LOGS+=("$1"$'\x1f'"$2")
}

print_notes() {
  local entry
  for entry in "${PENDING_LOGS[@]}"; do
    case ${entry%%$'\x1f'*} in
      WARNING) log_warning "${entry#*$'\x1f'}" ;;
      *) log_info "${entry#*$'\x1f'}" ;;
    esac
  done
  PENDING_LOGS=()
}

# Queues an Event about the claim (type Normal or Warning); status_flush posts it. The
# claim is the object of EVENT_FILE (the added hook's; reconcile gives each claim of a
# pass a file of its own), which is what operator event reports on.
emit_event() {
  PENDING_EVENTS+=("$2"$'\x1f'"$3"$'\x1f'"$4")
}

# Posts the queued Events (../../lib/events.sh): a repeat within 10 minutes counts on the
# existing Event. Best effort: a failure is a WARNING, the status is already written.
post_events() {
  local entry type reason message
  for entry in "${PENDING_EVENTS[@]}"; do
    IFS=$'\x1f' read -r type reason message <<<"$entry"
    event_post "$type" "$reason" "$message" || log_warning "$EVC_REF: could not post a $reason Event"
  done
  PENDING_EVENTS=()
}

# Deletes the object at an API path only if it still has this uid: a same-named
# object created meanwhile (someone else's) is left alone. Gone already is fine.
# DELETE_RESULT says which: deleted, gone or replaced.
# shellcheck disable=SC2034  # DELETE_RESULT is read by the callers
delete_with_uid() {
  local path=$1 uid=$2 body out
  body=$(mktemp)
  jq -n --arg uid "$uid" \
    '{kind: "DeleteOptions", apiVersion: "v1", preconditions: {uid: $uid}}' >"$body"
  DELETE_RESULT=deleted
  if out=$(kubectl delete --raw "$path" -f "$body" 2>&1); then
    rm -f "$body"
    return 0
  fi
  rm -f "$body"
  case $out in
    *NotFound* | *"not found"*) DELETE_RESULT=gone; return 0 ;;
    *Conflict* | *"Precondition failed"*)
      DELETE_RESULT=replaced
      log_warning "$EVC_REF: not deleted, $path was replaced: $out" ;;
    *) log_error "$EVC_REF: deleting $path failed: $out"; return 1 ;;
  esac
}
