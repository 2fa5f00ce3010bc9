# shellcheck shell=bash
# shellcheck disable=SC2034  # JOB_RESULT is read by lib/snapshot.sh
# Waiting for the mkdir Jobs of a snapshot run: one watch on their label for all of
# them (the hook sleeps in read until the API server reports a change; no polling),
# bounded by JOB_TIMEOUT.

MKDIR_SELECTOR="app.kubernetes.io/managed-by=$MANAGED_BY,app.kubernetes.io/component=mkdir"
# One line per Job: NAME UID DELETION|SUCCEEDED|FAILED|CONDITIONS; the watch's
# lines start with the event's TYPE.
JOBS_LINE='{.metadata.name} {.metadata.uid} {.metadata.deletionTimestamp}|{.status.succeeded}|{.status.failed}|{range .status.conditions[*]}{.type}={.status},{end}{"\n"}'
JOBS_WATCH_LINE='{.type} {.object.metadata.name} {.object.metadata.uid} {.object.metadata.deletionTimestamp}|{.object.status.succeeded}|{.object.status.failed}|{range .object.status.conditions[*]}{.type}={.status},{end}{"\n"}'
# NAME -> "STATE UID" of the Jobs waited for; STATE: succeeded, failed, missing, timeout
# (read by lib/snapshot.sh).
declare -gA JOB_RESULT=()

# jobs_wait NAME...: until every named Job ended or JOB_TIMEOUT passed. A watch
# that ends early (the server closed it) is followed by one list, then another watch.
jobs_wait() {
  local -A pending=()
  local name deadline
  for name; do pending[$name]=1; done
  deadline=$((SECONDS + $(timeout_seconds)))
  while ((${#pending[@]} > 0 && SECONDS < deadline)); do
    jobs_watch $((deadline - SECONDS))
    ((${#pending[@]} > 0)) || break
    jobs_list || true
    ((${#pending[@]} == 0 || SECONDS >= deadline)) || sleep 1 # API errors: no busy loop
  done
  for name in "${!pending[@]}"; do JOB_RESULT[$name]="timeout -"; done
}

# jobs_note NAME UID STATUS [DELETED]: records a pending Job that has ended.
jobs_note() {
  local state='' succeeded failed conditions
  [[ -n ${pending[$1]:-} ]] || return 0
  IFS='|' read -r _ succeeded failed conditions <<<"$3"
  if [[ $succeeded =~ ^[0-9]+$ ]] && ((10#$succeeded > 0)); then state=succeeded
  elif [[ $failed =~ ^[0-9]+$ ]] && ((10#$failed > 0)) || [[ $conditions == *Failed=True* ]]; then state=failed
  elif [[ ${4:-} == DELETED ]]; then state=missing
  fi
  [[ -n $state ]] || return 0
  JOB_RESULT[$1]="$state $2"
  unset "pending[$1]"
}

# jobs_watch SECONDS: follows the mkdir Jobs until every pending one ended.
jobs_watch() {
  local fd pid type name uid status
  exec {fd}< <(exec timeout "$1" kubectl get jobs -n "$JOB_NAMESPACE" -l "$MKDIR_SELECTOR" --watch \
    --output-watch-events -o "jsonpath=$JOBS_WATCH_LINE" 2>/dev/null)
  pid=$!
  while ((${#pending[@]} > 0)) && read -r -u "$fd" type name uid status; do
    jobs_note "$name" "$uid" "$status" "$type"
  done
  kill "$pid" 2>/dev/null || true
  exec {fd}<&-
}

# jobs_list: one look at the mkdir Jobs; a pending one that is gone is missing.
jobs_list() {
  local out name uid status
  local -A seen=()
  out=$(kubectl get jobs -n "$JOB_NAMESPACE" -l "$MKDIR_SELECTOR" \
    -o "jsonpath={range .items[*]}$JOBS_LINE{end}") || return 1
  while read -r name uid status; do
    [[ -n $name ]] || continue
    seen[$name]=1
    jobs_note "$name" "$uid" "$status"
  done <<<"$out"
  for name in "${!pending[@]}"; do
    [[ -n ${seen[$name]:-} ]] || { JOB_RESULT[$name]="missing -"; unset "pending[$name]"; }
  done
}
