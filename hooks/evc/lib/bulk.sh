# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016,SC2034
# SC2016: jq programs name $variables; SC2034: the counters and EVC_REF are read by the callers.
# Carrying out a plan of lib/evc.jq (records, one JSON line each) with a few kubectl runs
# for all claims: PVCs created from one List, statuses replaced from one List, deletions
# by name. A kubectl run sends its requests one after the other (30-70 ms each on a busy
# API server), so a List of more than 25 objects is split into up to WRITERS runs at once.
# Sourced by lib/batch.sh (the snapshot and sync-all runs), after common.sh.

WRITERS=8
# Up to this many claims due in one run are deleted one by one with a uid precondition
# (delete_with_uid); more go by name in bulk (delete_bulk).
DELETE_ONE_BY_ONE=3
# Filled by run_records: what the run did, for its summary line.
DELETED=0 CREATED=0 NOT_CREATED=0 WRITTEN=0

# bulk_kubectl IN OUT ERR ARGS...: `kubectl ARGS -f -` on the objects of IN (one JSON object a
# line) as Lists, in up to WRITERS runs at once (25 objects or more each); OUT gets "namespace/name" of every object
# kubectl reported done, ERR what it said on stderr.
bulk_kubectl() {
  local in=$1 out=$2 err=$3 lines parts chunk
  shift 3
  : >"$out"
  : >"$err"
  mapfile -t lines <"$in"
  ((${#lines[@]})) || return 0
  parts=$(((${#lines[@]} + 24) / 25))
  ((parts <= WRITERS)) || parts=$WRITERS
  if ((parts == 1)); then
    bulk_one "$in" "$out" "$err" "$@"
    return 0
  fi
  split -n "l/$parts" -d -a 3 "$in" "$in.part-"
  for chunk in "$in".part-*; do
    bulk_one "$chunk" "$chunk.ok" "$chunk.err" "$@" &
  done
  wait
  cat "$in".part-*.ok >"$out"
  cat "$in".part-*.err >"$err"
  rm -f "$in".part-*
}

# bulk_one IN OUT ERR ARGS...: one kubectl run on the objects of IN as a List.
bulk_one() {
  local in=$1 out=$2 err=$3
  shift 3
  jq -s '{apiVersion: "v1", kind: "List", items: .}' "$in" |
    kubectl "$@" -f - -o jsonpath='{.metadata.namespace}/{.metadata.name}{"\n"}' >"$out" 2>"$err" || true
}

# run_records PLAN WORK: deletions first (their deadline has passed), then the PVCs to create,
# then every status write (those of the created PVCs included), then the log lines and
# Events of the statuses stored; the one-by-one path last.
run_records() {
  local plan=$1 work=$2 line
  : >"$work/deletes"
  : >"$work/creates"
  : >"$work/writes"
  : >"$work/reconciles"
  while IFS= read -r line; do
    case $line in
      '{"do":"delete"'*) printf '%s\n' "$line" >>"$work/deletes" ;;
      '{"do":"create"'*) printf '%s\n' "$line" >>"$work/creates" ;;
      '{"do":"write"'*) printf '%s\n' "$line" >>"$work/writes" ;;
      '{"do":"reconcile"'*) printf '%s\n' "$line" >>"$work/reconciles" ;;
    esac
  done <"$plan"
  step delete delete_due "$work/deletes" "$work"
  step pvcs create_pvcs "$work/creates" "$work" >>"$work/writes"
  step statuses write_statuses "$work/writes" "$work"
  step logs announce "$work/writes" "$work/ok"
}

# step NAME COMMAND ARGS...: runs it and adds "NAME 1.234" to STEPS, the seconds it took: the
# summary line says where a run's time went.
STEPS=()
step() {
  local name=$1 started=$EPOCHREALTIME
  "${@:2}"
  STEPS+=("$name $(elapsed "$started")")
}

# lines FILE: how many lines FILE has, without a process.
lines() {
  local all
  mapfile -t all <"$1"
  echo "${#all[@]}"
}

# create_pvcs CREATES WORK: the PVCs of the create records, one bulk create per namespace
# (kubectl's errors name the PVC, not its namespace). Prints the status writes that follow:
# the planned one where the PVC was made, Failed (PVCNotCreated) where not.
create_pvcs() {
  local creates=$1 work=$2 ns i=0
  CREATED=0 NOT_CREATED=0
  [[ -s $creates ]] || return 0
  while IFS= read -r ns; do
    i=$((i + 1))
    jq -c --arg ns "$ns" 'select(.ref | startswith($ns + "/")) | .pvc' "$creates" >"$work/pvcs-$i"
    bulk_kubectl "$work/pvcs-$i" "$work/made-$i" "$work/made-$i.err" create
    # -n and inputs: the lookups are built once, not once per record.
    jq -nc --arg ns "$ns" --rawfile made "$work/made-$i" --rawfile errs "$work/made-$i.err" -L "$EVC_LIB" '
      include "evc";
      ($made | split("\n") | map(select(. != "") | {(.): true}) | add // {}) as $made
      | ($errs | split("\n") | map(select(. != ""))) as $errs
      | inputs | select(.ref | startswith($ns + "/")) | create_result($made; $errs)' "$creates"
    CREATED=$((CREATED + $(lines "$work/made-$i")))
  done < <(jq -r '.ref | split("/")[0]' "$creates" | sort -u)
  NOT_CREATED=$(($(lines "$creates") - CREATED))
}

# write_statuses WRITES WORK: replaces the status of every claim in WRITES; each write is
# conditional on the claim's resourceVersion. The refs written go to WORK/ok.
write_statuses() {
  local writes=$1 work=$2 out conflicts others
  WRITTEN=0
  : >"$work/ok"
  [[ -s $writes ]] || return 0
  jq -c '.object' "$writes" >"$work/objects"
  bulk_kubectl "$work/objects" "$work/ok" "$work/ok.err" replace --subresource=status
  WRITTEN=$(lines "$work/ok")
  out=$(<"$work/ok.err")
  [[ -n $out ]] || return 0
  # Claims changed since the run began (Conflict), or gone, are decided again at the next run.
  conflicts=$(grep -c 'Conflict\|has been modified\|NotFound' <<<"$out" || true)
  others=$(grep -v 'Conflict\|has been modified\|NotFound' <<<"$out" || true)
  ((conflicts == 0)) || log_debug "evc: $conflicts status writes skipped: the claims changed or went meanwhile"
  [[ -z $others ]] || log_error "evc: writing statuses failed: ${others//$'\n'/; }"
}

# announce WRITES OK: the log lines and Events of the claims whose status was stored (their
# refs in OK): they announce that status, so a write that lost a race says nothing.
announce() {
  local writes=$1 ok=$2 kind a b c d
  [[ -s $writes ]] || return 0
  while IFS= read -r -d '' kind && IFS= read -r -d '' a && IFS= read -r -d '' b \
    && IFS= read -r -d '' c && IFS= read -r -d '' d; do
    if [[ $kind == log && $a == WARNING ]]; then
      log_warning "$b"
    elif [[ $kind == log ]]; then
      log_info "$b"
    else
      claim_event "$a" "$b" "$c" "$d"
    fi
  done < <(jq -nj --rawfile ok "$ok" '
    ($ok | split("\n") | map(select(. != "") | {(.): true}) | add // {}) as $done
    | inputs | select($done[.ref]) | . as $r
    | (.logs[] | ["log", .level, .text, "", ""]),
      (.event // empty | ["event", $r.ref, .reason, .message,
        ($r.object | {apiVersion, kind, metadata: (.metadata | {name, namespace, uid})} | tojson)])
    | map(tostring + "\u0000") | add' "$writes")
}

# claim_event REF REASON MESSAGE CLAIM: a Warning Event on the claim (operator event reports on
# the object of EVENT_FILE: here a file of the claim's own). Best effort: the status holds it.
claim_event() {
  local file
  file=$(mktemp)
  printf '{"type":"SYNC","object":%s}\n' "$4" >"$file"
  EVENT_FILE=$file event_post Warning "$2" "$3" || log_warning "$1: could not post a $2 Event"
  rm -f "$file"
}

# delete_due DELETES WORK: the claims whose stored deadline has passed. Few: one by one, each
# with a uid precondition. Many (a burst expiring together): delete_bulk.
delete_due() {
  local deletes=$1 work=$2 ref ns name uid kind pvc
  DELETED=0
  [[ -s $deletes ]] || return 0
  if (($(lines "$deletes") > DELETE_ONE_BY_ONE)); then
    delete_bulk "$deletes" "$work"
    return 0
  fi
  while IFS=$'\t' read -r ref ns name uid kind pvc; do
    EVC_REF=$ref
    # Logged only when this run deleted it: a run may come after the claim went.
    delete_with_uid "/apis/zalando.org/v1/namespaces/$ns/ephemeralvolumeclaims/$name" "$uid" || continue
    [[ $DELETE_RESULT == deleted ]] || continue
    log_info "$ref: Countdown to $kind: reached! Deleting the EVC."
    DELETED=$((DELETED + 1))
    # Its PVC now, rather than when the garbage collector gets to it (the deleted hook
    # leaves a claim past its deadline to this run).
    [[ -z $pvc ]] || delete_with_uid "/api/v1/namespaces/$ns/persistentvolumeclaims/$name" "$pvc" || true
  done < <(jq -r '[.ref, .ns, .name, .uid, .kind, .pvc // ""] | @tsv' "$deletes")
}

# delete_bulk DELETES WORK: kubectl deletes by name and sends no precondition, so the claims
# are listed again first (one request per namespace) and only those with the uid and
# resourceVersion the run decided on are deleted: a claim changed or re-created since is
# decided again at the next run. Then their PVCs, the same way (listed again, same uid).
delete_bulk() {
  local deletes=$1 work=$2 ns i=0 line
  : >"$work/gone"
  while IFS= read -r ns; do
    i=$((i + 1))
    kubectl get --raw "/apis/zalando.org/v1/namespaces/$ns/ephemeralvolumeclaims" >"$work/now-$i.json"
    jq -nr --arg ns "$ns" --slurpfile now "$work/now-$i.json" '
      ($now[0].items | map({key: .metadata.name, value: .metadata}) | from_entries) as $now
      | inputs | select(.ns == $ns and $now[.name].uid == .uid and $now[.name].resourceVersion == .rv) | .name' \
      "$deletes" >"$work/due-$i"
    [[ -s $work/due-$i ]] || continue
    delete_names "$ns" "$work/due-$i" zalando.org/v1 EphemeralVolumeClaim >>"$work/gone"
  done < <(jq -r '.ns' "$deletes" | sort -u)
  while IFS= read -r line; do
    log_info "$line"
  done < <(jq -nr --rawfile gone "$work/gone" '
    ($gone | split("\n") | map(select(. != "") | {(.): true}) | add // {}) as $gone
    | inputs | select($gone[.ref]) | "\(.ref): Countdown to \(.kind): reached! Deleting the EVC."' "$deletes")
  DELETED=$(lines "$work/gone")
  delete_pvcs_of "$deletes" "$work"
}

# delete_pvcs_of DELETES WORK: the PVCs of the claims delete_bulk deleted (WORK/gone), where
# they still have the uid the run saw.
delete_pvcs_of() {
  local deletes=$1 work=$2 ns i=0
  while IFS= read -r ns; do
    i=$((i + 1))
    kubectl get --raw "/api/v1/namespaces/$ns/persistentvolumeclaims" >"$work/pvcs-now-$i.json"
    jq -nr --arg ns "$ns" --rawfile gone "$work/gone" --slurpfile now "$work/pvcs-now-$i.json" '
      ($gone | split("\n") | map(select(. != "") | {(.): true}) | add // {}) as $gone
      | ($now[0].items | map({key: .metadata.name, value: .metadata.uid}) | from_entries) as $now
      | inputs | select(.ns == $ns and $gone[.ref] and .pvc != null and $now[.name] == .pvc) | .name' \
      "$deletes" >"$work/pvcs-due-$i"
    [[ ! -s $work/pvcs-due-$i ]] || delete_names "$ns" "$work/pvcs-due-$i" v1 PersistentVolumeClaim >/dev/null
  done < <(cut -d/ -f1 "$work/gone" | sort -u)
}

# delete_names NS FILE APIVERSION KIND: deletes the objects named in FILE (one a line) from
# Lists, in up to WRITERS kubectl runs at once (by name on the command line, kubectl would
# throttle itself to 5 requests a second); prints "NS/name" of each one deleted. What they
# own goes with them (the garbage collector's background deletion).
delete_names() {
  local ns=$1 file=$2 names parts chunk
  mapfile -t names <"$file"
  parts=$(((${#names[@]} + 24) / 25))
  ((parts <= WRITERS)) || parts=$WRITERS
  split -n "r/$parts" -d -a 3 "$file" "$file.part-"
  for chunk in "$file".part-*; do
    jq -R --arg ns "$ns" --arg v "$3" --arg k "$4" '{apiVersion: $v, kind: $k, metadata: {name: ., namespace: $ns}}' \
      "$chunk" | jq -s '{apiVersion: "v1", kind: "List", items: .}' |
      kubectl delete -f - --ignore-not-found --wait=false -o name >"$chunk.out" 2>"$chunk.err" &
  done
  wait
  for chunk in "$file".part-*.err; do
    [[ ! -s $chunk ]] || log_error "evc: deleting ${4}s in $ns failed: $(tr '\n' ';' <"$chunk")"
  done
  sed "s|^.*/|$ns/|" "$file".part-*.out
  rm -f "$file".part-*
}
