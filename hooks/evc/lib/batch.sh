# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# One pass over every claim (the sync-all hook). The cost is a handful of processes
# per pass, whatever the number of claims: per namespace one list of pods and one of
# PVCs, one jq run deciding every claim (lib/evc.jq, plan), one kubectl run writing
# every changed status. Only claims whose PVC needs work, and deadlines reached, cost
# processes of their own.
# shellcheck source=lifecycle.sh
source "$(dirname "${BASH_SOURCE[0]}")/lifecycle.sh"

NAMESPACE_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'

# index_namespace NS: {"NS": {claims: pods by claim, pvcs: PVCs by name}}, one line.
# --raw skips kubectl's decoding and re-encoding of thousands of objects.
index_namespace() {
  local ns=$1 pods pvcs
  pods=$(kubectl get --raw "/api/v1/namespaces/$ns/pods" | evc_jq 'pods_by_claim' -c)
  pvcs=$(kubectl get --raw "/api/v1/namespaces/$ns/persistentvolumeclaims" | evc_jq 'pvcs_by_name' -c)
  jq -cn --arg ns "$ns" --argjson claims "$pods" --argjson pvcs "$pvcs" '{($ns): {claims: $claims, pvcs: $pvcs}}'
}

# write_statuses WRITES OK: replaces the status of every claim in WRITES (plan lines
# {do: "write", object}) in one kubectl run; each write is conditional on the claim's
# resourceVersion. Prints nothing; the refs written go to OK, one per line.
write_statuses() {
  local writes=$1 ok=$2 out
  [[ -s $writes ]] || return 0
  if ! out=$(jq -s '{apiVersion: "v1", kind: "List", items: map(.object)}' "$writes" |
    kubectl replace --subresource=status -f - \
      -o jsonpath='{.metadata.namespace}/{.metadata.name}{"\n"}' 2>&1 >"$ok"); then
    # Claims changed since the pass began (Conflict) are decided again at the next pass.
    local conflicts others
    conflicts=$(grep -c 'Conflict\|has been modified' <<<"$out" || true)
    others=$(grep -v 'Conflict\|has been modified' <<<"$out" || true)
    log_debug "evc: $conflicts status writes skipped: the claims changed meanwhile"
    [[ -z $others ]] || log_error "evc: writing statuses failed: ${others//$'\n'/; }"
  fi
}

# Log lines of the claims whose status was written: they announce that status.
log_written() {
  local writes=$1 ok=$2 line
  [[ -s $writes ]] || return 0
  while IFS= read -r line; do
    log_info "$line"
  done < <(jq -rn --rawfile ok "$ok" '
    ($ok | split("\n") | map(select(. != "") | {(.): true}) | add // {}) as $done
    | inputs | select($done[.ref]) | .logs[]' "$writes")
}

# delete_due DELETES: the claims whose deadline passed (plan lines {do: "delete"}).
delete_due() {
  local deletes=$1 ref path uid kind
  [[ -s $deletes ]] || return 0
  while IFS=$'\t' read -r ref path uid kind; do
    EVC_REF=$ref
    # Logged only when this run deleted it: a pass may come after the claim went.
    delete_with_uid "$path" "$uid" || continue
    [[ $DELETE_RESULT != deleted ]] || log_info "$ref: Countdown to $kind: reached! Deleting the EVC."
  done < <(jq -r '[.ref, .path, .uid, .kind] | @tsv' "$deletes")
}

# reconcile_each RECONCILES: the one-by-one path, each claim in a process of its own
# so that one failing claim does not end the pass (set -e holds inside it).
reconcile_each() {
  local reconciles=$1 line ref
  [[ -s $reconciles ]] || return 0
  while IFS= read -r line; do
    (reconcile "$(jq -c '.evc' <<<"$line")" "$(jq -c '.pods' <<<"$line")") &
    if ! wait $!; then
      ref=$(jq -r '.evc.metadata | "\(.namespace)/\(.name)"' <<<"$line")
      log_warning "$ref: not reconciled in this pass; the next pass tries again"
    fi
  done <"$reconciles"
}

# sync_all EVENT_FILE: the whole pass.
sync_all() {
  local file=$1 work ns started=$EPOCHREALTIME count
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # $work is fixed now
  trap "rm -rf '$work'" EXIT
  : >"$work/index"
  while IFS= read -r ns; do
    [[ $ns =~ $NAMESPACE_RE ]] || { log_error "evc: skipping claims of namespace '$ns': not a namespace name"; continue; }
    index_namespace "$ns" >>"$work/index"
  done < <(jq -r '[.objects[].metadata.namespace] | unique[]' "$file")
  evc_jq 'plan($now; $cfg; $index[0] // {})' -c --slurpfile index <(jq -s 'add // {}' "$work/index") \
    --argjson now "$(date -u +%s)" --argjson cfg "$(settings_json)" "$file" |
    while IFS= read -r line; do
      case $line in
        '{"do":"write"'*) printf '%s\n' "$line" >>"$work/writes" ;;
        '{"do":"delete"'*) printf '%s\n' "$line" >>"$work/deletes" ;;
        *) printf '%s\n' "$line" >>"$work/reconciles" ;;
      esac
    done
  touch "$work/writes" "$work/deletes" "$work/reconciles" "$work/ok"
  write_statuses "$work/writes" "$work/ok"
  log_written "$work/writes" "$work/ok"
  delete_due "$work/deletes"
  reconcile_each "$work/reconciles"
  count=$(jq '.objects | length' "$file")
  log_info "evc: pass over $count claims: $(wc -l <"$work/ok") statuses written, $(wc -l <"$work/deletes") deleted, $(wc -l <"$work/reconciles") one by one, in $(elapsed "$started")s"
}

# Seconds since START ($EPOCHREALTIME), with milliseconds.
elapsed() {
  local us=$((${EPOCHREALTIME/./} - ${1/./}))
  printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
}
