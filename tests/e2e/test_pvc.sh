#!/usr/bin/env bash
# hooks/pvc, the local-volume provisioner, on the local control plane: the pod
# simulator acts out the Jobs' mkdir/rm on $CLUSTER_DIR/nodes/<node>/, so the
# directories themselves are checked. Each test fails when the behaviour it
# names is broken.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cluster_up

HOOKS=$REPO_ROOT/hooks/pvc
VOLUMES=/mnt/local-volumes

# claim NS NAME [SPEC-EXTRA-YAML] [CLASS] [METADATA-EXTRA-YAML]: a 1Gi claim.
claim() {
  kubectl -n "$1" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $2
  ${5:-}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${4:-local-storage}
  resources: {requests: {storage: 1Gi}}
  ${3:-}
EOF
}

on_node() { echo "selector: {matchLabels: {kubernetes.io/hostname: $1}}"; }

claim_uid() { kubectl -n "$1" get pvc "$2" -o jsonpath='{.metadata.uid}'; }
claim_phase() { kubectl -n "$1" get pvc "$2" -o jsonpath='{.status.phase}'; }
bound() { [[ $(claim_phase "$1" "$2") == Bound ]]; }
pv_field() { kubectl get pv "$1" -o "jsonpath=$2"; }
pv_exists() { kubectl get pv "$1" >/dev/null 2>&1; }
pv_gone() { ! pv_exists "$1"; }
pv_phase_is() { [[ $(pv_field "$1" '{.status.phase}') == "$2" ]]; }
# The directory the hooks make for a claim, as a path on the node.
dir_of() { echo "$VOLUMES/pvc-$3_$1_$2"; }
on_disk() { echo "$CLUSTER_DIR/nodes/$1$2"; }
dir_exists() { [[ -d $(on_disk "$1" "$2") ]]; }
dir_gone() { [[ ! -e $(on_disk "$1" "$2") ]]; }

# pvc_operator NAME ARGS...: the operator with these hooks.
pvc_operator() {
  local name=$1
  shift
  operator_start "$name" -o pvc -h "$HOOKS" "$@"
}

# Warning Events the hooks posted: messages for claim NAME with REASON.
hook_events() {
  kubectl -n "$1" get events -o json | jq -r --arg c "$2" --arg r "$3" '.items[]
    | select(.source.component == "operator-pvc" and .type == "Warning"
             and .involvedObject.name == $c and .involvedObject.kind == "PersistentVolumeClaim"
             and .reason == $r) | .message'
}
has_event() { hook_events "$1" "$2" "$3" | grep -Eq -- "$4"; }

# watch_jobs NS FILE: records every Job event in NS (stopped by jobs_seen).
watch_jobs() {
  timeout 600 kubectl -n "$1" get jobs -w --output-watch-events -o json >"$2" 2>/dev/null &
  WATCH_PID=$!
  sleep 1
}

# jobs_seen FILE NAME: how many distinct Jobs called NAME were ever created.
jobs_seen() {
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  jq -s --arg n "$2" '[.[] | select(.object.metadata.name == $n) | .object.metadata.uid]
    | unique | length' "$1"
}

# No Job serves claim UID: neither a snapshot's mkdir Job (label operator-pvc/claim-UID)
# nor the deleted hook's rm Job (label operator-pvc/claim-uid=UID).
no_jobs_for() {
  [[ -z $(kubectl -n "$1" get jobs -l "operator-pvc/claim-$2" -o name) ]] &&
    [[ -z $(kubectl -n "$1" get jobs -l "operator-pvc/claim-uid=$2" -o name) ]]
}

# mkdir_jobs_seen FILE UID: how many distinct mkdir Jobs serving claim UID were ever created.
mkdir_jobs_seen() {
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  jq -s --arg key "operator-pvc/claim-$2" '[.[] | select(.object.metadata.labels[$key])
    | .object.metadata.uid] | unique | length' "$1"
}

setup_class() { kubectl apply -f "$REPO_ROOT/storageclass.yaml" >/dev/null; }

# --- the example, end to end --------------------------------------------

test_example_claim_gets_a_bound_volume_with_every_field() {
  local ns uid pv dir
  setup_class
  [[ $(kubectl get storageclass local-storage -o jsonpath='{.provisioner} {.volumeBindingMode} {.reclaimPolicy}') \
      == "kubernetes.io/no-provisioner Immediate Delete" ]] || fail "storageclass.yaml is not the local-storage class"
  ns=$(new_namespace pvc)
  pvc_operator pvc -A
  kubectl -n "$ns" apply -f "$REPO_ROOT/examples/pvc/pvc.yaml" >/dev/null
  uid=$(claim_uid "$ns" localstorage-claim)
  pv=pvc-$uid
  dir=$(dir_of "$ns" localstorage-claim "$uid")
  wait_until 60 bound "$ns" localstorage-claim || fail "the example claim never became Bound"
  [[ $(kubectl -n "$ns" get pvc localstorage-claim -o jsonpath='{.spec.volumeName}') == "$pv" ]] \
    || fail "the claim is bound to something else than $pv"
  [[ $(pv_field "$pv" '{.spec.capacity.storage}') == 1Gi ]] || fail "capacity is not the requested 1Gi"
  [[ $(pv_field "$pv" '{.spec.accessModes}') == '["ReadWriteOnce"]' ]] || fail "access modes differ from the claim's"
  [[ $(pv_field "$pv" '{.spec.volumeMode}') == Filesystem ]] || fail "volumeMode is not Filesystem"
  [[ $(pv_field "$pv" '{.spec.storageClassName}') == local-storage ]] || fail "storageClassName is not local-storage"
  [[ $(pv_field "$pv" '{.spec.local.path}') == "$dir" ]] || fail "local.path is not $dir"
  [[ $(pv_field "$pv" '{.spec.claimRef.name}/{.spec.claimRef.namespace}/{.spec.claimRef.uid}') \
      == "localstorage-claim/$ns/$uid" ]] || fail "claimRef does not name the claim with its uid"
  [[ $(pv_field "$pv" '{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].key} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].operator} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values}') \
      == 'kubernetes.io/hostname In ["kind-worker2"]' ]] || fail "node affinity is not required kubernetes.io/hostname In kind-worker2"
  [[ $(pv_field "$pv" '{.spec.persistentVolumeReclaimPolicy}') == Delete ]] \
    || fail "reclaim policy is not the class's default, Delete"
  dir_exists kind-worker2 "$dir" || fail "the Job did not create $dir on kind-worker2"
  dir_gone kind-worker "$dir" || fail "$dir was created on kind-worker too"
  wait_until 20 no_jobs_for default "$uid" || fail "the finished Job in default was not removed"
  wait_for_log pvc "created PersistentVolume $pv .* for claim $ns/localstorage-claim" 5 \
    || fail "no log line for the created PV"
}

test_same_claim_name_in_two_namespaces_gives_two_volumes() {
  local a b ua ub
  setup_class
  a=$(new_namespace twin)
  b=$(new_namespace twin)
  pvc_operator pvc -A
  kubectl -n "$a" apply -f "$REPO_ROOT/examples/pvc/pvc.yaml" >/dev/null
  kubectl -n "$b" apply -f "$REPO_ROOT/examples/pvc/pvc.yaml" >/dev/null
  ua=$(claim_uid "$a" localstorage-claim)
  ub=$(claim_uid "$b" localstorage-claim)
  wait_until 60 bound "$a" localstorage-claim || fail "the claim in $a never became Bound"
  wait_until 60 bound "$b" localstorage-claim || fail "the claim in $b never became Bound"
  [[ $(pv_field "pvc-$ua" '{.spec.claimRef.namespace}') == "$a" ]] || fail "pvc-$ua is not $a's"
  [[ $(pv_field "pvc-$ub" '{.spec.claimRef.namespace}') == "$b" ]] || fail "pvc-$ub is not $b's"
  dir_exists kind-worker2 "$(dir_of "$a" localstorage-claim "$ua")" || fail "no directory for $a's claim"
  dir_exists kind-worker2 "$(dir_of "$b" localstorage-claim "$ub")" || fail "no directory for $b's claim"
}

# --- deletion --------------------------------------------------------------

test_delete_policy_removes_directory_then_volume() {
  local ns uid dir jobs
  setup_class
  ns=$(new_namespace del)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  pvc_operator pvc -n "$ns" -E "JOB_NAMESPACE=$ns"
  claim "$ns" data "$(on_node kind-worker)"
  uid=$(claim_uid "$ns" data)
  dir=$(dir_of "$ns" data "$uid")
  wait_until 60 bound "$ns" data || fail "claim data never became Bound"
  dir_exists kind-worker "$dir" || fail "no directory $dir on kind-worker"
  kubectl -n "$ns" delete pvc data --wait=false >/dev/null
  wait_until 60 pv_gone "pvc-$uid" || fail "PersistentVolume pvc-$uid was not deleted"
  dir_gone kind-worker "$dir" || fail "the cleanup Job did not remove $dir"
  [[ $(jobs_seen "$jobs" "pvc-$uid-rm") == 1 ]] || fail "no cleanup Job pvc-$uid-rm ran"
  wait_until 20 no_jobs_for "$ns" "$uid" || fail "the finished cleanup Job was not removed"
  wait_for_log pvc "deleted PersistentVolume pvc-$uid" 5 || fail "no log line for the deletion"
}

# With --finalizer the deleted hook runs while the claim is Terminating, maybe
# still mounted: the directory must outlive the pod that uses it.
test_finalizer_mode_waits_for_the_pod_before_cleanup() {
  local ns uid dir
  setup_class
  ns=$(new_namespace fin)
  pvc_operator fin -n "$ns" -E "JOB_NAMESPACE=$ns" --finalizer operator-pvc.example.com/cleanup \
    --retries 20 --backoff-max 2s
  claim "$ns" used "$(on_node kind-worker)"
  uid=$(claim_uid "$ns" used)
  dir=$(dir_of "$ns" used "$uid")
  wait_until 60 bound "$ns" used || fail "claim used never became Bound"
  kubectl -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  nodeSelector: {kubernetes.io/hostname: kind-worker}
  containers:
  - name: main
    image: busybox
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: used}}
EOF
  kubectl -n "$ns" wait --for=condition=Ready pod/user --timeout=60s >/dev/null || fail "pod user never ran"
  kubectl -n "$ns" delete pvc used --wait=false >/dev/null
  wait_for_log fin "claim $ns/used still exists with kubernetes.io/pvc-protection .*cleanup waits" 30 \
    || fail "the deleted hook did not wait for the pod using the claim"
  dir_exists kind-worker "$dir" || fail "the directory was removed while a pod used it"
  pv_exists "pvc-$uid" || fail "the PV was deleted while a pod used it"
  kubectl -n "$ns" delete pod user --wait=false >/dev/null
  wait_until 90 pv_gone "pvc-$uid" || fail "the PV was not deleted after the pod went"
  dir_gone kind-worker "$dir" || fail "the directory was not removed after the pod went"
  wait_until 30 claim_gone "$ns" used || fail "the claim stayed Terminating"
}

claim_gone() { ! kubectl -n "$1" get pvc "$2" >/dev/null 2>&1; }

test_retain_keeps_released_volume_and_env_overrides_class() {
  local ns uid dir
  ns=$(new_namespace retain)
  kubectl apply -f - >/dev/null <<'EOF'
kind: StorageClass
apiVersion: storage.k8s.io/v1
metadata: {name: local-retain}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
EOF
  pvc_operator retain -n "$ns" -E "STORAGE_CLASS=local-retain,JOB_NAMESPACE=$ns"
  claim "$ns" keep "$(on_node kind-worker)" local-retain
  uid=$(claim_uid "$ns" keep)
  dir=$(dir_of "$ns" keep "$uid")
  wait_until 60 bound "$ns" keep || fail "claim keep never became Bound"
  [[ $(pv_field "pvc-$uid" '{.spec.persistentVolumeReclaimPolicy}') == Retain ]] \
    || fail "the PV did not take the class's reclaimPolicy Retain"
  kubectl -n "$ns" delete pvc keep --wait=false >/dev/null
  wait_for_log retain "claim $ns/keep deleted; PersistentVolume pvc-$uid and its directory are kept" 30 \
    || fail "the deleted hook did not log that it keeps the volume"
  wait_until 30 pv_phase_is "pvc-$uid" Released || fail "the Retain PV is not Released"
  sleep 2
  pv_exists "pvc-$uid" || fail "the Retain PV was deleted"
  dir_exists kind-worker "$dir" || fail "the Retain volume's directory was removed"
  kubectl delete pv "pvc-$uid" --wait=false >/dev/null
  operator_stop retain || true
  # RECLAIM_POLICY wins over the class.
  pvc_operator override -n "$ns" -E "STORAGE_CLASS=local-retain,JOB_NAMESPACE=$ns,RECLAIM_POLICY=Delete"
  claim "$ns" gone "$(on_node kind-worker)" local-retain
  uid=$(claim_uid "$ns" gone)
  wait_until 60 bound "$ns" gone || fail "claim gone never became Bound"
  [[ $(pv_field "pvc-$uid" '{.spec.persistentVolumeReclaimPolicy}') == Delete ]] \
    || fail "RECLAIM_POLICY=Delete did not override the class's Retain"
}

# --- failures --------------------------------------------------------------

test_failing_job_warns_makes_no_volume_and_is_retried() {
  local ns uid dir blocker
  setup_class
  ns=$(new_namespace fail)
  claim "$ns" blocked "$(on_node kind-worker)"
  uid=$(claim_uid "$ns" blocked)
  dir=$(dir_of "$ns" blocked "$uid")
  # A file where the directory should go: the Job's mkdir -p really fails.
  blocker=$(on_disk kind-worker "$dir")
  mkdir -p "$(dirname "$blocker")"
  echo "not a directory" >"$blocker"
  pvc_operator fail -n "$ns" -E "JOB_NAMESPACE=$ns" --retries 20 --backoff-max 2s
  wait_until 60 has_event "$ns" blocked ProvisioningFailed "Job $ns/pvc-mkdir-$uid \\(mkdir -m 0777 -p -- $dir\\) failed on node kind-worker" \
    || fail "no ProvisioningFailed Warning Event for the failed Job"
  wait_for_log fail "ERROR pvc: claim $ns/blocked: Job .*failed" 5 || fail "no ERROR line for the failed Job"
  pv_gone "pvc-$uid" || fail "a PV was created although the Job failed"
  [[ $(claim_phase "$ns" blocked) == Pending ]] || fail "the claim is not Pending"
  [[ -f $blocker ]] || fail "the blocking file was replaced"
  # Fixed on disk: the runner's retry provisions it.
  rm -f "$blocker"
  wait_until 60 bound "$ns" blocked || fail "the claim was not provisioned by a retry after the fix"
  dir_exists kind-worker "$dir" || fail "the retry did not create $dir"
}

# Two claims in one Job, one of whose directories cannot be made: the other one
# still gets its volume in the same run, and only the blocked one fails.
test_one_blocked_directory_does_not_hold_back_its_batch() {
  local ns uid blocker ok_uid
  setup_class
  ns=$(new_namespace split)
  claim "$ns" blocked "$(on_node kind-worker)"
  claim "$ns" fine "$(on_node kind-worker)"
  uid=$(claim_uid "$ns" blocked)
  ok_uid=$(claim_uid "$ns" fine)
  blocker=$(on_disk kind-worker "$(dir_of "$ns" blocked "$uid")")
  mkdir -p "$(dirname "$blocker")"
  echo "not a directory" >"$blocker"
  # Both claims exist before the runner starts: its first run puts them in one Job.
  pvc_operator split -n "$ns" -E "JOB_NAMESPACE=$ns" --retries 0
  wait_for_log split "created Job $ns/pvc-mkdir-[-0-9a-f]+ on node kind-worker for 2 claim\\(s\\)" 60 \
    || fail "the two claims were not put in one Job"
  wait_until 60 bound "$ns" fine || fail "the claim beside the blocked one never became Bound"
  dir_exists kind-worker "$(dir_of "$ns" fine "$ok_uid")" || fail "no directory for the fine claim"
  wait_until 30 has_event "$ns" blocked ProvisioningFailed "Job $ns/pvc-mkdir-$uid \\(mkdir -m 0777 -p -- .*\\) failed on node kind-worker" \
    || fail "no ProvisioningFailed Event naming the blocked claim's own Job"
  [[ -z $(hook_events "$ns" fine ProvisioningFailed) ]] || fail "the fine claim got a ProvisioningFailed Event"
  pv_gone "pvc-$uid" || fail "a PV was created for the blocked claim"
  [[ -f $blocker ]] || fail "the blocking file was replaced"
}

test_deleting_a_claim_that_never_got_its_volume_cleans_its_directory() {
  local ns uid blocker
  setup_class
  ns=$(new_namespace half)
  claim "$ns" half "$(on_node kind-worker2)"
  uid=$(claim_uid "$ns" half)
  blocker=$(on_disk kind-worker2 "$(dir_of "$ns" half "$uid")")
  mkdir -p "$(dirname "$blocker")"
  echo "left by a failed attempt" >"$blocker"
  pvc_operator half -n "$ns" -E "JOB_NAMESPACE=$ns" --retries 0
  wait_until 60 has_event "$ns" half ProvisioningFailed "failed on node kind-worker2" \
    || fail "no ProvisioningFailed Warning Event for the failed Job"
  kubectl -n "$ns" delete pvc half --wait=false >/dev/null
  wait_for_log half "claim $ns/half deleted; it had no PersistentVolume, removed kind-worker2:" 60 \
    || fail "the deleted hook did not clean up after the failed attempt"
  [[ ! -e $blocker ]] || fail "what the failed attempt left at the volume's path is still there"
  pv_gone "pvc-$uid" || fail "a PV appeared for the deleted claim"
}

test_unknown_node_warns_and_makes_no_job_or_volume() {
  local ns uid jobs
  setup_class
  ns=$(new_namespace ghost)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  pvc_operator ghost -n "$ns" -E "JOB_NAMESPACE=$ns"
  claim "$ns" nowhere "$(on_node kind-worker9)"
  uid=$(claim_uid "$ns" nowhere)
  wait_until 30 has_event "$ns" nowhere ProvisioningFailed "node kind-worker9 does not exist" \
    || fail "no Warning Event for the unknown node"
  wait_for_log ghost "ERROR pvc: claim $ns/nowhere: node kind-worker9 does not exist" 5 \
    || fail "no ERROR line for the unknown node"
  pv_gone "pvc-$uid" || fail "a PV was created for an unknown node"
  [[ $(mkdir_jobs_seen "$jobs" "$uid") == 0 ]] || fail "a Job was started for an unknown node"
}

test_claim_without_node_gets_event_then_annotation_provisions_it() {
  local ns uid
  ns=$(new_namespace wffc)
  kubectl apply -f - >/dev/null <<'EOF'
kind: StorageClass
apiVersion: storage.k8s.io/v1
metadata: {name: local-wffc}
provisioner: operator-pvc/local
volumeBindingMode: WaitForFirstConsumer
EOF
  pvc_operator wffc -n "$ns" -E "STORAGE_CLASS=local-wffc,JOB_NAMESPACE=$ns"
  claim "$ns" later "" local-wffc
  uid=$(claim_uid "$ns" later)
  wait_until 30 has_event "$ns" later NoNodeSelected "no node chosen" || fail "no NoNodeSelected Warning Event"
  wait_for_log wffc "INFO pvc: claim $ns/later names no node" 5 || fail "no INFO line for the claim without node"
  pv_gone "pvc-$uid" || fail "a PV was created without a node"
  # What the scheduler does for a WaitForFirstConsumer claim: MODIFIED provisions.
  kubectl -n "$ns" annotate pvc later volume.kubernetes.io/selected-node=kind-worker2 >/dev/null
  wait_until 60 bound "$ns" later || fail "the annotated claim never became Bound"
  [[ $(pv_field "pvc-$uid" '{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}') \
      == kind-worker2 ]] || fail "the PV is not on the annotated node"
  dir_exists kind-worker2 "$(dir_of "$ns" later "$uid")" || fail "no directory on kind-worker2"
}

# --- idempotence -----------------------------------------------------------

test_restart_and_repeated_events_make_no_second_job_or_volume() {
  local ns jobs ua ub pv_uid
  setup_class
  ns=$(new_namespace again)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  local runs
  setup_class
  ns=$(new_namespace again)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  # LOG_LEVEL=0: the snapshot says at DEBUG how many claims it saw and how many need a volume.
  pvc_operator first -n "$ns" -E "JOB_NAMESPACE=$ns,LOG_LEVEL=0"
  claim "$ns" a "$(on_node kind-worker)"
  ua=$(claim_uid "$ns" a)
  wait_until 60 bound "$ns" a || fail "claim a never became Bound"
  pv_uid=$(pv_field "pvc-$ua" '{.metadata.uid}')
  # Repeated MODIFIED events of a Bound claim.
  runs=$(grep -c "snapshot of 1 claims; 0 need a volume" "$(operator_log first)") || runs=0
  kubectl -n "$ns" annotate pvc a touch=1 >/dev/null
  kubectl -n "$ns" annotate pvc a touch=2 --overwrite >/dev/null
  wait_until 20 log_count_at_least first "snapshot of 1 claims; 0 need a volume" $((runs + 1)) \
    || fail "the MODIFIED events did not reach the hook"
  operator_stop first || true
  # Interrupted run: the claim b and its Job exist, no PV yet.
  claim "$ns" b "$(on_node kind-worker2)"
  ub=$(claim_uid "$ns" b)
  leftover_job "$ns" b kind-worker2 | kubectl create -f - >/dev/null
  pvc_operator second -n "$ns" -E "JOB_NAMESPACE=$ns,LOG_LEVEL=0"
  wait_for_log second "snapshot of 2 claims" 30 || fail "the restarted operator never ran the snapshot"
  wait_until 60 bound "$ns" b || fail "claim b never became Bound after the restart"
  wait_for_log second "found Job $ns/pvc-mkdir-$ub of an earlier attempt .* $ns/b; not creating another" 5 \
    || fail "the restarted operator did not pick up the leftover Job"
  [[ $(pv_field "pvc-$ua" '{.metadata.uid}') == "$pv_uid" ]] || fail "the PV of a was replaced"
  [[ $(kubectl get pv -l "operator-pvc/claim-uid=$ua" -o name | wc -l) == 1 ]] || fail "a has more than one PV"
  [[ $(mkdir_jobs_seen "$jobs" "$ua") == 1 ]] || fail "a second Job was created for a"
  [[ $(mkdir_jobs_seen "$jobs" "$ub") == 1 ]] || fail "a second Job was created for b"
}

log_count_at_least() {
  local n
  n=$(grep -cF -- "$2" "$(operator_log "$1")" 2>/dev/null) || n=0
  ((n >= $3))
}

# leftover_job NS CLAIM NODE: the Job the snapshot would have made for the claim
# alone, as if an earlier run was stopped while it ran (built with the hooks' own
# manifests.jq).
leftover_job() {
  local uid
  uid=$(claim_uid "$1" "$2")
  jq -n -L "$HOOKS/lib" --arg jobns "$1" --arg image busybox:1.35.0 --arg mode 0777 --arg dir "$VOLUMES" \
    --arg managed operator-pvc --argjson ttl 600 --arg node "$3" \
    --arg uid "$uid" --arg ns "$1" --arg name "$2" --arg path "$(dir_of "$1" "$2" "$uid")" \
    'include "manifests"; {$uid, $ns, $name, $path} as $c
     | mkdir_job($ARGS.named; "pvc-mkdir-\($uid)"; $node; [$c])'
}

# only_new_path PATH BEFORE AFTER: between the two listings only PATH (and
# the parents it needed) appeared.
only_new_path() {
  local p
  while IFS= read -r p; do
    [[ -z $p || $1 == "$p" || $1 == "$p"/* ]] || fail "the hooks touched another path: $p"
  done < <(comm -13 <(echo "$2") <(echo "$3"))
  grep -qxF -- "$1" <<<"$3" || fail "$1 was not created"
}

# --- many claims at once ------------------------------------------------------

# many_claims NS COUNT: COUNT 1Gi claims many-N, spread over the three nodes, in one apply.
many_claims() {
  local nodes=(kind-worker kind-worker2 kind-control-plane)
  jq -n --argjson n "$2" --argjson nodes "$(printf '%s\n' "${nodes[@]}" | jq -R . | jq -s .)" '
    {apiVersion: "v1", kind: "List", items: [range($n) as $i | {apiVersion: "v1",
      kind: "PersistentVolumeClaim", metadata: {name: "many-\($i)"},
      spec: {accessModes: ["ReadWriteOnce"], storageClassName: "local-storage",
        resources: {requests: {storage: "1Gi"}},
        selector: {matchLabels: {"kubernetes.io/hostname": $nodes[$i % 3]}}}}]}' |
    kubectl -n "$1" apply -f - >/dev/null
}

all_bound() {
  [[ $(kubectl -n "$1" get pvc -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Bound$') == "$2" ]]
}

# Runs that made Jobs, as the log shows them: each "need a volume" line starts a run;
# prints the most Jobs one run created on one node.
most_jobs_per_node_and_run() {
  awk '/ need a volume/ { run++ } / created Job / { for (i = 1; i <= NF; i++) if ($i == "node") n[run " " $(i + 1)]++ }
       END { m = 0; for (k in n) if (n[k] > m) m = n[k]; print m }' "$1"
}

test_many_claims_at_once_get_one_job_per_node_per_run() {
  local ns jobs seen created
  setup_class
  ns=$(new_namespace many)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  pvc_operator many -n "$ns" -E "JOB_NAMESPACE=$ns"
  many_claims "$ns" 30
  wait_until 90 all_bound "$ns" 30 || fail "not all 30 claims became Bound within 90 s"
  seen=$(jobs_seen_all "$jobs")
  created=$(grep -c ' created Job ' "$(operator_log many)") || created=0
  [[ $seen == "$created" ]] || fail "$seen Jobs were seen but the log names $created"
  ((seen >= 3 && seen < 30)) || fail "$seen Jobs for 30 claims on 3 nodes: not batched"
  [[ $(most_jobs_per_node_and_run "$(operator_log many)") == 1 ]] || fail "a run started two Jobs on one node"
  [[ $(kubectl get pv -o json | jq --arg ns "$ns" --arg dir "$VOLUMES" '[.items[] | .spec
      | select(.claimRef.namespace == $ns and .local.path == "\($dir)/pvc-\(.claimRef.uid)_\($ns)_\(.claimRef.name)")]
      | length') == 30 ]] \
    || fail "not every claim has its own PV with its own directory"
  dir_exists kind-control-plane "$(dir_of "$ns" many-2 "$(claim_uid "$ns" many-2)")" \
    || fail "no directory on kind-control-plane for many-2"
}

# jobs_seen_all FILE: how many distinct Jobs were ever created.
jobs_seen_all() {
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  jq -s '[.[] | .object.metadata.uid] | unique | length' "$1"
}

# --- claims that are not ours, and hostile ones -------------------------------

test_claim_of_another_class_is_untouched() {
  local ns uid jobs
  setup_class
  ns=$(new_namespace other)
  jobs=$CLUSTER_DIR/logs/$ns-jobs.json
  watch_jobs "$ns" "$jobs"
  pvc_operator other -n "$ns" -E "JOB_NAMESPACE=$ns"
  claim "$ns" foreign "$(on_node kind-worker)" standard
  uid=$(claim_uid "$ns" foreign)
  # A claim of the class on the same node after it: once that one is Bound, the
  # snapshot runs that saw both are over.
  claim "$ns" ours "$(on_node kind-worker)"
  wait_until 60 bound "$ns" ours || fail "the claim of the handled class beside it never became Bound"
  sleep 2
  [[ $(mkdir_jobs_seen "$jobs" "$uid") == 0 ]] || fail "a Job was started for another class"
  pv_gone "pvc-$uid" || fail "a PV was created for another class"
  no_jobs_for "$ns" "$uid" || fail "a Job was created for another class"
  [[ -z $(hook_events "$ns" foreign ProvisioningFailed)$(hook_events "$ns" foreign NoNodeSelected) ]] \
    || fail "the hooks posted Events on a claim of another class"
  [[ $(claim_phase "$ns" foreign) == Pending ]] || fail "the claim of another class changed phase"
  dir_gone kind-worker "$(dir_of "$ns" foreign "$uid")" || fail "a directory was made for another class"
}

test_hostile_claims_stay_confined() {
  local ns uid name dir before after
  setup_class
  ns=$(new_namespace trick)
  before=$(cd "$CLUSTER_DIR/nodes" && find . | sort)
  pvc_operator trick -n "$ns" -E "JOB_NAMESPACE=$ns"
  # A node "name" that is a path, where only the scheduler should write.
  claim "$ns" escape "" local-storage \
    "annotations: {volume.kubernetes.io/selected-node: ../../../../tmp/escape}"
  uid=$(claim_uid "$ns" escape)
  wait_until 30 has_event "$ns" escape ProvisioningFailed "is not a valid node name" \
    || fail "no Warning Event for a path as node name"
  pv_gone "pvc-$uid" || fail "a PV was created for a path as node name"
  no_jobs_for "$ns" "$uid" || fail "a Job was created for a path as node name"
  # The longest, dottiest name Kubernetes allows stays one path component.
  name=$(printf 'dots.%.0s' {1..50})end
  claim "$ns" "$name" "$(on_node kind-worker)"
  uid=$(claim_uid "$ns" "$name")
  wait_until 60 bound "$ns" "$name" || fail "the long-named claim never became Bound"
  dir=$(pv_field "pvc-$uid" '{.spec.local.path}')
  [[ $dir == "$VOLUMES/pvc-$uid"_* && ${dir#"$VOLUMES/"} != */* ]] \
    || fail "local.path $dir is not one component under $VOLUMES"
  dir_exists kind-worker "$dir" || fail "no directory $dir on kind-worker"
  after=$(cd "$CLUSTER_DIR/nodes" && find . | sort)
  only_new_path "./kind-worker$dir" "$before" "$after"
  kubectl -n "$ns" delete pvc "$name" --wait=false >/dev/null
  wait_until 60 pv_gone "pvc-$uid" || fail "the long-named claim's PV was not deleted"
  dir_gone kind-worker "$dir" || fail "the long-named claim's directory was not removed"
}

run_tests
