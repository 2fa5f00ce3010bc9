#!/usr/bin/env bash
# hooks/evc: EphemeralVolumeClaims on the local control plane, with short periods
# (the runner re-delivers every claim each second with --resync 1s). Each test
# fails when the behaviour it names is broken; deadlines are checked both ways
# (not too early, not too late).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cluster_up

kubectl apply -f "$REPO_ROOT/hooks/evc/crd.yaml" >/dev/null
kubectl wait --for=condition=Established crd/ephemeralvolumeclaims.zalando.org --timeout=30s >/dev/null

# Seconds a deletion may come after its deadline: resync, hook run, our polling.
SLACK=10
# Upper bound for waiting on a hook's reaction (a busy machine is slow; no cost otherwise).
REACT=30

# start_evc_operator NAME NS: the hooks with short default periods.
start_evc_operator() {
  operator_start "$1" -o evc -n "$2" -h "$REPO_ROOT/hooks/evc" --resync 1s \
    -E EXPIRY_PERIOD=10,GRACE_PERIOD=5,COUNTDOWN_INTERVAL=2
}

# evc_apply NS NAME SPEC_JSON [LABELS_JSON]
evc_apply() {
  jq -n --arg name "$2" --argjson spec "$3" --argjson labels "${4:-{\}}" \
    '{apiVersion: "zalando.org/v1", kind: "EphemeralVolumeClaim",
      metadata: {name: $name, labels: $labels}, spec: $spec}' |
    kubectl -n "$1" apply -f - >/dev/null
}

# pod_apply NS NAME CLAIM [MODE]: a run-to-completion pod mounting CLAIM, which the
# pod simulator runs for a second. MODE keep: the simulator keeps it Running.
# MODE manual: bound to a node nobody simulates, it stays Pending (in use) until
# the test finishes it with pod_finish, free of the simulator's delays.
pod_apply() {
  jq -n --arg name "$2" --arg claim "$3" --arg mode "${4:-}" '
    {apiVersion: "v1", kind: "Pod",
     metadata: {name: $name, labels: {application: "evc-demo"},
                annotations: (if $mode == "keep" then {"sim.operator-rs/keep-running": "true"}
                              else {} end)},
     spec: ({restartPolicy: "Never",
             volumes: [{name: "data", persistentVolumeClaim: {claimName: $claim}}],
             containers: [{name: "main", image: "busybox", command: ["sh", "-c", "true"],
                           volumeMounts: [{name: "data", mountPath: "/data"}]}]}
            + if $mode == "manual" then {nodeName: "node-without-kubelet"} else {} end)}' |
    kubectl -n "$1" apply -f - >/dev/null
}

# pod_finish NS NAME: report the pod Succeeded now, as a kubelet would.
pod_finish() {
  local patch
  patch=$(jq -cn --arg now "$(date -u +%FT%TZ)" '{status: {phase: "Succeeded",
    containerStatuses: [{name: "main", image: "busybox", imageID: "", ready: false,
      restartCount: 0, state: {terminated: {exitCode: 0, reason: "Completed",
                                            startedAt: $now, finishedAt: $now}}}]}}')
  kubectl -n "$1" patch pod "$2" --subresource=status --type=merge -p "$patch" >/dev/null
}

pod_running() { [[ $(kubectl -n "$1" get pod "$2" -o 'jsonpath={.status.phase}') == Running ]]; }
evc_field() { kubectl -n "$1" get evc "$2" -o "jsonpath=$3"; }
phase_is() { [[ $(evc_field "$1" "$2" '{.status.phase}' 2>/dev/null) == "$3" ]]; }
evc_gone() { [[ -z $(kubectl -n "$1" get evc "$2" -o name --ignore-not-found) ]]; }
pvc_exists() { [[ -n $(kubectl -n "$1" get pvc "$2" -o name --ignore-not-found) ]]; }

# The PVC is gone or its deletion was requested (a pod still naming it may hold
# it in Terminating through the kubernetes.io/pvc-protection finalizer).
pvc_deleted() {
  local pvc
  pvc=$(kubectl -n "$1" get pvc "$2" -o json --ignore-not-found)
  [[ -z $pvc ]] || jq -e '.metadata.deletionTimestamp != null' <<<"$pvc" >/dev/null
}

epoch() { date -u -d "$1" +%s; }
created_at() { epoch "$(evc_field "$1" "$2" '{.metadata.creationTimestamp}')"; }

# finished_at NS POD: when the pod's container finished.
finished_at() {
  epoch "$(kubectl -n "$1" get pod "$2" \
    -o 'jsonpath={.status.containerStatuses[0].state.terminated.finishedAt}')"
}

# deleted_on_time NS NAME DEADLINE: waits for the claim to go; it must not be
# gone before DEADLINE (1 s for timestamps' truncation) nor long after it.
deleted_on_time() {
  local ns=$1 name=$2 deadline=$3 now
  while ! evc_gone "$ns" "$name"; do
    now=$(date +%s)
    ((now <= deadline + SLACK)) || fail "$name still there $((now - deadline))s after its deadline"
    sleep 0.2
  done
  now=$(date +%s)
  ((now >= deadline - 1)) || fail "$name deleted $((deadline - now))s before its deadline"
}

# warning_events NS NAME REASON: how many Warning Events with REASON name the claim (by uid).
warning_events() {
  local uid
  uid=$(evc_field "$1" "$2" '{.metadata.uid}')
  kubectl -n "$1" get events -o json |
    jq --arg uid "$uid" --arg reason "$3" '[.items[] | select(.type == "Warning"
      and .reason == $reason and .involvedObject.uid == $uid
      and .involvedObject.kind == "EphemeralVolumeClaim"
      and .involvedObject.apiVersion == "zalando.org/v1")] | length'
}

pvc_labels() { kubectl -n "$1" get pvc "$2" -o json | jq -c '.metadata.labels // {}'; }
labels_are() { [[ $(pvc_labels "$1" "$2") == "$3" ]]; }
events_are() { [[ $(warning_events "$1" "$2" "$3") == "$4" ]]; }

test_expiry_without_pods() {
  local ns deadline owner
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" unused '{"size": "1Gi"}'
  deadline=$(( $(created_at "$ns" unused) + 10 ))
  wait_until "$REACT" pvc_exists "$ns" unused || fail "no PVC created"
  owner=$(kubectl -n "$ns" get pvc unused -o json | jq -c '.metadata.ownerReferences')
  jq -e --arg uid "$(evc_field "$ns" unused '{.metadata.uid}')" \
    '. == [{apiVersion: "zalando.org/v1", kind: "EphemeralVolumeClaim", name: "unused",
            uid: $uid, controller: true, blockOwnerDeletion: true}]' <<<"$owner" >/dev/null \
    || fail "the PVC is not owned by the claim: $owner"
  [[ $(kubectl -n "$ns" get pvc unused -o 'jsonpath={.spec.resources.requests.storage}') == 1Gi ]] \
    || fail "the PVC does not request 1Gi"
  wait_for_log "evc-$ns" "$ns/unused: Phase Pending" "$REACT" || fail "phase never Pending"
  wait_for_log "evc-$ns" "$ns/unused: Countdown to expiry: [0-9]+s left" "$REACT" \
    || fail "no expiry countdown logged"
  deleted_on_time "$ns" unused "$deadline"
  wait_for_log "evc-$ns" "$ns/unused: Countdown to expiry: reached! Deleting the EVC\\." "$REACT" \
    || fail "the expiry was not logged"
  wait_until "$REACT" pvc_deleted "$ns" unused || fail "the PVC was not deleted with the claim"
  wait_for_log "evc-$ns" "$ns/unused: Deleted; " "$REACT" || fail "the deleted hook did not run"
}

test_running_pod_keeps_claim_past_expiry() {
  local ns deadline
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" busy '{"size": "1Gi", "expiryPeriod": 16}'
  deadline=$(( $(created_at "$ns" busy) + 16 ))
  wait_for_log "evc-$ns" "$ns/busy: Phase Pending" "$REACT" || fail "phase never Pending"
  pod_apply "$ns" worker busy keep
  wait_until "$REACT" phase_is "$ns" busy InUse || fail "phase never InUse with the pod"
  wait_until 60 pod_running "$ns" worker || fail "the simulator never ran the pod"
  wait_for_log "evc-$ns" "$ns/busy: Countdown to expiry: cancelled" "$REACT" \
    || fail "the cancelled expiry countdown was not logged"
  [[ -n $(evc_field "$ns" busy '{.status.lastUsed}') ]] || fail "status.lastUsed not recorded"
  while (($(date +%s) < deadline + 3)); do sleep 0.5; done
  phase_is "$ns" busy InUse || fail "the claim did not stay InUse past its expiry"
  pvc_exists "$ns" busy || fail "the PVC of a claim in use went away"
}

test_grace_after_pod_finishes() {
  local ns deadline
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" job '{"size": "1Gi", "expiryPeriod": 120, "gracePeriod": 4}'
  pod_apply "$ns" once job
  # The simulator runs the pod for a second; it is slow on a busy machine.
  wait_until 60 phase_is "$ns" job Released || fail "phase never Released after the pod finished"
  deadline=$(( $(finished_at "$ns" once) + 4 ))
  [[ $(epoch "$(evc_field "$ns" job '{.status.deadline}')") == "$deadline" ]] \
    || fail "status.deadline is not the pod's finish + gracePeriod"
  wait_for_log "evc-$ns" "$ns/job: Countdown to cleanup: [0-9]+s left" "$REACT" \
    || fail "no cleanup countdown logged"
  deleted_on_time "$ns" job "$deadline"
  wait_for_log "evc-$ns" "$ns/job: Countdown to cleanup: reached! Deleting the EVC\\." "$REACT" \
    || fail "the end of the grace period was not logged"
  wait_until "$REACT" pvc_deleted "$ns" job || fail "the PVC was not deleted with the claim"
}

test_second_pod_cancels_grace() {
  local ns first_deadline
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" shared '{"size": "1Gi", "expiryPeriod": 120, "gracePeriod": 5}'
  pod_apply "$ns" first shared manual
  wait_until "$REACT" phase_is "$ns" shared InUse || fail "phase never InUse with the first pod"
  pod_finish "$ns" first
  wait_until "$REACT" phase_is "$ns" shared Released || fail "phase never Released"
  first_deadline=$(epoch "$(evc_field "$ns" shared '{.status.deadline}')")
  pod_apply "$ns" second shared manual
  wait_until "$REACT" phase_is "$ns" shared InUse || fail "the second pod did not make it InUse"
  wait_for_log "evc-$ns" "$ns/shared: Countdown to cleanup: cancelled" "$REACT" \
    || fail "the cancelled cleanup countdown was not logged"
  while (($(date +%s) < first_deadline + 2)); do sleep 0.5; done
  phase_is "$ns" shared InUse || fail "the claim did not stay InUse past the first grace period"
  # Gone without a finish time: the grace period counts from when that is seen.
  kubectl -n "$ns" delete pod second --grace-period=0 --force >/dev/null 2>&1
  wait_until "$REACT" phase_is "$ns" shared Released || fail "phase never Released after the second pod"
  deleted_on_time "$ns" shared "$(epoch "$(evc_field "$ns" shared '{.status.deadline}')")"
}

test_restart_mid_countdown_deletes_on_time() {
  local ns expiry_deadline grace_deadline restart_at
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns-a" "$ns"
  evc_apply "$ns" finished '{"size": "1Gi", "expiryPeriod": 120, "gracePeriod": 24}'
  pod_apply "$ns" quick finished manual
  wait_until "$REACT" phase_is "$ns" finished InUse || fail "phase never InUse"
  pod_finish "$ns" quick
  grace_deadline=$(( $(finished_at "$ns" quick) + 24 ))
  evc_apply "$ns" idle '{"size": "1Gi", "expiryPeriod": 24}'
  expiry_deadline=$(( $(created_at "$ns" idle) + 24 ))
  wait_for_log "evc-$ns-a" "$ns/finished: Countdown to cleanup: [0-9]+s left" "$REACT" \
    || fail "no cleanup countdown"
  wait_for_log "evc-$ns-a" "$ns/idle: Countdown to expiry: [0-9]+s left" "$REACT" \
    || fail "no expiry countdown"
  operator_stop "evc-$ns-a" || true
  # Back 6 s before the first deadline: counting afresh from the restart (or from
  # when the restarted operator first sees the claim) would be 18 s late or more.
  restart_at=$(( (expiry_deadline < grace_deadline ? expiry_deadline : grace_deadline) - 6 ))
  (( $(date +%s) < restart_at )) || fail "too slow to test: the countdowns ended before the stop"
  while (($(date +%s) < restart_at)); do sleep 0.2; done
  start_evc_operator "evc-$ns-b" "$ns"
  if ((expiry_deadline <= grace_deadline)); then
    deleted_on_time "$ns" idle "$expiry_deadline"
    deleted_on_time "$ns" finished "$grace_deadline"
  else
    deleted_on_time "$ns" finished "$grace_deadline"
    deleted_on_time "$ns" idle "$expiry_deadline"
  fi
  wait_for_log "evc-$ns-b" "$ns/finished: Countdown to cleanup: reached!" "$REACT" \
    || fail "the restarted operator did not log the end of the grace period"
}

test_missing_or_invalid_size() {
  local ns out
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  # The schema requires spec.size: the server refuses a claim without one.
  if out=$(evc_apply "$ns" nosize '{}' 2>&1); then fail "a claim without spec.size was accepted"; fi
  [[ $out == *size* ]] || fail "the refusal does not name spec.size: $out"
  # Its format is the hooks' to check: Failed, a message, a Warning Event, no PVC.
  evc_apply "$ns" badsize '{"size": "lots"}'
  wait_until "$REACT" phase_is "$ns" badsize Failed || fail "phase never Failed with size 'lots'"
  [[ $(evc_field "$ns" badsize '{.status.message}') == *size* ]] || fail "no message about the size"
  sleep 3 # a few resyncs: still no PVC, still one Event
  pvc_exists "$ns" badsize && fail "a PVC was created for an invalid size"
  [[ $(warning_events "$ns" badsize InvalidSize) == 1 ]] \
    || fail "expected one InvalidSize Warning Event, got $(warning_events "$ns" badsize InvalidSize)"
}

test_foreign_pvc_is_never_adopted() {
  local ns before after
  ns=$(new_namespace evc)
  kubectl -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: taken, labels: {owner: someone-else}}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
EOF
  before=$(kubectl -n "$ns" get pvc taken -o json | jq -c '{metadata: (.metadata | {uid, labels,
    annotations, ownerReferences}), spec: .spec.resources}')
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" taken '{"size": "2Gi", "expiryPeriod": 2}' '{"app": "mine"}'
  wait_until "$REACT" phase_is "$ns" taken Failed || fail "phase never Failed on a name clash"
  [[ $(evc_field "$ns" taken '{.status.message}') == *"not owned"* ]] || fail "no clash message"
  [[ $(warning_events "$ns" taken NameConflict) == 1 ]] || fail "no NameConflict Warning Event"
  sleep 4 # past the claim's expiry period
  after=$(kubectl -n "$ns" get pvc taken -o json | jq -c '{metadata: (.metadata | {uid, labels,
    annotations, ownerReferences}), spec: .spec.resources}')
  [[ $after == "$before" ]] || fail "the foreign PVC was changed: $before -> $after"
  kubectl -n "$ns" delete evc taken >/dev/null
  wait_for_log "evc-$ns" "$ns/taken: Deleted; PVC $ns/taken is not its own, left alone" "$REACT" \
    || fail "the deleted hook did not leave the foreign PVC alone"
  pvc_deleted "$ns" taken && fail "the foreign PVC was deleted"
  return 0
}

test_labels_and_size_propagate() {
  local ns want
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns" "$ns"
  evc_apply "$ns" labelled '{"size": "1Gi", "expiryPeriod": 120}' '{"a": "1", "b": "2"}'
  wait_until "$REACT" pvc_exists "$ns" labelled || fail "no PVC created"
  labels_are "$ns" labelled '{"a":"1","b":"2"}' || fail "labels not copied on creation"
  kubectl -n "$ns" label pvc labelled own=kept >/dev/null
  kubectl -n "$ns" label evc labelled a=9 b- c=3 --overwrite >/dev/null
  want='{"a":"9","c":"3","own":"kept"}'
  wait_until "$REACT" labels_are "$ns" labelled "$want" \
    || fail "PVC labels $(pvc_labels "$ns" labelled), want $want"
  kubectl -n "$ns" patch evc labelled --type=merge -p '{"spec": {"size": "2Gi"}}' >/dev/null
  # The 1.20 server refuses to grow an unbound claim: the claim says so.
  wait_until "$REACT" events_are "$ns" labelled ResizeRefused 1 \
    || fail "no ResizeRefused Warning Event for 2Gi"
  kubectl -n "$ns" patch evc labelled --type=merge -p '{"spec": {"size": "512Mi"}}' >/dev/null
  wait_until "$REACT" events_are "$ns" labelled ShrinkNotSupported 1 \
    || fail "no ShrinkNotSupported Warning Event for 512Mi"
}

# evc_list NS FIRST N SPEC_JSON: claims FIRST-0 .. FIRST-(N-1), one List in one kubectl
# apply, so that they arrive together, as a burst does.
evc_list() {
  jq -n --arg first "$2" --argjson n "$3" --argjson spec "$4" '
    {apiVersion: "v1", kind: "List", items: [range($n) | {apiVersion: "zalando.org/v1",
      kind: "EphemeralVolumeClaim", metadata: {name: "\($first)-\(.)"}, spec: $spec}]}' |
    kubectl -n "$1" apply -f - >/dev/null
}

# phases_are NS WANT: the claims' phases, counted ({"Pending":30,...}), are WANT.
phases_are() {
  [[ $(phase_counts "$1") == "$2" ]]
}

phase_counts() {
  kubectl -n "$1" get evc -o json | jq -c '[.items[].status.phase // "none"]
    | group_by(.) | map({(.[0]): length}) | add // {}'
}

# owned_pvcs NS: how many PVCs of the namespace are owned by the claim of their name.
owned_pvcs() {
  kubectl -n "$1" get pvc -o json | jq '[.items[] | .metadata.name as $n
    | select(any(.metadata.ownerReferences[]?; .kind == "EphemeralVolumeClaim" and .name == $n
                 and .controller == true))] | length'
}

test_burst_with_bad_claims_gets_pvcs_and_statuses() {
  local ns
  ns=$(new_namespace evc)
  kubectl -n "$ns" create -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: clash}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
YAML
  start_evc_operator "evc-$ns" "$ns"
  # 30 good claims, one with a bad size and one whose name is taken, in one apply.
  jq -n '{apiVersion: "v1", kind: "List", items: ([range(30) | {name: "good-\(.)", size: "1Gi"}]
      + [{name: "bad", size: "lots"}, {name: "clash", size: "1Gi"}])
      | map({apiVersion: "zalando.org/v1", kind: "EphemeralVolumeClaim", metadata: {name: .name},
             spec: {size: .size, expiryPeriod: 300}})}' | kubectl -n "$ns" apply -f - >/dev/null
  wait_until "$REACT" phases_are "$ns" '{"Failed":2,"Pending":30}' \
    || fail "not every claim got its phase: $(phase_counts "$ns")"
  [[ $(owned_pvcs "$ns") == 30 ]] || fail "expected 30 PVCs owned by their claims, got $(owned_pvcs "$ns")"
  [[ $(warning_events "$ns" bad InvalidSize) == 1 ]] || fail "no InvalidSize Warning Event on the bad claim"
  [[ $(warning_events "$ns" clash NameConflict) == 1 ]] || fail "no NameConflict Warning Event on the clash"
  ! pvc_exists "$ns" bad || fail "a PVC was created for the bad size"
  wait_for_log "evc-$ns" "$ns/good-29: Countdown to expiry: [0-9]+s left" "$REACT" \
    || fail "no countdown logged for the last good claim"
  wait_for_log "evc-$ns" 'evc: snapshot of [0-9]+ claims: [0-9]+ new, [0-9]+ PVCs created' "$REACT" \
    || fail "no snapshot run was logged"
}

test_pvc_refused_by_quota_is_reported_and_retried() {
  local ns refused=q-0
  ns=$(new_namespace evc)
  kubectl -n "$ns" create quota claims --hard=persistentvolumeclaims=1 >/dev/null
  # The quota is enforced once its controller has counted what exists.
  wait_until "$REACT" quota_counted "$ns" claims || fail "the quota was never counted"
  start_evc_operator "evc-$ns" "$ns"
  evc_list "$ns" q 2 '{"size": "1Gi", "expiryPeriod": 300}'
  wait_until "$REACT" phases_are "$ns" '{"Failed":1,"Pending":1}' \
    || fail "one claim should have its PVC, the other not: $(phase_counts "$ns")"
  ! pvc_exists "$ns" q-0 || refused=q-1
  [[ $(evc_field "$ns" "$refused" '{.status.message}') == *"could not create PVC"*quota* ]] \
    || fail "the message does not say why: $(evc_field "$ns" "$refused" '{.status.message}')"
  wait_until "$REACT" events_are "$ns" "$refused" PVCNotCreated 1 || fail "no PVCNotCreated Warning Event"
  sleep 3 # a few passes try again: still one Event
  events_are "$ns" "$refused" PVCNotCreated 1 || fail "the Event was posted again"
  kubectl -n "$ns" delete quota claims >/dev/null
  wait_until "$REACT" pvc_exists "$ns" "$refused" || fail "the PVC was not created once the quota went"
  wait_until "$REACT" phase_is "$ns" "$refused" Pending || fail "the claim did not resume its lifecycle"
}

quota_counted() {
  [[ -n $(kubectl -n "$1" get quota "$2" -o 'jsonpath={.status.hard}') ]]
}

# no_claims_left NS
no_claims_left() { [[ -z $(kubectl -n "$1" get evc -o name) ]]; }

test_many_claims_expiring_together_go_in_one_pass() {
  local ns n=25 last=0 i t
  ns=$(new_namespace evc)
  start_evc_operator "evc-$ns-a" "$ns"
  # More than lib/bulk.sh's DELETE_ONE_BY_ONE, and all due when the operator is back.
  evc_list "$ns" x "$n" '{"size": "1Gi", "expiryPeriod": 20}'
  wait_until "$REACT" phases_are "$ns" "{\"Pending\":$n}" || fail "not every claim became Pending: $(phase_counts "$ns")"
  operator_stop "evc-$ns-a" || true
  for ((i = 0; i < n; i++)); do
    t=$(($(created_at "$ns" "x-$i") + 20))
    ((t <= last)) || last=$t
  done
  while (($(date +%s) <= last)); do sleep 0.3; done
  start_evc_operator "evc-$ns-b" "$ns"
  wait_until "$SLACK" no_claims_left "$ns" || fail "claims left ${SLACK}s after the restart: $(phase_counts "$ns")"
  # The pass's summary line comes once it has deleted their PVCs too.
  wait_for_log "evc-$ns-b" "evc: pass over $n claims: [0-9]+ statuses written, $n deleted" "$REACT" \
    || fail "the claims were not deleted by one pass"
  [[ $(grep -c "Countdown to expiry: reached! Deleting the EVC" "$CLUSTER_DIR/logs/evc-$ns-b.log") == "$n" ]] \
    || fail "not every deletion was logged once"
  for ((i = 0; i < n; i++)); do
    wait_until "$REACT" pvc_deleted "$ns" "x-$i" || fail "the PVC of x-$i was not deleted"
  done
}

run_tests
