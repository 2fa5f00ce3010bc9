#!/usr/bin/env bash
# Throughput cost of --listen with metrics on (issue 11, target: under 2 %).
#
#   bench/listen_cost.sh [--objects N] [--rounds R] [--kubeconfig K] [--out FILE]
#
# With N ConfigMaps existing (default 3000), the runner starts with a hook that
# appends one byte to a file (#!/bin/sh, as bench/e2e.py's throughput phase) and
# --workers $(nproc); the time from process start to N bytes is taken, alternately
# without and with `--listen 127.0.0.1:0`, R rounds each (default 5). With
# --listen, /metrics is scraped every second during the run, as Prometheus would
# (more often than its usual 15-60 s). Prints the median of each arm and the
# cost; with --out, writes them as JSON too.
#
# Starts its own control plane (tests/cluster/start.sh --no-simulator) unless
# --kubeconfig is given. OPERATOR_BIN: the binary (default target/release/operator,
# built when missing). Other load on the machine changes every figure: run it on a
# quiet machine, and read the spread (min-max) next to the medians.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=3000
ROUNDS=5
KUBECONFIG_ARG=
OUT=
while (($#)); do
  case $1 in
    --objects) N=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --kubeconfig) KUBECONFIG_ARG=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "listen_cost.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

BIN=${OPERATOR_BIN:-$REPO/target/release/operator}
if [[ ! -x $BIN ]]; then
  (cd "$REPO" && cargo build --release --locked --bin operator)
fi

WORK=$(mktemp -d)
CLUSTER=
cleanup() {
  if [[ -n $CLUSTER ]]; then "$REPO/tests/cluster/stop.sh" --clean "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z $KUBECONFIG_ARG ]]; then
  CLUSTER=$("$REPO/tests/cluster/start.sh" --no-simulator --owner-pid $$)
  KUBECONFIG_ARG=$CLUSTER/kubeconfig
fi
export KUBECONFIG=$KUBECONFIG_ARG
NS=listen-cost

kubectl create namespace "$NS" >/dev/null
echo "creating $N ConfigMaps in $NS" >&2
for ((i = 0; i < N; i += 500)); do
  for ((j = i; j < i + 500 && j < N; j++)); do
    printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%d"},"data":{"k":"v"}}\n' "$j"
  done | kubectl create -n "$NS" -f - >/dev/null
done

mkdir -p "$WORK/hooks"
cat >"$WORK/hooks/added" <<'HOOK'
#!/bin/sh
printf . >>"$COUNT"
HOOK
chmod +x "$WORK/hooks/added"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# One run; prints milliseconds from start to N hooks run.
run_once() {
  local label=$1; shift
  local count=$WORK/$label.count log=$WORK/$label.log
  rm -f "$count" "$log"
  local start; start=$(now_ms)
  "$BIN" -o cm -n "$NS" -h "$WORK/hooks" -E "COUNT=$count" --workers "$(nproc)" -l "$log" "$@" >"$log.out" 2>&1 &
  local pid=$! addr='' next_scrape=$((start + 1000)) size=0
  while ((size < N)); do
    sleep 0.02
    size=$(stat -c %s "$count" 2>/dev/null || echo 0)
    if (($# > 0)) && (($(now_ms) >= next_scrape)); then
      [[ -n $addr ]] || addr=$(grep -o '/readyz on http://[0-9.:]*' "$log" 2>/dev/null | sed 's|.*http://||' || true)
      [[ -z $addr ]] || curl -sf "http://$addr/metrics" >/dev/null || true
      next_scrape=$((next_scrape + 1000))
    fi
    kill -0 "$pid" 2>/dev/null || { echo "the runner exited; log: $log" >&2; cat "$log" >&2; exit 1; }
  done
  local took=$(($(now_ms) - start))
  # The runner's own CPU and its reaped hooks' CPU, in ms (fields 14-17 of stat).
  local tck; tck=$(getconf CLK_TCK)
  local cpu; cpu=$(awk -v t="$tck" '{printf "%d %d\n", ($14 + $15) * 1000 / t, ($16 + $17) * 1000 / t}' "/proc/$pid/stat")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$took $cpu"
}

off=() on=() off_cpu=() on_cpu=() off_all=() on_all=()
# record ARM "TOOK OWN HOOKS": wall ms, the runner's CPU ms, runner + hooks CPU ms.
record() {
  local took own hooks
  read -r took own hooks <<<"$2"
  if [[ $1 == off ]]; then off+=("$took") off_cpu+=("$own") off_all+=("$((own + hooks))")
  else on+=("$took") on_cpu+=("$own") on_all+=("$((own + hooks))"); fi
}
for ((r = 1; r <= ROUNDS; r++)); do
  # Alternate the order so that a drift in machine load hits both arms alike.
  if ((r % 2)); then
    record off "$(run_once off)"; record on "$(run_once on --listen 127.0.0.1:0)"
  else
    record on "$(run_once on --listen 127.0.0.1:0)"; record off "$(run_once off)"
  fi
  echo "round $r: without --listen ${off[-1]} ms (runner CPU ${off_cpu[-1]} ms)," \
    "with ${on[-1]} ms (runner CPU ${on_cpu[-1]} ms)" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
spread() { printf '%s\n' "$@" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
m_off=$(median "${off[@]}")
m_on=$(median "${on[@]}")
cost=$(awk -v a="$m_off" -v b="$m_on" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')
c_off=$(median "${off_cpu[@]}") c_on=$(median "${on_cpu[@]}")
a_off=$(median "${off_all[@]}") a_on=$(median "${on_all[@]}")
# CPU is what the hooks compete for: the runner's extra CPU against all the CPU a run takes.
cpu_cost=$(awk -v a="$c_off" -v b="$c_on" -v all="$a_off" 'BEGIN {printf "%.1f", (b - a) * 100 / all}')
rate_off=$(awk -v n="$N" -v t="$m_off" 'BEGIN {printf "%.0f", n * 1000 / t}')
rate_on=$(awk -v n="$N" -v t="$m_on" 'BEGIN {printf "%.0f", n * 1000 / t}')
echo "objects $N, rounds $ROUNDS, workers $(nproc), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "without --listen: median $m_off ms ($rate_off hooks/s), spread $(spread "${off[@]}") ms"
echo "with --listen (scraped every 1 s): median $m_on ms ($rate_on hooks/s), spread $(spread "${on[@]}") ms"
echo "runner CPU per run: median $c_off ms without, $c_on ms with; runner + hooks: $a_off ms, $a_on ms"
echo "throughput cost of --listen: $cost % by wall time; $cpu_cost % by CPU (the runner's extra CPU / all CPU of a run)"
if [[ -n $OUT ]]; then
  printf '{"objects":%d,"rounds":%d,"median_ms_without":%s,"median_ms_with":%s,"cost_percent":%s,%s}\n' \
    "$N" "$ROUNDS" "$m_off" "$m_on" "$cost" \
    "\"runner_cpu_ms_without\":$c_off,\"runner_cpu_ms_with\":$c_on,\"cpu_cost_percent\":$cpu_cost" >"$OUT"
fi
