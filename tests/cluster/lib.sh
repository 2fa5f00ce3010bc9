# shellcheck shell=bash
# Bash test support for end-to-end tests against the local control plane.
#
# A test script (tests/e2e/test_*.sh):
#
#   #!/usr/bin/env bash
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
#   cluster_up                       # one cluster per script, stopped on exit
#
#   test_something() {
#     local ns
#     ns=$(new_namespace pvc)
#     operator_start pvc -o pvc -n "$ns" -h "$REPO_ROOT/hooks/pvc"
#     kubectl -n "$ns" apply -f - <<<"$manifest"
#     wait_until 30 kubectl -n "$ns" get pvc x || fail "claim never appeared"
#     wait_for_log pvc 'created' 30 || fail "hook did not log"
#   }
#
#   run_tests                        # runs test_* in definition order
#
# Functions:
#   cluster_up                 start a cluster (tests/cluster/start.sh), export
#                              CLUSTER_DIR and KUBECONFIG, stop it on EXIT.
#                              With CLUSTER_DIR already set to a running
#                              cluster, uses that one and leaves it running.
#   cluster_up_real_nodes      the same with real nodes (start.sh --real-nodes);
#                              TOOLS_IMAGE is then the image every node holds.
#   new_namespace PREFIX       create a unique namespace, wait for its default
#                              service account, echo its name.
#   operator_start NAME ARGS.. run "$OPERATOR_BIN" ARGS -l $CLUSTER_DIR/logs/NAME.log
#                              in the background (stdout/stderr to
#                              logs/NAME.out and logs/NAME.err). Working
#                              directory: $REPO_ROOT. Stopped after the test.
#   operator_stop NAME         SIGTERM, wait (KILL after 10 s); returns the
#                              operator's exit status.
#   operator_log NAME          path of its log file.
#   wait_until SECONDS CMD..   run CMD every 0.2 s until it succeeds; non-zero
#                              (and a message on stderr) on timeout.
#   wait_for_log NAME REGEX SECONDS   wait until NAME's log matches REGEX (grep -E).
#   fail MESSAGE               print MESSAGE, this test's operator logs and the
#                              pod simulator's log tail; returns 1. Use as
#                              `check || fail "what went wrong"`.
#   run_tests                  run every test_* function (each in a subshell
#                              with set -e), print `ok NAME` / `FAILED NAME`,
#                              exit non-zero if any failed. TEST_FILTER=REGEX
#                              runs only matching tests. Counts go to
#                              $E2E_RESULTS (a file, set by tests/e2e/run.sh).
#
# Variables: REPO_ROOT, CLUSTER_DIR, KUBECONFIG, KUBECACHEDIR, OPERATOR_BIN (default
# ${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/operator), SIM_RUN_SECONDS (passed to start.sh).

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export REPO_ROOT
export OPERATOR_BIN=${OPERATOR_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/operator}
_LIB_OWN_CLUSTER=0
_LIB_OPERATORS=()

cluster_up() { _cluster_up simulated; }
cluster_up_real_nodes() { _cluster_up --real-nodes; }

# _cluster_up simulated|--real-nodes
_cluster_up() {
  local flags=(--owner-pid $$)
  [[ $1 == simulated ]] || flags+=("$1")
  if [[ -n ${CLUSTER_DIR:-} && -f $CLUSTER_DIR/kubeconfig ]]; then
    _cluster_env
    return 0
  fi
  CLUSTER_DIR=$("$REPO_ROOT/tests/cluster/start.sh" "${flags[@]}") || {
    echo "cluster_up: tests/cluster/start.sh failed" >&2
    return 1
  }
  _cluster_env
  _LIB_OWN_CLUSTER=1
  trap cluster_down EXIT
}

# kubectl's discovery cache is keyed by host:port, and ports get re-used by
# later clusters: keep one cache per cluster.
_cluster_env() {
  export CLUSTER_DIR KUBECONFIG=$CLUSTER_DIR/kubeconfig KUBECACHEDIR=$CLUSTER_DIR/kube-cache
  if [[ -f $CLUSTER_DIR/tools-image ]]; then TOOLS_IMAGE=$(<"$CLUSTER_DIR/tools-image"); export TOOLS_IMAGE; fi
}

cluster_down() {
  ((_LIB_OWN_CLUSTER)) || return 0
  "$REPO_ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
  # Keep the logs of failed runs for a look; drop the rest.
  if [[ ${_LIB_FAILED:-0} == 0 && -z ${KEEP_CLUSTER_DIR:-} ]]; then
    "$REPO_ROOT/tests/cluster/stop.sh" --clean "$CLUSTER_DIR" >/dev/null 2>&1 || true
  else
    echo "cluster logs kept in $CLUSTER_DIR/logs" >&2
  fi
}

new_namespace() {
  local prefix=${1:-test} ns
  ns=$(printf '%s-%s' "$prefix" "$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')")
  kubectl create namespace "$ns" >/dev/null || return 1
  # Pods are refused until the service-account controller made "default".
  wait_until 30 kubectl -n "$ns" get serviceaccount default >/dev/null || return 1
  echo "$ns"
}

operator_log() { echo "$CLUSTER_DIR/logs/$1.log"; }

operator_start() {
  local name=$1
  shift
  local logs=$CLUSTER_DIR/logs
  (cd "$REPO_ROOT" && exec "$OPERATOR_BIN" "$@" -l "$logs/$name.log" \
     >"$logs/$name.out" 2>"$logs/$name.err" </dev/null) &
  local pid=$!
  # In pids/ so stop.sh ends it too if the test script is killed.
  echo "$pid" >"$CLUSTER_DIR/pids/operator-$name"
  _LIB_OPERATORS+=("$name")
}

operator_stop() {
  local name=$1 pid rc=0
  local pidfile=$CLUSTER_DIR/pids/operator-$name
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  rm -f "$pidfile"
  return "$rc"
}

wait_until() {
  local timeout=$1
  shift
  local deadline=$((${EPOCHREALTIME//[!0-9]/} + timeout * 1000000))
  until "$@"; do
    if ((${EPOCHREALTIME//[!0-9]/} >= deadline)); then
      echo "wait_until: timed out after ${timeout}s: $*" >&2
      return 1
    fi
    sleep 0.2
  done
}

wait_for_log() {
  local name=$1 regex=$2 timeout=${3:-30}
  wait_until "$timeout" _log_matches "$CLUSTER_DIR/logs/$name.log" "$regex"
}

_log_matches() { grep -Eq -- "$2" "$1" 2>/dev/null; }

fail() {
  local name f
  {
    echo "FAIL: $*"
    for name in "${_LIB_OPERATORS[@]}"; do
      for f in "$CLUSTER_DIR/logs/$name".{log,out,err}; do
        [[ -s $f ]] || continue
        echo "--- ${f#"$CLUSTER_DIR/"} (last 60 lines)"
        tail -n 60 "$f"
      done
    done
    f=$CLUSTER_DIR/logs/kubelet.log
    if [[ -s $f ]]; then
      echo "--- pod simulator: logs/kubelet.log (last 20 lines)"
      tail -n 20 "$f"
    fi
    if [[ -d $CLUSTER_DIR/real ]]; then
      echo "--- real nodes: pods and the last events"
      kubectl get pods -A -o wide 2>&1 | tail -n 30
      kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 20
    fi
  } >&2
  return 1
}

# Test names in the order the script defines them.
_test_names() {
  grep -oE '^[[:space:]]*(function[[:space:]]+)?test_[A-Za-z0-9_]+[[:space:]]*\(\)' "$0" |
    sed -E 's/^[[:space:]]*(function[[:space:]]+)?//; s/[[:space:]]*\(\)$//'
}

_run_one() {
  local t=$1 name
  (
    set -euo pipefail
    # Operators a test started stop with it.
    trap 'for name in "${_LIB_OPERATORS[@]}"; do operator_stop "$name" || true; done' EXIT
    "$t"
  )
}

run_tests() {
  local t passed=0 failed=0 start rc
  for t in $(_test_names); do
    [[ -z ${TEST_FILTER:-} || $t =~ $TEST_FILTER ]] || continue
    start=$SECONDS
    set +e
    _run_one "$t"
    rc=$?
    set -e
    if ((rc == 0)); then
      echo "ok $t ($((SECONDS - start))s)"
      passed=$((passed + 1))
    else
      echo "FAILED $t ($((SECONDS - start))s)"
      failed=$((failed + 1))
      _LIB_FAILED=1
    fi
  done
  [[ -n ${E2E_RESULTS:-} ]] && echo "$passed $failed" >>"$E2E_RESULTS"
  ((failed == 0))
}
