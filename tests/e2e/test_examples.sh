#!/usr/bin/env bash
# examples/*: each example's hook directory run by the operator on the local
# control plane, checked for what its README promises (cluster state, log
# lines, Events). Each test fails when the behaviour it names is broken.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cluster_up

EXAMPLES=$REPO_ROOT/examples
kubectl apply -f "$EXAMPLES/crd.yaml" >/dev/null
kubectl wait --for=condition=Established crd/kopfexamples.zalando.org --timeout=30s >/dev/null

# Upper bound for a hook's reaction (a busy machine is slow; no cost otherwise).
REACT=30

# example NAME NS [ARGS...]: the operator on examples/NAME, watching KopfExamples in NS.
example() {
  local name=$1 ns=$2
  shift 2
  operator_start "$name" -o kopfexamples -n "$ns" -h "$EXAMPLES/$name" "$@"
  wait_for_log "$name" 'watching for changes' "$REACT"
}

# kopfexample NS [JQ_EDIT]: examples/obj.yaml in NS, edited by a jq expression.
kopfexample() {
  kubectl create --dry-run=client -o json -n "$1" -f "$EXAMPLES/obj.yaml" | jq "${2:-.}" |
    kubectl -n "$1" apply -f - >/dev/null
}

kx_field() { kubectl -n "$1" get kopfexample kopf-example-1 -o "jsonpath=$2"; }
exists() { kubectl -n "$1" get "$2" >/dev/null 2>&1; }
gone() { ! exists "$@"; }

# Events about OBJECT (kind/name) in NS with REASON, one JSON object per line.
events_about() {
  kubectl -n "$1" get events -o json | jq -c --arg kind "${2%%/*}" --arg name "${2#*/}" --arg r "$3" \
    '.items[] | select(.involvedObject.kind == $kind and .involvedObject.name == $name and .reason == $r)'
}
# event_count NS KIND/NAME REASON: the count of that one Event (0 when none).
event_count() { events_about "$@" | jq -s 'map(.count) | add // 0'; }
event_count_is() { [[ $(event_count "$1" "$2" "$3") == "$4" ]]; }

test_retries() {
  local ns log
  ns=$(new_namespace ex-retries)
  example retries "$ns" --backoff-min 200ms
  kopfexample "$ns"
  wait_for_log retries "hook added for $ns/kopf-example-1 exited with status 100; not retried" "$REACT" ||
    fail "no permanent failure"
  log=$(operator_log retries)
  grep -Eq "WARNING .*retries: attempt 1 for $ns/kopf-example-1: .*temporary" "$log" || fail "no attempt 1"
  grep -Eq "ERROR hook added for $ns/kopf-example-1 exited with status 1; retry 1 of 5" "$log" || fail "no retry 1"
  grep -Eq "ERROR hook added for $ns/kopf-example-1 exited with status 2; retry 2 of 5" "$log" || fail "no retry 2"
  grep -Eq "ERROR .*retries: attempt 3 for $ns/kopf-example-1: .*final" "$log" || fail "no attempt 3"
  (($(grep -c "retries: attempt" "$log") == 3)) || fail "a permanent failure was retried"
  [[ $(kx_field "$ns" '{.metadata.annotations.example\.com/attempts}') == 3 ]] || fail "attempts annotation is not 3"
  wait_until "$REACT" event_count_is "$ns" KopfExample/kopf-example-1 HookFailed 1 || fail "no HookFailed Event"
}

test_events() {
  local ns
  ns=$(new_namespace ex-events)
  example events "$ns"
  kopfexample "$ns"
  wait_for_log events "events: posted the events of kopfexample $ns/kopf-example-1" "$REACT" || fail "hook did not finish"
  [[ $(events_about "$ns" KopfExample/kopf-example-1 SomeReason | jq -r .type | sort | tr '\n' ' ') == "Normal Warning " ]] ||
    fail "no Normal and Warning SomeReason Events"
  events_about "$ns" KopfExample/kopf-example-1 SettingsMissing | jq -e 'select(.type == "Warning")
    | .message | test("no settings for kopf-example-1: .*not found")' >/dev/null || fail "no SettingsMissing Warning with kubectl's error"
  [[ $(event_count "$ns" ServiceAccount/default Noticed) == 1 ]] || fail "no Event about the service account"
  # Two changes that leave spec.field as it is: the same FieldSeen Event, counted.
  kubectl -n "$ns" annotate kopfexample kopf-example-1 example.com/touch=1 >/dev/null
  wait_until "$REACT" event_count_at_least "$ns" FieldSeen 1 || fail "no FieldSeen Event"
  local before
  before=$(event_count "$ns" KopfExample/kopf-example-1 FieldSeen)
  kubectl -n "$ns" annotate --overwrite kopfexample kopf-example-1 example.com/touch=2 >/dev/null
  wait_until "$REACT" event_count_at_least "$ns" FieldSeen $((before + 1)) || fail "the repeat was not counted"
  (($(events_about "$ns" KopfExample/kopf-example-1 FieldSeen | wc -l) == 1)) || fail "repeats made new Events"
}

event_count_at_least() { (($(event_count "$1" KopfExample/kopf-example-1 "$2") >= $3)); }

test_subhandlers() {
  local ns log
  ns=$(new_namespace ex-sub)
  example subhandlers "$ns" --ignore-status-changes --backoff-min 200ms --backoff-max 1s --retries 20
  kopfexample "$ns" '.spec.items = ["item1", "needs-config", "item2"]'
  wait_for_log subhandlers 'item needs-config of .* waits for configmap config' "$REACT" || fail "no waiting item"
  wait_for_log subhandlers 'exited with status 1; retry 2 of 20' "$REACT" || fail "the failed item was not retried"
  kubectl -n "$ns" create configmap config >/dev/null
  wait_until "$REACT" items_done "$ns" '["item1","item2","needs-config"]' || fail "not every item was done"
  kubectl -n "$ns" patch kopfexample kopf-example-1 --type=merge -p '{"spec":{"items":["item1","needs-config","item2","item3"]}}' >/dev/null
  wait_until "$REACT" items_done "$ns" '["item1","item2","item3","needs-config"]' || fail "the added item was not done"
  log=$(operator_log subhandlers)
  for item in item1 needs-config item2 item3; do
    (($(grep -c "=== Handling creation for $item. ===" "$log") == 1)) || fail "item $item was not handled exactly once"
  done
  # Its own status writes do not wake the hook: one MODIFIED, for the spec change.
  (($(grep -c "hook modified for $ns/kopf-example-1 succeeded" "$log") == 1)) || fail "status writes woke the hook"
}

items_done() { [[ $(kx_field "$1" '{.status.items}' | jq -c 'keys') == "$2" ]]; }

test_spies() {
  local ns
  ns=$(new_namespace ex-spies)
  example spies "$ns" -e
  kopfexample "$ns"
  wait_for_log spies "\[added $ns/kopf-example-1\] spy: event received: ADDED KopfExample $ns/kopf-example-1" "$REACT" ||
    fail "no spy line for ADDED"
  wait_for_log spies "event APPLY kopf-example-1: \{" "$REACT" || fail "-e did not log the raw event"
  kubectl -n "$ns" annotate kopfexample kopf-example-1 example.com/spied=yes >/dev/null
  wait_for_log spies "spy: event received: MODIFIED KopfExample $ns/kopf-example-1" "$REACT" || fail "no spy line for MODIFIED"
  kubectl -n "$ns" delete kopfexample kopf-example-1 >/dev/null
  wait_for_log spies "spy: event received: DELETED KopfExample $ns/kopf-example-1" "$REACT" || fail "no spy line for DELETED"
  wait_for_log spies "event DELETE kopf-example-1: \{" "$REACT" || fail "-e did not log the delete"
}

test_builtins() {
  local ns created gone_at
  ns=$(new_namespace ex-builtins)
  operator_start builtins -o pods -n "$ns" -h "$EXAMPLES/builtins" --resync 1s --label-selector example.com/ttl-seconds
  wait_for_log builtins 'watching for changes' "$REACT"
  kubectl -n "$ns" run doomed --image=busybox:1.35.0 --restart=Never --labels=example.com/ttl-seconds=4 -- sleep 3600 >/dev/null
  kubectl -n "$ns" run spared --image=busybox:1.35.0 --restart=Never -- sleep 3600 >/dev/null
  created=$(date -d "$(kubectl -n "$ns" get pod doomed -o jsonpath='{.metadata.creationTimestamp}')" +%s)
  wait_for_log builtins "=== Pod killing happens in 4s." "$REACT" || fail "added did not see the pod"
  wait_until "$REACT" gone "$ns" pod/doomed || fail "the pod was not deleted"
  gone_at=$(date +%s)
  ((gone_at - created >= 4)) || fail "the pod was deleted after $((gone_at - created))s, before its 4s"
  wait_for_log builtins "=== Pod killing happens NOW! \($ns/doomed\)" 1 || fail "no log line for the kill"
  wait_for_log builtins "=== Pod $ns/doomed is gone." "$REACT" || fail "deleted hook did not run"
  exists "$ns" pod/spared || fail "a pod without the label was deleted"
  ! grep -q "spared" "$(operator_log builtins)" || fail "hooks ran for a pod without the label"
}

# line_of NAME REGEX: the number of the first log line matching REGEX (empty if none).
line_of() { grep -nE -- "$2" "$(operator_log "$1")" | head -1 | cut -d: -f1; }

test_handlers() {
  local ns k a1 a2 f1 d1 d2
  ns=$(new_namespace ex-handlers)
  example handlers "$ns"
  k="$ns/kopf-example-1"
  kopfexample "$ns"
  wait_for_log handlers "\[field/spec.field $k\] FIELD CHANGED: spec.field: null -> \"value\"" "$REACT" || fail "no field hook on ADDED"
  a1=$(line_of handlers "\[added.d/10-first $k\] CREATED 1st")
  a2=$(line_of handlers "\[added.d/20-second $k\] CREATED 2nd")
  f1=$(line_of handlers "FIELD CHANGED: spec.field: null")
  if [[ -z $a1 || -z $a2 ]] || ((a1 > a2 || a2 > f1)); then
    fail "ADDED handlers not in order 10-first, 20-second, field/"
  fi
  kubectl -n "$ns" patch kopfexample kopf-example-1 --type=merge -p '{"spec":{"field":"other"}}' >/dev/null
  wait_for_log handlers "\[field/spec.field $k\] FIELD CHANGED: spec.field: \"value\" -> \"other\"" "$REACT" ||
    fail "no field hook for the change"
  wait_for_log handlers "\[modified $k\] UPDATED: spec.field$" "$REACT" || fail "modified did not name the changed field"
  kubectl -n "$ns" annotate kopfexample kopf-example-1 example.com/note=hi >/dev/null
  wait_for_log handlers "\[modified $k\] UPDATED: metadata.annotations.example.com/note$" "$REACT" ||
    fail "modified did not name the annotation"
  (($(grep -c "FIELD CHANGED" "$(operator_log handlers)") == 2)) || fail "the field hook ran for another field's change"
  kubectl -n "$ns" delete kopfexample kopf-example-1 >/dev/null
  wait_for_log handlers "\[deleted.d/20-second $k\] DELETED 2nd" "$REACT" || fail "no second DELETED handler"
  d1=$(line_of handlers "\[deleted.d/10-first $k\] DELETED 1st")
  d2=$(line_of handlers "DELETED 2nd")
  if [[ -z $d1 ]] || ((d1 > d2)); then fail "DELETED handlers not in order"; fi
}

FILTERS=(--label-selector somelabel --annotation-selector someannotation --filter '.spec.field == "value"')

# said NAME HOOK NS/OBJECT LINE: in NAME's log, HOOK printed LINE for the object.
said() { grep -q -- "\[$2 $3\] $4" "$(operator_log "$1")"; }

test_filters() {
  local ns log
  ns=$(new_namespace ex-filters)
  example filters "$ns" "${FILTERS[@]}"
  kopfexample "$ns" '.metadata.name = "all-match"'
  kopfexample "$ns" '.metadata.name = "no-annotation" | del(.metadata.annotations)'
  kopfexample "$ns" '.metadata.name = "other-field" | .spec.field = "other"'
  kopfexample "$ns" '.metadata.name = "other-values" | .metadata.labels.somelabel = "othervalue"
    | .metadata.annotations.someannotation = "othervalue"'
  wait_until "$REACT" said filters added "$ns/other-values" "Annotation not satisfied." || fail "other-values got no hook"
  wait_until "$REACT" said filters added "$ns/all-match" "Annotation exists." || fail "all-match got no hook"
  for line in "Label satisfied." "Label exists." "Annotation satisfied."; do
    said filters added "$ns/all-match" "$line" || fail "all-match: no '$line'"
  done
  for line in "Label satisfied." "Annotation satisfied."; do
    ! said filters added "$ns/other-values" "$line" || fail "other-values: '$line'"
  done
  # Moving in: the object now passes --filter, and gets ADDED.
  kubectl -n "$ns" patch kopfexample other-field --type=merge -p '{"spec":{"field":"value"}}' >/dev/null
  wait_until "$REACT" said filters added "$ns/other-field" "Label satisfied." || fail "other-field got no ADDED on matching"
  # Moving out: without its annotation, all-match is gone to the hooks.
  kubectl -n "$ns" annotate kopfexample all-match someannotation- >/dev/null
  wait_until "$REACT" said filters deleted "$ns/all-match" "filters: .* no longer passes the filters" ||
    fail "all-match got no DELETED on leaving"
  log=$(operator_log filters)
  ! grep -q "no-annotation" "$log" || fail "an object without the annotation got hooks"
  (($(grep -c "\[added $ns/all-match\] Label exists." "$log") == 1)) || fail "all-match got more than one ADDED"
}

cm_state() { kubectl -n "$1" get configmap examples-startup -o jsonpath='{.data.state}' 2>/dev/null; }
cm_state_is() { [[ $(cm_state "$1") == "$2" ]]; }

test_startup_and_shutdown() {
  local ns rc=0 log
  ns=$(new_namespace ex-startup)
  operator_start startup -o kopfexamples -n "$ns" -h "$EXAMPLES/startup" -E "STARTUP_NAMESPACE=$ns" \
    --backoff-min 200ms --backoff-max 1s --retries 30
  wait_for_log startup "hook .*startup exited with status 1; retry 2 of 30" "$REACT" || fail "startup was not retried"
  log=$(operator_log startup)
  ! grep -q 'watching for changes' "$log" || fail "the watch started before startup succeeded"
  kubectl -n "$ns" create configmap startup-config >/dev/null
  wait_for_log startup 'watching for changes' "$REACT" || fail "the watch did not start after startup succeeded"
  grep -Eq "startup: ready; configmap $ns/examples-startup says running" "$log" || fail "no startup line"
  cm_state_is "$ns" running || fail "startup did not record running"
  kopfexample "$ns"
  wait_for_log startup "startup: served kopfexample $ns/kopf-example-1" "$REACT" || fail "added did not run"
  operator_stop startup || rc=$?
  ((rc == 0)) || fail "the runner exited with $rc"
  grep -q "shutdown: cleaned up; configmap $ns/examples-startup says stopped" "$log" || fail "no shutdown line"
  cm_state_is "$ns" stopped || fail "shutdown did not record stopped"
}

# exited PID: the (child) process has ended, zombie or reaped.
exited() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

test_startup_failure_stops_the_runner() {
  local ns pid rc=0
  ns=$(new_namespace ex-startfail)
  operator_start startfail -o kopfexamples -n "$ns" -h "$EXAMPLES/startup" -E "STARTUP_NAMESPACE=$ns" \
    --backoff-min 100ms --retries 1
  pid=$(cat "$CLUSTER_DIR/pids/operator-startfail")
  wait_until "$REACT" exited "$pid" || fail "the runner did not stop"
  wait "$pid" || rc=$?
  ((rc == 1)) || fail "the runner exited with $rc, not 1"
  grep -q 'the startup hook failed' "$CLUSTER_DIR/logs/startfail.err" "$(operator_log startfail)" ||
    fail "no error naming the startup hook"
  ! grep -q 'watching for changes' "$(operator_log startfail)" || fail "the watch started"
}

# peer NAME NS PRIORITY: examples/peering as instance NAME with short Lease periods.
peer() {
  operator_start "$1" -o kopfexamples -n "$2" -h "$EXAMPLES/peering" -E "INSTANCE=$1" --leader-elect \
    --lease-namespace "$2" --priority "$3" --lease-duration 6s --renew-deadline 4s --retry-period 500ms
}

handled() { grep -q "instance $1 handled kopfexample $2" "$(operator_log "$1")"; }

test_peering() {
  local ns rc=0
  ns=$(new_namespace ex-peering)
  peer production "$ns" 0
  wait_for_log production 'leading: this instance' "$REACT" || fail "production did not lead"
  kopfexample "$ns" '.metadata.name = "first"'
  wait_until "$REACT" handled production "$ns/first" || fail "production did not handle first"
  peer dev "$ns" 100
  wait_for_log dev 'leading: this instance' "$REACT" || fail "dev (priority 100) did not take over"
  wait_for_log production "\(priority 100\) asks for the Lease .*: handing over" 1 || fail "production did not hand over"
  wait_for_log production 'standing by: .* \(priority 100\) leads' "$REACT" || fail "production is not standing by"
  kopfexample "$ns" '.metadata.name = "second"'
  wait_until "$REACT" handled dev "$ns/second" || fail "dev did not handle second"
  operator_stop dev || rc=$?
  ((rc == 0)) || fail "dev exited with $rc"
  wait_until "$REACT" leading_again production || fail "production did not resume after dev stopped"
  kopfexample "$ns" '.metadata.name = "third"'
  wait_until "$REACT" handled production "$ns/third" || fail "production did not handle third"
  ! grep -q "handled kopfexample $ns/third" "$(operator_log dev)" || fail "dev handled an object after it stopped"
  # While dev led, production ran no hook.
  awk '/asks for the Lease/ {h = 1} h && /leading: this instance/ {exit} h && /instance production handled/ {bad = 1} END {exit bad}' \
    "$(operator_log production)" || fail "production ran hooks while dev led"
}

leading_again() { (($(grep -c 'leading: this instance' "$(operator_log production)") >= 2)); }

# The example is itself a test script: it must pass on this cluster.
test_testing() {
  local out
  out=$(E2E_RESULTS='' TEST_FILTER='' "$EXAMPLES/testing/test.sh" 2>&1) || fail "examples/testing/test.sh failed: $out"
  grep -q '^ok test_the_hook_alone' <<<"$out" || fail "no ok for the hook alone: $out"
  grep -q '^ok test_resource_lifecycle' <<<"$out" || fail "no ok for the lifecycle: $out"
}

# Last: the garbage collector notices the new KopfExample kind at its next
# discovery (every 30 s after the CRD appeared), so earlier tests shorten the wait.
test_children() {
  local ns uid pod_owner
  ns=$(new_namespace ex-children)
  example children "$ns"
  kopfexample "$ns"
  wait_until "$REACT" exists "$ns" pod/kopf-example-1-child || fail "no child pod"
  uid=$(kx_field "$ns" '{.metadata.uid}')
  pod_owner=$(kubectl -n "$ns" get pod kopf-example-1-child -o json |
    jq -r '.metadata.ownerReferences[] | select(.controller) | "\(.kind) \(.name) \(.uid) \(.blockOwnerDeletion)"')
  [[ $pod_owner == "KopfExample kopf-example-1 $uid true" ]] || fail "pod's controller is '$pod_owner'"
  [[ $(kubectl -n "$ns" get pod kopf-example-1-child -o json | jq -r '.spec.containers[0].env[0].value') == value ]] ||
    fail "pod's FIELD is not spec.field"
  wait_until "$REACT" children_recorded "$ns" || fail "status.children does not hold the pod's uid"
  wait_for_log children 'children: pod .*/kopf-example-1-child \(uid .*\) belongs to kopfexample' 1 ||
    fail "no log line for the child"
  kubectl -n "$ns" delete kopfexample kopf-example-1 --wait=false >/dev/null
  # The garbage collector's delete sets deletionTimestamp; the pod then has its grace period.
  wait_until 90 deleting_or_gone "$ns" pod/kopf-example-1-child || fail "the garbage collector did not delete the child pod"
}

deleting_or_gone() {
  local json
  json=$(kubectl -n "$1" get "$2" -o json --ignore-not-found) || return 1
  [[ -z $json ]] || jq -e '.metadata.deletionTimestamp' <<<"$json" >/dev/null
}

children_recorded() {
  [[ $(kx_field "$1" '{.status.children[0]}') == "$(kubectl -n "$1" get pod kopf-example-1-child -o jsonpath='{.metadata.uid}')" ]]
}

run_tests
