# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# One pass over every claim (the sync-all hook). The cost is a handful of processes
# per pass, whatever the number of claims: per namespace one list of pods and one of
# PVCs, one jq run deciding every claim (lib/evc.jq, plan), one kubectl run writing
# every changed status. Only claims whose PVC needs work, and deadlines reached, cost
# processes of their own.
# shellcheck source=lifecycle.sh
source "$(dirname "${BASH_SOURCE[0]}")/lifecycle.sh"

NAMESPACE_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
# Claims this pass deleted (delete_due).
DELETED=0

# write_statuses WRITES OK: replaces the status of every claim in WRITES (plan lines
# {do: "write", object}); each write is conditional on the claim's resourceVersion. A
# kubectl run sends its writes one after the other (30-70 ms each on a busy API server),
# so up to WRITERS runs of at least 50 claims each go in parallel. The refs written go to
# OK, one per line.
WRITERS=8
write_statuses() {
  local writes=$1 ok=$2 lines parts chunk out others conflicts
  mapfile -t lines <"$writes"
  ((${#lines[@]})) || return 0
  parts=$(((${#lines[@]} + 49) / 50))
  ((parts <= WRITERS)) || parts=$WRITERS
  split -n "l/$parts" -d "$writes" "$writes.part-"
  for chunk in "$writes".part-*; do
    jq -s '{apiVersion: "v1", kind: "List", items: map(.object)}' "$chunk" |
      kubectl replace --subresource=status -f - \
        -o jsonpath='{.metadata.namespace}/{.metadata.name}{"\n"}' >"$chunk.ok" 2>"$chunk.err" &
  done
  wait || true
  cat "$writes".part-*.ok >"$ok"
  out=$(cat "$writes".part-*.err)
  [[ -n $out ]] || return 0
  # Claims changed since the pass began (Conflict) are decided again at the next pass.
  conflicts=$(grep -c 'Conflict\|has been modified' <<<"$out" || true)
  others=$(grep -v 'Conflict\|has been modified' <<<"$out" || true)
  ((conflicts == 0)) || log_debug "evc: $conflicts status writes skipped: the claims changed meanwhile"
  [[ -z $others ]] || log_error "evc: writing statuses failed: ${others//$'\n'/; }"
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
  DELETED=0
  [[ -s $deletes ]] || return 0
  while IFS=$'\t' read -r ref path uid kind; do
    EVC_REF=$ref
    # Logged only when this run deleted it: a pass may come after the claim went.
    delete_with_uid "$path" "$uid" || continue
    [[ $DELETE_RESULT == deleted ]] || continue
    log_info "$ref: Countdown to $kind: reached! Deleting the EVC."
    DELETED=$((DELETED + 1))
  done < <(jq -r '[.ref, .path, .uid, .kind] | @tsv' "$deletes")
}

# reconcile_each RECONCILES: the one-by-one path, each claim in a process of its own
# so that one failing claim does not end the pass (set -e holds inside it).
reconcile_each() {
  local reconciles=$1 line ref
  [[ -s $reconciles ]] || return 0
  while IFS= read -r line; do
    (reconcile "$(jq -c '.evc' <<<"$line")" "$(jq -c '.pods' <<<"$line")" "$(jq -c '.pvc' <<<"$line")") &
    if ! wait $!; then
      ref=$(jq -r '.evc.metadata | "\(.namespace)/\(.name)"' <<<"$line")
      log_warning "$ref: not reconciled in this pass; the next pass tries again"
    fi
  done <"$reconciles"
}

# sync_all EVENT_FILE: the whole pass. Per namespace of the claims, pods and PVCs are
# listed with --raw (kubectl neither decodes nor re-encodes thousands of objects); one
# jq run indexes them and decides every claim (lib/evc.jq, plan).
sync_all() {
  local file=$1 work ns started=$EPOCHREALTIME claims=0 line lists=() written reconciles=0
  # The clock is read before the lists: a pod seen running was running at PASS_NOW, so a
  # status.lastUsed of PASS_NOW is never later than that pod's finish.
  PASS_NOW=$(date -u +%s)
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # $work is fixed now
  trap "rm -rf '$work'" EXIT
  jq -r '[.objects[].metadata.namespace] | unique[]' "$file" >"$work/namespaces"
  while IFS= read -r ns; do
    [[ $ns =~ $NAMESPACE_RE ]] || { log_error "evc: skipping claims of namespace '$ns': not a namespace name"; continue; }
    kubectl get --raw "/api/v1/namespaces/$ns/pods" >"$work/pods-$ns.json"
    kubectl get --raw "/api/v1/namespaces/$ns/persistentvolumeclaims" >"$work/pvcs-$ns.json"
    lists+=("$work/pods-$ns.json" "$work/pvcs-$ns.json")
  done <"$work/namespaces"
  touch "$work/writes" "$work/deletes" "$work/reconciles" "$work/ok"
  # To a file first: a failing jq must fail the pass, not look like an empty plan.
  evc_jq '[inputs] as $lists | $event[0] | plan($now; $cfg; $lists | index_lists)' -nc \
    --slurpfile event "$file" --argjson now "$PASS_NOW" --argjson cfg "$(settings_json)" \
    "${lists[@]}" >"$work/plan"
  while IFS= read -r line; do
    case $line in
      '{"do":"write"'*) printf '%s\n' "$line" >>"$work/writes" ;;
      '{"do":"delete"'*) printf '%s\n' "$line" >>"$work/deletes" ;;
      '{"do":"count","claims":'*) claims=${line##*:}; claims=${claims%\}} ;;
      *) printf '%s\n' "$line" >>"$work/reconciles"; reconciles=$((reconciles + 1)) ;;
    esac
  done <"$work/plan"
  write_statuses "$work/writes" "$work/ok"
  log_written "$work/writes" "$work/ok"
  delete_due "$work/deletes"
  reconcile_each "$work/reconciles"
  mapfile -t written <"$work/ok"
  log_info "evc: pass over $claims claims: ${#written[@]} statuses written, $DELETED deleted, $reconciles one by one, in $(elapsed "$started")s"
}

# Seconds since START ($EPOCHREALTIME), with milliseconds.
elapsed() {
  local us=$((${EPOCHREALTIME/./} - ${1/./}))
  printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
}
