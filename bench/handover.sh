#!/usr/bin/env bash
# Hand-over times of --leader-elect (issue 11), with the default timings unless
# runner flags are given after `--`.
#
#   bench/handover.sh [--rounds R] [--kubeconfig K] [-- RUNNER FLAGS...]
#
# Two instances on one Lease, a hook that appends "RUNNER NANOSECONDS" per run.
# Each round: SIGTERM to the leader, then the time from its exit to the standby's
# first hook (the standby lists and runs `added` for what exists); the stopped
# instance comes back as the standby; kill -9 to the new leader, then the time
# from the kill to the other's first hook. Prints every figure and the medians.
#
# Starts its own control plane (tests/cluster/start.sh --no-simulator) unless
# --kubeconfig is given. OPERATOR_BIN: the binary (default target/release/operator,
# else target/debug/operator).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=3
KUBECONFIG_ARG=
EXTRA=()
while (($#)); do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --kubeconfig) KUBECONFIG_ARG=${2:?}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "handover.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

BIN=${OPERATOR_BIN:-}
if [[ -z $BIN ]]; then
  BIN=$REPO/target/release/operator
  [[ -x $BIN ]] || BIN=$REPO/target/debug/operator
fi
[[ -x $BIN ]] || { echo "no operator binary at $BIN: run cargo build" >&2; exit 1; }

WORK=$(mktemp -d)
CLUSTER=
declare -A PID=()
cleanup() {
  local p
  exec 2>/dev/null # no "Killed" job notices
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ -n $CLUSTER ]]; then "$REPO/tests/cluster/stop.sh" --clean "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z $KUBECONFIG_ARG ]]; then
  CLUSTER=$("$REPO/tests/cluster/start.sh" --no-simulator --owner-pid $$)
  KUBECONFIG_ARG=$CLUSTER/kubeconfig
fi
export KUBECONFIG=$KUBECONFIG_ARG
NS=handover-$$
kubectl create namespace "$NS" >/dev/null
kubectl create configmap -n "$NS" existing >/dev/null

mkdir -p "$WORK/hooks"
cat >"$WORK/hooks/added" <<'HOOK'
#!/bin/sh
echo "$RUNNER $(date +%s%N)" >>"$RUNS"
HOOK
chmod +x "$WORK/hooks/added"
RUNS=$WORK/runs
touch "$RUNS"

start() {
  "$BIN" -o cm -n "$NS" -h "$WORK/hooks" -E "RUNNER=$1,RUNS=$RUNS" --leader-elect --lease-namespace "$NS" \
    -l "$WORK/$1.log" ${EXTRA[@]+"${EXTRA[@]}"} >/dev/null 2>&1 &
  PID[$1]=$!
}

count() {
  local n
  n=$(grep -c -- "$2" "$1" 2>/dev/null) || true
  echo "${n:-0}"
}

# restart NAME: starts NAME again and waits until it stands by.
restart() {
  local file=$WORK/$1.log n
  n=$(count "$file" "standing by:")
  start "$1"
  wait_count "$file" "standing by:" $((n + 1))
}

# wait_count FILE TEXT N: until FILE has N lines with TEXT.
wait_count() {
  local deadline=$((SECONDS + 120))
  until (($(count "$1" "$2") >= $3)); do
    ((SECONDS < deadline)) || { echo "timed out waiting for '$2' in $1" >&2; exit 1; }
    sleep 0.02
  done
}

# first_run_after RUNNER NANOS: the first hook of RUNNER that started after NANOS.
first_run_after() {
  local deadline=$((SECONDS + 120)) t
  while :; do
    t=$(awk -v r="$1" -v after="$2" '$1 == r && $2 > after {print $2; exit}' "$RUNS")
    [[ -z $t ]] || { echo "$t"; return; }
    ((SECONDS < deadline)) || { echo "no hook of $1 after $2" >&2; exit 1; }
    sleep 0.01
  done
}

ms() { echo $((($1 - $2) / 1000000)); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

leader=A standby=B
start A; wait_count "$WORK/A.log" "leading:" 1
restart B
term=() term_sig=() kill9=()
for ((r = 1; r <= ROUNDS; r++)); do
  sent=$(date +%s%N)
  kill -TERM "${PID[$leader]}"
  wait "${PID[$leader]}" || true
  exited=$(date +%s%N)
  # The standby acquires when the Lease is released, just before the old leader
  # exits, so its first hook may come first (a negative figure).
  first=$(first_run_after "$standby" "$sent")
  term+=("$(ms "$first" "$exited")") term_sig+=("$(ms "$first" "$sent")")
  restart "$leader"
  tmp=$leader leader=$standby standby=$tmp

  kill -9 "${PID[$leader]}"
  killed=$(date +%s%N)
  wait "${PID[$leader]}" 2>/dev/null || true
  kill9+=("$(ms "$(first_run_after "$standby" "$killed")" "$killed")")
  restart "$leader"
  tmp=$leader leader=$standby standby=$tmp
  echo "round $r: SIGTERM ${term[-1]} ms after the leader's exit (${term_sig[-1]} ms after the signal)," \
    "kill -9 ${kill9[-1]} ms after the kill" >&2
done
echo "flags: --leader-elect ${EXTRA[*]:-(default timings: --lease-duration 15s --renew-deadline 10s --retry-period 2s)}"
echo "SIGTERM hand-over (leader exit -> standby's first hook): ${term[*]} ms; median $(median "${term[@]}") ms"
echo "SIGTERM hand-over (signal -> standby's first hook): ${term_sig[*]} ms; median $(median "${term_sig[@]}") ms"
echo "kill -9 hand-over (kill -> standby's first hook): ${kill9[*]} ms; median $(median "${kill9[@]}") ms"
