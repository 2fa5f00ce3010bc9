# shellcheck shell=bash
# The snapshot hook: every claim that needs a volume, in one run. Each kubectl run
# costs ~50 ms of CPU and each jq ~10 ms, whether it handles one claim or hundreds,
# so a run costs about ten processes in all: one jq selects, two kubectl look up
# what exists, one jq decides, one kubectl creates the Jobs (one per node), one
# watch waits for them, one jq and one kubectl create the PVs, one deletes the Jobs.

# The jq programs beside this file (no dirname process: see ../snapshot).
PVC_LIB=${BASH_SOURCE[0]%/*}
[[ $PVC_LIB != "${BASH_SOURCE[0]}" ]] || PVC_LIB=.
# Set by snapshot_select: the claims that need a volume (JSON) and their valid nodes.
CLAIMS_JSON=
NODES=()
# Non-zero when a claim's volume failed in a way worth retrying (the runner does).
SNAP_STATUS=0
# Collected from the records of decide.jq and finish.jq (snapshot_records).
WARNS=() NEW_JOBS=() WAIT_JOBS=() FAILED_UIDS=() DELETE_JOBS=() PV_INFO=()
declare -gA NEW_WHAT=() JOB_RESULT=()

snapshot_main() {
  [[ -n ${EVENT_FILE:-} && -r $EVENT_FILE ]] || { log_error "pvc: EVENT_FILE is unset or unreadable"; exit 100; }
  snapshot_select "$EVENT_FILE" || return 0
  snapshot_config
  SNAP_DIR=$(mktemp -d)
  trap 'rm -rf "$SNAP_DIR"' EXIT
  printf '%s' "$CLAIMS_JSON" >"$SNAP_DIR/claims"
  snapshot_lookup
  snapshot_decide
  plan_has_jobs plan && snapshot_round create plan yes
  plan_has_jobs split-plan && snapshot_round split split-plan no
  warns_post
  return "$SNAP_STATUS"
}

# The claims of the snapshot that need a volume; false when none (one jq, no kubectl:
# this runs after every change of any claim).
snapshot_select() {
  local out lines=() total wanted
  out=$(jq -r -L "$PVC_LIB" --arg class "$STORAGE_CLASS" -f "$PVC_LIB/select.jq" "$1") \
    || { log_error "pvc: cannot read the claims from EVENT_FILE"; exit 100; }
  mapfile -t lines <<<"$out"
  read -r total wanted <<<"${lines[0]}"
  if ((wanted == 0)); then
    log_debug "pvc: snapshot of $total claims; 0 need a volume"
    return 1
  fi
  log_info "pvc: snapshot of $total claims; $wanted need a volume"
  CLAIMS_JSON=${lines[1]}
  NODES=("${lines[@]:2}")
}

# Bad settings: one ERROR line per run, no volume for anyone.
snapshot_config() {
  local problems
  problems=$(config_problems)
  [[ -z $problems ]] && return 0
  log_error "pvc: invalid configuration: ${problems//$'\n'/; }; not provisioning"
  exit 100
}

# plan_has_jobs NAME: the plan file $SNAP_DIR/NAME names Jobs to create, wait for or finish.
plan_has_jobs() {
  [[ -s $SNAP_DIR/$1 && $(<"$SNAP_DIR/$1") != *'"jobs":[]}' ]]
}

# What exists: our PVs and Jobs (by label), the claims' nodes and the StorageClass
# (by name: `get` on nodes is all the account needs). Two kubectl runs at once.
snapshot_lookup() {
  local named=() pid
  [[ -n $RECLAIM_POLICY ]] || named+=("storageclass/$STORAGE_CLASS")
  ((${#NODES[@]} == 0)) || named+=("${NODES[@]/#/node/}")
  kubectl get pv,jobs -n "$JOB_NAMESPACE" -l "app.kubernetes.io/managed-by=$MANAGED_BY" -o json \
    >"$SNAP_DIR/found" 2>"$SNAP_DIR/found.err" &
  pid=$!
  : >"$SNAP_DIR/named"
  if ((${#named[@]} > 0)) && ! kubectl get "${named[@]}" --ignore-not-found -o json \
    >"$SNAP_DIR/named" 2>"$SNAP_DIR/named.err"; then
    wait "$pid" || true
    snapshot_api_error "look up nodes and StorageClass" "$SNAP_DIR/named.err"
  fi
  wait "$pid" || snapshot_api_error "look up PersistentVolumes and Jobs" "$SNAP_DIR/found.err"
}

# snapshot_api_error WHAT ERRFILE: the API failed us; the runner retries the run.
snapshot_api_error() {
  log_error "pvc: could not $1: $(<"$2")"
  exit 1
}

# The settings as jq's $ARGS.named (manifests.jq's $s).
settings_args() {
  SETTINGS=(--arg jobns "$JOB_NAMESPACE" --arg image "$JOB_IMAGE" --arg mode "$VOLUME_MODE" --arg dir "$VOLUMES_DIR"
    --arg managed "$MANAGED_BY" --arg uidkey "$UID_LABEL" --arg hostkey "$HOSTNAME_KEY"
    --arg class "$STORAGE_CLASS" --arg policy "$RECLAIM_POLICY" --arg timeout "$JOB_TIMEOUT"
    --argjson ttl "$JOB_TTL_SECONDS")
}

# One jq decides every claim (decide.jq); its log lines and Events are given here.
snapshot_decide() {
  local f=()
  settings_args
  jq -n -j -L "$PVC_LIB" "${SETTINGS[@]}" --slurpfile claims "$SNAP_DIR/claims" \
    --slurpfile found "$SNAP_DIR/found" --slurpfile named "$SNAP_DIR/named" \
    -f "$PVC_LIB/decide.jq" >"$SNAP_DIR/decide" \
    || { log_error "pvc: could not decide on the claims (decide.jq)"; exit 1; }
  mapfile -d '' -t f <"$SNAP_DIR/decide"
  snapshot_records create plan "${f[@]}"
}

# snapshot_records CREATE PLAN FIELD...: reads the records of decide.jq and finish.jq.
# Log lines are written at once; the rest is collected for the steps of the run: a
# create (or split) LIST goes to $SNAP_DIR/CREATE, a plan to $SNAP_DIR/PLAN.
snapshot_records() {
  local create=$1 plan=$2 i=0
  local -a f=("${@:3}")
  while ((i < ${#f[@]})); do
    case ${f[i]} in
      log) snapshot_log "${f[i + 1]}" "${f[i + 2]}"; i=$((i + 3)) ;;
      warn) WARNS+=("${f[@]:i+1:4}"); i=$((i + 5)) ;;
      fail) WARNS+=("${f[i + 1]}" "${f[i + 2]}" ProvisioningFailed "${f[i + 3]}")
        log_error "pvc: claim ${f[i + 1]}/${f[i + 2]}: ${f[i + 3]}"
        SNAP_STATUS=1; i=$((i + 4)) ;;
      new) NEW_JOBS+=("${f[i + 1]}"); NEW_WHAT[${f[i + 1]}]=${f[i + 2]}; i=$((i + 3)) ;;
      failed) FAILED_UIDS+=("${f[i + 1]}"); i=$((i + 2)) ;;
      running) WAIT_JOBS+=("${f[i + 1]}"); i=$((i + 2)) ;;
      delete) DELETE_JOBS+=("${f[i + 1]}"); i=$((i + 2)) ;;
      pv) PV_INFO+=("${f[@]:i+1:7}"); i=$((i + 8)) ;;
      pvs) printf '%s' "${f[i + 1]}" >"$SNAP_DIR/pvs"; i=$((i + 2)) ;;
      create | split) printf '%s' "${f[i + 1]}" >"$SNAP_DIR/$create"; i=$((i + 2)) ;;
      plan) printf '%s' "${f[i + 1]}" >"$SNAP_DIR/$plan"; i=$((i + 2)) ;;
      *) log_error "pvc: unexpected record '${f[i]}' from a jq program"; exit 1 ;;
    esac
  done
}

snapshot_log() {
  case $1 in
    ERROR) log_error "$2" ;;
    WARNING) log_warning "$2" ;;
    *) log_info "$2" ;;
  esac
}

# claim_warn NAMESPACE NAME REASON MESSAGE: a Warning Event on the claim.
claim_warn() {
  event_warning "$3" "$4" --object "persistentvolumeclaim/$1/$2" \
    || log_warning "pvc: could not post a $3 Event on claim $1/$2"
}

# snapshot_round CREATE PLAN SPLIT: creates the plan's new Jobs (LIST in $SNAP_DIR/CREATE),
# waits for them and for running Jobs of earlier runs, creates the PVs of succeeded
# Jobs, deletes ended Jobs, reports failures. SPLIT=yes: a failed Job of several
# claims is retried at once as one Job per claim (one bad directory fails no other).
snapshot_round() {
  local plan=$SNAP_DIR/$2 name results=$SNAP_DIR/results f=()
  JOB_RESULT=() DELETE_JOBS=() PV_INFO=()
  jobs_create "$SNAP_DIR/$1"
  warns_post
  ((${#WAIT_JOBS[@]} == 0)) || jobs_wait "${WAIT_JOBS[@]}"
  : >"$results"
  for name in "${!JOB_RESULT[@]}"; do printf '%s %s\n' "$name" "${JOB_RESULT[$name]}" >>"$results"; done
  jobs_pods
  settings_args
  NEW_JOBS=() WAIT_JOBS=()
  jq -n -j -L "$PVC_LIB" "${SETTINGS[@]}" --slurpfile plan "$plan" --rawfile results "$results" \
    --slurpfile pods "$SNAP_DIR/pods" --rawfile createerr "$SNAP_DIR/create.err" --arg split "$3" \
    -f "$PVC_LIB/finish.jq" >"$SNAP_DIR/finish" || { log_error "pvc: could not read the Jobs' results (finish.jq)"; exit 1; }
  mapfile -d '' -t f <"$SNAP_DIR/finish"
  : >"$SNAP_DIR/pvs"
  snapshot_records split split-plan "${f[@]}"
  pvs_create
  jobs_delete
  warns_post
}

# jobs_create FILE: the new Jobs in one kubectl run; one not created is "uncreated".
jobs_create() {
  local name out
  local -A made=()
  : >"$SNAP_DIR/create.err"
  ((${#NEW_JOBS[@]} > 0)) || return 0
  out=$(kubectl create -f "$1" -o name 2>"$SNAP_DIR/create.err") || true
  for name in $out; do made[${name#*/}]=1; done
  for name in "${NEW_JOBS[@]}"; do
    if [[ -n ${made[$name]:-} ]]; then
      WAIT_JOBS+=("$name")
      log_info "pvc: created Job $JOB_NAMESPACE/$name ${NEW_WHAT[$name]:-}"
    else
      JOB_RESULT[$name]="uncreated -"
    fi
  done
}

# When a Job failed or timed out: the mkdir Jobs' pods, for what they said or what they
# wait for (finish.jq: an image a node lacks is named in the claim's Event); else nothing.
jobs_pods() {
  local name need=${#FAILED_UIDS[@]}
  : >"$SNAP_DIR/pods"
  for name in "${!JOB_RESULT[@]}"; do
    [[ ${JOB_RESULT[$name]} != failed\ * && ${JOB_RESULT[$name]} != timeout\ * ]] || need=1
  done
  FAILED_UIDS=()
  ((need > 0)) || return 0
  kubectl get pods -n "$JOB_NAMESPACE" -l "$MKDIR_SELECTOR" -o json \
    >"$SNAP_DIR/pods" 2>/dev/null || : >"$SNAP_DIR/pods"
}

# The PVs of the succeeded Jobs in one kubectl run; one not created fails its claim.
pvs_create() {
  local out name i
  local -A made=()
  [[ -s $SNAP_DIR/pvs ]] || return 0
  out=$(kubectl create -f "$SNAP_DIR/pvs" -o name 2>"$SNAP_DIR/pvs.err") || true
  for name in $out; do made[${name#*/}]=1; done
  for ((i = 0; i + 6 < ${#PV_INFO[@]}; i += 7)); do
    set -- "${PV_INFO[@]:i:7}"
    if [[ -n ${made[$1]:-} ]]; then
      log_info "pvc: created PersistentVolume $1 ($4, reclaim policy $5) at $6:$7 for claim $2/$3"
    else
      snapshot_records - - fail "$2" "$3" "could not create PersistentVolume $1: $(<"$SNAP_DIR/pvs.err")"
    fi
  done
}

# Ended Jobs go in one kubectl run (background propagation: their pods go with the
# garbage collector); the TTL catches any this misses.
jobs_delete() {
  ((${#DELETE_JOBS[@]} > 0)) || return 0
  kubectl delete job -n "$JOB_NAMESPACE" "${DELETE_JOBS[@]}" --ignore-not-found \
    --cascade=background --wait=false >/dev/null \
    || log_warning "pvc: could not delete Jobs ${DELETE_JOBS[*]} in $JOB_NAMESPACE"
}

# The Warning Events collected so far, one `operator event` each.
warns_post() {
  local i
  for ((i = 0; i + 3 < ${#WARNS[@]}; i += 4)); do claim_warn "${WARNS[@]:i:4}"; done
  WARNS=()
}
