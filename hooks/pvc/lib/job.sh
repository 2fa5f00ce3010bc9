# shellcheck shell=bash
# The deleted hook's one-shot Job, pinned to the volume's node, that removes its
# directory (the snapshot hook's mkdir Jobs: manifests.jq and jobs.sh). Its name
# comes from the claim's uid, so a replayed event finds the Job an interrupted run
# left behind instead of starting a second one.

# job_manifest NAME COMPONENT PROGRAM FLAG PATH: runs `PROGRAM FLAG -- PATH`
# on $NODE with VOLUMES_DIR mounted at the same path, so the path in the PV is
# the one the Job made.
job_manifest() {
  local name=$1 component=$2
  jq -n --arg name "$name" --arg ns "$JOB_NAMESPACE" --arg node "$NODE" \
    --arg program "$3" --arg flag "$4" --arg path "$5" \
    --arg image "$JOB_IMAGE" --arg dir "$VOLUMES_DIR" --arg component "$component" \
    --arg managed "$MANAGED_BY" --arg uidkey "$UID_LABEL" --arg uid "$CLAIM_UID" \
    --arg claim "$CLAIM_NS/$CLAIM_NAME" --argjson ttl "$JOB_TTL_SECONDS" '
    ({"app.kubernetes.io/managed-by": $managed, "app.kubernetes.io/component": $component}
      + {($uidkey): $uid}) as $labels
    | {apiVersion: "batch/v1", kind: "Job",
       metadata: {name: $name, namespace: $ns, labels: $labels,
                  annotations: {"operator-pvc/claim": $claim}},
       spec: {backoffLimit: 0, ttlSecondsAfterFinished: $ttl,
         template: {metadata: {labels: $labels},
           spec: {nodeName: $node, restartPolicy: "Never",
             tolerations: [{operator: "Exists"}],
             containers: [{name: $component, image: $image, imagePullPolicy: "IfNotPresent",
                           command: [$program, $flag, "--", $path],
                           volumeMounts: [{name: "volumes", mountPath: $dir}]}],
             volumes: [{name: "volumes",
                        hostPath: {path: $dir, type: "DirectoryOrCreate"}}]}}}}'
}

# A Job's state from its JSON: deleting, running, succeeded or failed. Succeeded wins
# over deleting: a Job deleted after it made the directory did its work.
JOB_STATE_JQ='if (.status.succeeded // 0) > 0 then "succeeded"
  elif .metadata.deletionTimestamp then "deleting"
  elif (.status.failed // 0) > 0
    or any(.status.conditions[]?; .type == "Failed" and .status == "True") then "failed"
  else "running" end'

# job_state NAME: missing, deleting, running, succeeded or failed.
job_state() {
  local json
  json=$(kubectl get job -n "$JOB_NAMESPACE" "$1" --ignore-not-found -o json) || return 1
  [[ -n $json ]] || { echo missing; return 0; }
  jq -r "$JOB_STATE_JQ" <<<"$json"
}

# One line per watch event: TYPE DELETION|SUCCEEDED|FAILED|CONDITIONS.
JOB_WATCH_TEMPLATE='{.type} {.object.metadata.deletionTimestamp}|{.object.status.succeeded}|{.object.status.failed}|{range .object.status.conditions[*]}{.type}={.status},{end}{"\n"}'

# job_watch NAME SECONDS: follows the Job with a watch (the hook sleeps in read, no
# polling) until it ends; prints succeeded, failed, missing (deleted), or ended when
# the watch stopped first (timeout, the Job not found, the server closed it).
job_watch() {
  local name=$1 fd pid head succeeded failed conditions state=ended
  exec {fd}< <(exec timeout "$2" kubectl get job -n "$JOB_NAMESPACE" "$name" --watch \
    --output-watch-events -o "jsonpath=$JOB_WATCH_TEMPLATE" 2>/dev/null)
  pid=$!
  while IFS='|' read -r -u "$fd" head succeeded failed conditions; do
    if [[ $succeeded =~ ^[0-9]+$ ]] && ((10#$succeeded > 0)); then
      state=succeeded
    elif [[ $failed =~ ^[0-9]+$ ]] && ((10#$failed > 0)) || [[ $conditions == *Failed=True* ]]; then
      state=failed
    elif [[ ${head%% *} == DELETED ]]; then
      state=missing
    else
      continue
    fi
    break
  done
  kill "$pid" 2>/dev/null || true
  exec {fd}<&-
  echo "$state"
}

# job_wait NAME: waits until the Job ends or JOB_TIMEOUT passes; prints
# succeeded, failed, missing or timeout. A watch that ends early is followed by
# one look at the Job, then another watch.
job_wait() {
  local name=$1 state deadline
  deadline=$((SECONDS + $(timeout_seconds)))
  while ((SECONDS < deadline)); do
    state=$(job_watch "$name" $((deadline - SECONDS)))
    [[ $state == ended ]] || { echo "$state"; return 0; }
    state=$(job_state "$name") || state=unknown
    case $state in succeeded | failed | missing) echo "$state"; return 0 ;; esac
    ((SECONDS < deadline)) && sleep 1 # API errors: no busy loop
  done
  echo timeout
}

# job_why NAME: what its pod said when it ended, for the ERROR and the Event.
# Pods are matched by the Job's uid: those of an earlier Job of the same name
# may still be terminating.
job_why() {
  local uid
  uid=$(kubectl get job -n "$JOB_NAMESPACE" "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null) || uid=
  [[ -n $uid ]] || { echo "its pod left no details"; return 0; }
  kubectl get pods -n "$JOB_NAMESPACE" -l "controller-uid=$uid" -o json 2>/dev/null | jq -r '
    [.items[].status | ((.containerStatuses // [])[].state.terminated // empty
       | "exit code \(.exitCode)" + (if .reason then " (\(.reason))" else "" end)
         + (if .message then ": \(.message)" else "" end)),
      ((.containerStatuses // [])[].state.waiting // empty | select(.reason)
       | "its pod waits: \(.reason)" + (if .message then ": \(.message)" else "" end)),
      (select(.reason) | "pod \(.reason): \(.message // "")")]
    | first // "its pod left no details"' 2>/dev/null || echo "its pod left no details"
}

# Background propagation: the Job goes at once, its pod with the garbage collector.
job_delete() {
  kubectl delete job -n "$JOB_NAMESPACE" "$1" --ignore-not-found --cascade=background \
    --wait=false >/dev/null || log_warning "pvc: could not delete Job $JOB_NAMESPACE/$1"
}

# job_start NAME COMPONENT PROGRAM FLAG PATH: creates the Job unless an earlier attempt did.
job_start() {
  local name=$1 state
  state=$(job_state "$name") || return 1
  case $state in
    missing) ;;
    deleting) log_warning "pvc: Job $JOB_NAMESPACE/$name of an earlier attempt is still being deleted"; return 1 ;;
    *) log_info "pvc: found Job $JOB_NAMESPACE/$name of an earlier attempt ($state); not creating another"; return 0 ;;
  esac
  JOB_ERROR=$(job_manifest "$@" | kubectl create -f - 2>&1 >/dev/null) || return 1
  log_info "pvc: created Job $JOB_NAMESPACE/$name on node $NODE: $3 $4 -- $5"
}

# job_run REASON NAME COMPONENT PROGRAM FLAG PATH: runs the Job to its end and deletes
# it. Any outcome but success is claim_fail with REASON, exit 1 (retry).
job_run() {
  local reason=$1 name=$2 state
  shift
  job_start "$@" || claim_fail 1 "$reason" "could not create Job $JOB_NAMESPACE/$name on node $NODE: ${JOB_ERROR:-}"
  state=$(job_wait "$name")
  case $state in
    succeeded) job_delete "$name"; return 0 ;;
    failed) state="failed on node $NODE, $(job_why "$name")" ;;
    timeout) state="did not finish on node $NODE within JOB_TIMEOUT=$JOB_TIMEOUT, $(job_why "$name")" ;;
    missing) state="disappeared before it finished" ;;
  esac
  job_delete "$name"
  claim_fail 1 "$reason" "Job $JOB_NAMESPACE/$name ($3 $4 -- $5) $state"
}
