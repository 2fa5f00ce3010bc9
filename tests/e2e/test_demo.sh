#!/usr/bin/env bash
# examples/demo.sh, the README's first command: both demos run from start to
# finish on real nodes (a pod writes into the volume, a pod uses the EVC's
# claim), and neither a finished nor an interrupted (Ctrl-C) demo leaves a
# process, a container or a cluster behind. Each demo starts its own cluster.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"

DEMO=$REPO_ROOT/examples/demo.sh
# No cluster of this script's own: each demo starts one (lib.sh's fail reads this).
CLUSTER_DIR=
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# The cluster directory the demo printed.
demo_dir() { sed -n 's/^cluster: //p' "$1" | head -n 1; }

# No process mentions DIR (the control plane, the nodes, containerd's shims, the
# operator's -l) and no PID file is left in DIR/pids (stop.sh removes each once
# its process is gone).
nothing_running() {
  local dir=$1 out=$2
  [[ -n $dir ]] || fail "the demo printed no cluster directory: $(cat "$out")" || return 1
  local procs
  procs=$(pgrep -af -- "$dir" || true)
  [[ -z $procs ]] || fail "processes left behind: $procs" || return 1
  [[ -z $(ls -A "$dir/pids" 2>/dev/null) ]] || fail "PID files left behind: $(ls "$dir/pids")" || return 1
}

# A demo that ran to the end also removes its cluster directory.
nothing_left() {
  nothing_running "$@" || return 1
  [[ ! -e $1 ]] || fail "cluster directory $1 left behind"
}

test_pvc_demo_reaches_bound_shows_the_directory_and_leaves_nothing() {
  local out=$OUT/pvc rc=0
  "$DEMO" pvc >"$out" 2>&1 || rc=$?
  ((rc == 0)) || fail "demo.sh pvc exited $rc: $(tail -n 40 "$out")"
  grep -q 'persistentvolumeclaim/localstorage-claim *Bound' "$out" || fail "no Bound claim shown: $(cat "$out")"
  grep -qE '^drwx.* /.*/nodes/kind-worker2/mnt/local-volumes/pvc-.*_localstorage-claim$' "$out" ||
    fail "the node directory is not shown: $(cat "$out")"
  grep -q '^written by uid 1000 at ' "$out" || fail "no pod wrote into the volume (kubectl logs): $(cat "$out")"
  grep -qE '^-rw.* 1000 +1000 .*/nodes/kind-worker2/mnt/local-volumes/pvc-.*_localstorage-claim/hello.txt$' "$out" ||
    fail "the pod's file is not shown on the node's disk: $(cat "$out")"
  grep -q '^removed .*_localstorage-claim$' "$out" || fail "deleting the claim did not remove the directory"
  nothing_left "$(demo_dir "$out")" "$out"
}

test_evc_demo_runs_a_pod_on_the_claim_then_cleans_up_and_leaves_nothing() {
  local out=$OUT/evc rc=0
  "$DEMO" evc >"$out" 2>&1 || rc=$?
  ((rc == 0)) || fail "demo.sh evc exited $rc: $(tail -n 40 "$out")"
  grep -q 'Created PVC' "$out" || fail "no PVC created: $(cat "$out")"
  grep -q 'Phase InUse: In use by pod(s) evc-user' "$out" || fail "the claim was not InUse by the pod: $(cat "$out")"
  grep -qx 'used' "$out" || fail "the pod's log (kubectl logs) is not shown: $(cat "$out")"
  grep -qE 'Countdown to cleanup: [0-9]+s left' "$out" || fail "no countdown shown: $(cat "$out")"
  grep -q 'Countdown to cleanup: reached' "$out" || fail "no cleanup shown: $(cat "$out")"
  grep -q 'No resources found' "$out" || fail "the claim or its PVC survived: $(tail -n 20 "$out")"
  nothing_left "$(demo_dir "$out")" "$out"
}

# Ctrl-C in a terminal sends SIGINT to the whole foreground process group. The demo
# runs in a session of its own here, with SIGINT back to its default: a background
# job of a non-interactive shell (this one) would inherit it ignored, and bash does
# not let a script trap a signal ignored at its start.
as_foreground() {
  exec python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

test_ctrl_c_while_the_operator_runs_leaves_nothing() {
  local out=$OUT/int pid rc=0
  as_foreground "$DEMO" evc >"$out" 2>&1 &
  pid=$!
  wait_until 180 grep -q 'Countdown to expiry' "$out" || { kill -KILL -- "-$pid"; fail "demo never got going: $(cat "$out")"; }
  kill -INT -- "-$pid"
  wait "$pid" || rc=$?
  ((rc == 130)) || fail "demo.sh exited $rc after SIGINT, expected 130: $(tail -n 20 "$out")"
  grep -q 'stopped the operator' "$out" || fail "the operator was not stopped: $(tail -n 20 "$out")"
  nothing_left "$(demo_dir "$out")" "$out"
}

run_tests
