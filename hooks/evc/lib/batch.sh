# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016  # SC2016: jq programs name $variables
# The runs of the snapshot and sync-all hooks: every claim of the run decided in one jq run
# (lib/evc.jq, plan) from the claims, the PVCs and (sync-all) the pods, each listed once per
# namespace; then a handful of kubectl runs for all of them (lib/bulk.sh). Only claims whose
# PVC needs labels or a new size take processes of their own (lib/lifecycle.sh).
# shellcheck source=lifecycle.sh
source "$(dirname "${BASH_SOURCE[0]}")/lifecycle.sh"
# shellcheck source=bulk.sh
source "$(dirname "${BASH_SOURCE[0]}")/bulk.sh"

NAMESPACE_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'

# reconcile_each RECONCILES: the one-by-one path, each claim in a process of its own
# so that one failing claim does not end the run (set -e holds inside it).
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

# list_namespaces WORK WHAT...: per namespace of WORK/namespaces, `kubectl get --raw` of each
# resource in WHAT (pods, persistentvolumeclaims, ephemeralvolumeclaims) into WORK; the files go to LISTS. --raw:
# kubectl neither decodes nor re-encodes thousands of objects.
list_namespaces() {
  local work=$1 ns what
  shift
  LISTS=()
  while IFS= read -r ns; do
    [[ $ns =~ $NAMESPACE_RE ]] || { log_error "evc: skipping claims of namespace '$ns': not a namespace name"; continue; }
    for what; do
      if [[ $what == ephemeralvolumeclaims ]]; then
        kubectl get --raw "/apis/zalando.org/v1/namespaces/$ns/$what" >"$work/$what-$ns.json"
      else
        kubectl get --raw "/api/v1/namespaces/$ns/$what" >"$work/$what-$ns.json"
      fi
      LISTS+=("$work/$what-$ns.json")
    done
  done <"$work/namespaces"
}

# run_plan FILE WORK FIRST: one jq decides every claim of the run (FIRST true: the claims
# without a status, false: those with one) into WORK/plan, then lib/bulk.sh carries it out.
run_plan() {
  local file=$1 work=$2 first=$3
  # To a file first: a failing jq must fail the run, not look like an empty plan.
  step plan evc_jq '[inputs] as $lists | $event[0] | plan($now; $cfg; $lists | index_lists; $first)' -nc \
    --slurpfile event "$file" --argjson now "$PASS_NOW" --argjson cfg "$(settings_json)" \
    --argjson first "$first" "${LISTS[@]}" >"$work/plan"
  local count
  read -r count <"$work/plan"
  [[ $count =~ \"claims\":([0-9]+),\"mine\":([0-9]+),\"next\":([0-9]+|null) ]] ||
    { log_error "evc: no plan (lib/evc.jq)"; exit 1; }
  CLAIMS=${BASH_REMATCH[1]} MINE=${BASH_REMATCH[2]} NEXT_DEADLINE=${BASH_REMATCH[3]}
  run_records "$work/plan" "$work"
  RECONCILES=$(lines "$work/reconciles")
  step one-by-one reconcile_each "$work/reconciles"
}

# A work directory removed when the hook ends; the clock read before any list: a pod seen
# running was running at PASS_NOW, so a status.lastUsed of PASS_NOW is never later than
# that pod's finish.
run_start() {
  STARTED=$EPOCHREALTIME
  PASS_NOW=$(date -u +%s)
  WORK=$(mktemp -d)
  # shellcheck disable=SC2064  # $WORK is fixed now
  trap "rm -rf '$WORK'" EXIT
}

# sync_all EVENT_FILE: every claim that has a status, with its pods and PVC.
sync_all() {
  local file=$1
  run_start
  evc_jq 'claims_namespaces(false)' -r "$file" >"$WORK/namespaces"
  if [[ ! -s $WORK/namespaces ]]; then
    log_debug "evc: pass over $(jq '.objects | length' "$file") claims: none has a status yet"
    return 0
  fi
  step list list_namespaces "$WORK" pods persistentvolumeclaims
  run_plan "$file" "$WORK" false
  # Up to three rounds, each only while the last one deleted something.
  local late=0 before
  while ((late < 3)) && [[ $NEXT_DEADLINE != null ]] && ((NEXT_DEADLINE <= $(date -u +%s))); do
    before=$DELETED
    late_deletes "$WORK"
    late=$((late + 1))
    ((DELETED > before)) || break
  done
  log_info "evc: pass over $CLAIMS claims: $WRITTEN statuses written, $DELETED deleted," \
    "$CREATED PVCs created, $NOT_CREATED not, $RECONCILES one by one, in $(elapsed "$STARTED")s ($(steps))"
}

# late_deletes WORK: deadlines passed while the pass ran (a thousand claims' writes and
# deletions take seconds): those claims are decided again at once, as they are now (this
# pass's own status writes changed them) and with their pods, both listed again, for deletion
# only, rather than at the next pass; NEXT_DEADLINE is the next one after.
late_deletes() {
  local work=$1 deleted=$DELETED count
  PASS_NOW=$(date -u +%s)
  step list list_namespaces "$work" pods persistentvolumeclaims ephemeralvolumeclaims
  step plan evc_jq '[inputs] as $lists
    | {objects: [$lists[] | select(.kind == "EphemeralVolumeClaimList") | .items[]]}
    | plan($now; $cfg; $lists | index_lists; false)
    | select(.do == "count" or .do == "delete")' -nc --argjson now "$PASS_NOW" \
    --argjson cfg "$(settings_json)" "${LISTS[@]}" >"$work/late"
  read -r count <"$work/late"
  [[ $count =~ \"next\":([0-9]+|null) ]] || { log_error "evc: no plan (lib/evc.jq)"; exit 1; }
  NEXT_DEADLINE=${BASH_REMATCH[1]}
  grep '^{"do":"delete"' "$work/late" >"$work/deletes" || true
  step delete delete_due "$work/deletes" "$work"
  DELETED=$((DELETED + deleted))
}

# snapshot EVENT_FILE: the claims without a status (new ones): their PVC and first phase. The
# run after every change ends after its one jq when there is none (most runs: every status
# write comes back as a change).
snapshot() {
  local file=$1
  run_start
  evc_jq 'claims_namespaces(true)' -r "$file" >"$WORK/namespaces"
  if [[ ! -s $WORK/namespaces ]]; then
    log_debug "evc: snapshot of $(jq '.objects | length' "$file") claims: none new"
    return 0
  fi
  step list list_namespaces "$WORK" persistentvolumeclaims
  run_plan "$file" "$WORK" true
  log_info "evc: snapshot of $CLAIMS claims: $MINE new, $CREATED PVCs created, $NOT_CREATED not," \
    "$WRITTEN statuses written, in $(elapsed "$STARTED")s ($(steps))"
}

# Where the time went: "list 0.512, evc 0.803, delete 0.000, ..." (lib/bulk.sh, step).
steps() {
  local IFS=,
  local out="${STEPS[*]}"
  printf '%s' "${out//,/, }"
}

# Seconds since START ($EPOCHREALTIME), with milliseconds.
elapsed() {
  local us=$((${EPOCHREALTIME/./} - ${1/./}))
  printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
}
