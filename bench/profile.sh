#!/usr/bin/env bash
# Where the runner's own CPU goes while it runs hooks (the evidence behind the
# throughput analysis in bench/RESULTS.md). Not part of bench/run.sh.
#
#   bench/profile.sh [N]     (default N = 10000 pods; needs perf)
#
# Starts a control plane without the pod simulator, creates N pods, then runs
# target/release/operator -o pods -A --workers $(nproc) twice: with no hook (watch,
# list, queue only) and with the trivial hook under `perf record -a -g`. Prints the
# runner's own CPU time per event in both runs and the profile of the runner's
# process alone (perf report --pid), children included.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
N=${1:-10000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/operator-profile.XXXXXX")
CLUSTER=
OP=

cleanup() {
  # run() works in a command substitution (a subshell): its runner's pid is in WORK/pid.
  [[ -f $WORK/pid ]] && OP=$(cat "$WORK/pid")
  if [[ -n $OP ]] && kill -0 "$OP" 2>/dev/null; then kill "$OP" || true; fi
  if [[ -n $CLUSTER ]]; then "$REPO/tests/cluster/stop.sh" --clean "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v perf >/dev/null || { echo "profile.sh: perf is needed" >&2; exit 1; }
cd "$REPO"
cargo build --release --locked --quiet
CLUSTER=$(tests/cluster/start.sh --no-simulator --owner-pid $$)
export KUBECONFIG=$CLUSTER/kubeconfig
python3 -c "
import sys; sys.path.insert(0, '$HERE')
import e2e
e2e.top_up(e2e.Kube('$KUBECONFIG'), $N)
"

# cpu_seconds PID: utime + stime of the process itself (its threads, not its children).
cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat"; }

# run HOOKS: starts the runner, waits until COUNT (if the hook writes it) has N bytes
# or the runner went quiet, prints its CPU seconds.
run() {
  local hooks=$1 count=$WORK/count
  rm -f "$count"
  target/release/operator -o pods -A -h "$hooks" -l "$WORK/op.log" --workers "$(nproc)" &
  OP=$!
  echo "$OP" >"$WORK/pid"
  local last=-1 now
  while true; do
    sleep 0.5
    if [[ -f $hooks/added ]]; then
      (($(stat -c %s "$count" 2>/dev/null || echo 0) >= N)) && break
    else
      now=$(cpu_seconds "$OP")
      grep -q " listed $N pods" "$WORK/op.log" 2>/dev/null && [[ $now == "$last" ]] && break
      last=$now
    fi
  done
  cpu_seconds "$OP"
  kill "$OP"
  wait "$OP" || true
  OP=
}

mkdir -p "$WORK/none" "$WORK/trivial"
printf '#!/bin/sh\nprintf . >>%s\n' "$WORK/count" >"$WORK/trivial/added"
chmod +x "$WORK/trivial/added"

idle=$(run "$WORK/none")
echo "runner CPU, no hook (list + watch + queue):  $idle s for $N pods"
perf record -q -a -g -F 2000 -o "$WORK/perf.data" -- sleep 600 2>/dev/null &
PERF=$!
sleep 1
busy=$(run "$WORK/trivial")
kill -INT "$PERF"
wait "$PERF" || true
echo "runner CPU, trivial hook:                    $busy s for $N hooks"
awk -v a="$idle" -v b="$busy" -v n="$N" \
  'BEGIN { printf "runner CPU per hook beyond the watch:         %.0f µs\n", (b - a) / n * 1e6 }'
opid=$(cat "$WORK/pid")
echo "profile of the runner's process (pid $opid), share of its samples:"
perf report -i "$WORK/perf.data" --pid "$opid" --percentage relative --children --sort sym -g none 2>/dev/null \
  | grep -E '%' | grep -vE '^#' | head -60
