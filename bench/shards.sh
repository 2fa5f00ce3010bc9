#!/usr/bin/env bash
# Scaling out with --shards (issue 20): hooks per second with 1, 2 and 3 members,
# and how long a killed member's objects take to be taken over.
#
#   bench/shards.sh [--objects N] [--members "1 2 3"] [--kubeconfig K] [-- RUNNER FLAGS...]
#
# For each member count: a fresh namespace, that many members with --shards (default
# --workers), then N ConfigMaps created in bursts of 500 (kubectl create of a List,
# all bursts at once; the arrival rate is printed beside the hook rate):
# the `added` hook appends "RUNNER NAME NANOSECONDS" and sleeps 50 ms. Reported: the
# time from the first hook's start to the N-th, and hooks per second. With the largest
# member count, one member is then killed with SIGKILL: reported are the time from
# the kill to the first and to the last `added` of its objects on the other members.
#
# Starts its own control plane (tests/cluster/start.sh --no-simulator) unless
# --kubeconfig is given. OPERATOR_BIN: the binary (default target/release/operator,
# else target/debug/operator).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OBJECTS=3000
MEMBERS="1 2 3"
KUBECONFIG_ARG=
EXTRA=()
while (($#)); do
  case $1 in
    --objects) OBJECTS=${2:?}; shift 2 ;;
    --members) MEMBERS=${2:?}; shift 2 ;;
    --kubeconfig) KUBECONFIG_ARG=${2:?}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "shards.sh: unknown argument $1" >&2; exit 2 ;;
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

mkdir -p "$WORK/hooks"
cat >"$WORK/hooks/added" <<'HOOK'
#!/bin/sh
echo "$RUNNER $EVENT_OBJECT_METADATA_NAME $(date +%s%N)" >>"$RUNS"
sleep 0.05
HOOK
chmod +x "$WORK/hooks/added"

# start NS NAME RUNS: a member of the group in NS.
start() {
  "$BIN" -o cm -n "$1" -h "$WORK/hooks" -E "RUNNER=$2,RUNS=$3" --shards --lease-namespace "$1" \
    -l "$WORK/$1-$2.log" ${EXTRA[@]+"${EXTRA[@]}"} >/dev/null 2>&1 &
  PID[$1-$2]=$!
}

# wait_for DESCRIPTION COMMAND...: until the command succeeds (at most 10 minutes).
wait_for() {
  local what=$1 deadline=$((SECONDS + 600))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; exit 1; }
    sleep 0.1
  done
}

members_seen() { # NS N: every member's last membership line says N members
  local f
  for f in "$WORK/$1"-*.log; do
    grep "shard group" "$f" 2>/dev/null | tail -1 | grep -q ": $2 member(s)" || return 1
  done
}

runs_at_least() { (($(wc -l <"$1") >= $2)); }

create() { # NS: OBJECTS ConfigMaps in bursts of 500, all bursts at once
  local i from items jobs=()
  for ((from = 0; from < OBJECTS; from += 500)); do
    items=()
    for ((i = from; i < from + 500 && i < OBJECTS; i++)); do
      items+=("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"obj-$i\"}}")
    done
    local IFS=,
    echo "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[${items[*]}]}" | kubectl create -n "$1" -f - >/dev/null &
    jobs+=($!)
  done
  wait "${jobs[@]}"
}

ms() { echo $((($1 - $2) / 1000000)); }

last_n=0 last_ns=
for n in $MEMBERS; do
  ns=shards-$n-$$
  kubectl create namespace "$ns" >/dev/null
  runs=$WORK/$ns.runs
  touch "$runs"
  for ((m = 1; m <= n; m++)); do start "$ns" "m$m" "$runs"; done
  wait_for "$n members" members_seen "$ns" "$n"
  created=$(date +%s%N)
  create "$ns"
  echo "  $OBJECTS objects created in $(ms "$(date +%s%N)" "$created") ms" >&2
  wait_for "$OBJECTS hooks" runs_at_least "$runs" "$OBJECTS"
  # kube-root-ca.crt runs too; only the objects count.
  read -r first last < <(grep ' obj-' "$runs" | sort -k3 -n | awk 'NR == 1 {f = $3} {l = $3} END {print f, l}')
  took=$(ms "$last" "$first")
  echo "$n member(s): $OBJECTS hooks of 50 ms in $took ms: $(awk -v n="$OBJECTS" -v t="$took" 'BEGIN {printf "%.0f", n / t * 1000}') hooks/s" \
    "($(grep ' obj-' "$runs" | awk '{print $1}' | sort | uniq -c | awk '{printf "%s %s ", $2, $1}'))"
  last_n=$n last_ns=$ns
done

if ((last_n > 1)); then
  ns=$last_ns runs=$WORK/$last_ns.runs
  before=$(wc -l <"$runs")
  victim=m1
  grep "^$victim obj-" "$runs" | awk '{print $2}' | sort -u >"$WORK/victim"
  kill -9 "${PID[$ns-$victim]}"
  killed=$(date +%s%N)
  rm -f "$WORK/$ns-$victim.log"
  wait_for "the others to run the victim's objects" \
    sh -c "tail -n +$((before + 1)) '$runs' | awk '\$1 != \"$victim\" {print \$2}' | sort -u | comm -12 - '$WORK/victim' | wc -l | grep -qx $(wc -l <"$WORK/victim")"
  read -r first last < <(tail -n +$((before + 1)) "$runs" | awk -v v="$victim" '$1 != v' |
    grep -Fwf "$WORK/victim" | sort -k3 -n | awk 'NR == 1 {f = $3} {l = $3} END {print f, l}')
  echo "kill -9 of 1 of $last_n members ($(wc -l <"$WORK/victim") objects):" \
    "first taken over after $(ms "$first" "$killed") ms, all after $(ms "$last" "$killed") ms"
fi
echo "flags: --shards ${EXTRA[*]:-(default timings: --lease-duration 15s --renew-deadline 10s --retry-period 2s)}; default --workers on $(nproc) CPUs"
