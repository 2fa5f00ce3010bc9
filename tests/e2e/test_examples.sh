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
  wait_until 90 gone "$ns" pod/kopf-example-1-child || fail "the garbage collector did not delete the child pod"
}

children_recorded() {
  [[ $(kx_field "$1" '{.status.children[0]}') == "$(kubectl -n "$1" get pod kopf-example-1-child -o jsonpath='{.metadata.uid}')" ]]
}

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
  example subhandlers "$ns" --backoff-min 200ms --backoff-max 1s --retries 20
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
  kubectl -n "$ns" run doomed --image=busybox --restart=Never --labels=example.com/ttl-seconds=4 -- sleep 3600 >/dev/null
  kubectl -n "$ns" run spared --image=busybox --restart=Never -- sleep 3600 >/dev/null
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

run_tests
