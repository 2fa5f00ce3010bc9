#!/usr/bin/env bash
# Tests the hooks of examples/testing in the two ways docs/HOOKS.md describes,
# as kopf's 09-testing does with KopfRunner:
#   - the hook alone, with an event file and only the variables it reads;
#   - through the real runner on the local control plane: create and delete an
#     object, check the log lines, and that the runner exits 0 on SIGTERM.
# Run it from anywhere: examples/testing/test.sh (it starts a cluster, or uses
# the one in CLUSTER_DIR). Prints ok/FAILED per test; non-zero if any failed.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../tests/cluster/lib.sh
source "$HERE/../../tests/cluster/lib.sh"

test_the_hook_alone() {
  local dir out
  dir=$(mktemp -d)
  jq -n '{type: "ADDED", object: {apiVersion: "zalando.org/v1", kind: "KopfExample",
    metadata: {name: "kopf-example-1", namespace: "default"}, spec: {field: "value"}}}' >"$dir/event.json"
  # No LOG_FILE: log.sh writes to stderr, in the runner's line format.
  out=$(env -u LOG_FILE EVENT_TYPE=ADDED EVENT_FILE="$dir/event.json" LOG_LEVEL=1 "$HERE/added" 2>&1)
  rm -rf "$dir"
  grep -Eq '^[0-9-]{10} [0-9:]{8} INFO Creation event: \{"field":"value"\}$' <<<"$out" || fail "no creation line in: $out"
  grep -q 'INFO Something was logged here.' <<<"$out" || fail "no second line in: $out"
}

test_resource_lifecycle() {
  local ns rc=0
  cluster_up
  kubectl apply -f "$HERE/../crd.yaml" >/dev/null
  kubectl wait --for=condition=Established crd/kopfexamples.zalando.org --timeout=30s >/dev/null
  ns=$(new_namespace testing)
  operator_start testing -o kopfexamples -n "$ns" -h "$HERE"
  wait_for_log testing 'watching for changes' 30 || fail "the runner did not start"
  kubectl -n "$ns" create -f "$HERE/../obj.yaml" >/dev/null
  wait_for_log testing 'Something was logged here.' 30 || fail "the hook did not run"
  kubectl -n "$ns" delete -f "$HERE/../obj.yaml" >/dev/null
  operator_stop testing || rc=$?
  ((rc == 0)) || fail "the runner exited with $rc"
  grep -q 'Creation event: {"duration":"1m","field":"value","items":\["item1","item2"\]}' "$(operator_log testing)" ||
    fail "no creation line with the spec"
  ! grep -q ' ERROR ' "$(operator_log testing)" || fail "errors in the log"
}

run_tests
