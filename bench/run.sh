#!/usr/bin/env bash
# Runs the whole benchmark of issue 7 and prints the table; writes it, with the
# machine's description, into bench/RESULTS.md (between its results markers).
#
#   bench/run.sh [--phases LIST] [--keep]
#
# Steps: cargo build --release; criterion benches (benches/flatten.rs,
# benches/spawn.rs); a kopf virtualenv (/tmp/kopf-venv, created once from
# PyPI); a local control plane without the pod simulator (pods stay Pending);
# bench/e2e.py (latency, memory at 1,000 / 10,000 / 50,000 pods, throughput and
# start-up at 10,000); then the hook directories at scale, each on a control
# plane of its own (bench/scale.py: pvc, 200 claims at once, with the pod
# simulator; evc, 1,000 EVCs and 5,000 pods, without it); the bursts of issue 19
# (evc-burst: 5,000 pods, then 1,000 EVCs at once, unused, then 300 of them used;
# pvc-burst: 1,000 claims at once with the simulator; ticks: 1,000 ConfigMaps for a
# 100 ms `added` beside a 1 s `sync-all`); bench/report.py.
# About 10 minutes on 2 cores once built for the first part (575 s measured;
# a cold build adds about 10), plus about 5 per round of pvc and evc, and
# 10-15 per round of the bursts.
#
# --phases LIST  subset of latency,mem1k,throughput,mem10k,mem50k,pvc,evc,evc-burst,pvc-burst,ticks,
#                listen,handover (default: all); a subset writes its table into the work directory
#                and leaves RESULTS.md alone
# --keep         keep the work directory (logs, hook outputs) and print its path
# Env: KOPF_VENV (default /tmp/kopf-venv), BENCH_WORK (default: a new mktemp -d),
#      BENCH_ROUNDS (default 2): rounds of the scale phases, whose spread is the noise;
#      CARGO_TARGET_DIR: where cargo builds (the binary measured is its release/operator).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ALL_PHASES=latency,mem1k,throughput,mem10k,mem50k,pvc,evc,evc-burst,pvc-burst,ticks,listen,handover
PHASES=$ALL_PHASES
ROUNDS=${BENCH_ROUNDS:-2}
KEEP=0
KEEP_WORK=0
KOPF_VENV=${KOPF_VENV:-/tmp/kopf-venv}
CLUSTER=
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/operator

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while (($#)); do
  case $1 in
    --phases) PHASES=${2:?--phases needs a value}; shift 2 ;;
    --keep) KEEP=1; KEEP_WORK=1; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done

WORK=${BENCH_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/operator-bench.XXXXXX")}
mkdir -p "$WORK"
# Only a full run replaces the table in bench/RESULTS.md; a subset writes its own file.
RESULTS=$HERE/RESULTS.md
if [[ $PHASES != "$ALL_PHASES" ]]; then
  RESULTS=$WORK/RESULTS.md
  KEEP_WORK=1
fi

cleanup() {
  stop_cluster
  if ((KEEP_WORK)); then echo "run.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The cluster's directory holds etcd's data (about 130 MB with 50,000 pods): removed unless --keep.
stop_cluster() {
  [[ -n $CLUSTER ]] || return 0
  local clean=--clean
  ((KEEP)) && clean=
  "$REPO/tests/cluster/stop.sh" $clean "$CLUSTER" >/dev/null 2>&1 || true
  ((KEEP)) && echo "run.sh: cluster directory kept: $CLUSTER" >&2
  CLUSTER=
}

say() { printf '[run.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The machine, as the results file describes it; the load average is taken now, before anything runs.
describe_machine() {
  local server
  server=$(kubectl --kubeconfig "$CLUSTER/kubeconfig" version -o json 2>/dev/null \
    | jq -r '.serverVersion.gitVersion // "?"')
  {
    echo "date:        $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "load before: $LOAD_AT_START"
    echo "cpus:        $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
    echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel:      $(uname -sr)"
    echo "kubectl:     $(kubectl version --client -o json | jq -r .clientVersion.gitVersion), server $server"
    echo "rustc:       $(rustc --version)"
    # Only the end-to-end phases use kopf (and make its virtualenv).
    [[ ! -x $KOPF_VENV/bin/python ]] ||
      echo "kopf:        $("$KOPF_VENV/bin/python" -m pip show kopf 2>/dev/null | awk '/^Version/ {print $2}')" \
        "on $("$KOPF_VENV/bin/python" --version 2>&1)"
    echo "commit:      $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml || echo ' (+ uncommitted changes)')"
  } >"$WORK/machine.txt"
}

kopf_venv() {
  if "$KOPF_VENV/bin/python" -c 'import kopf' 2>/dev/null; then return 0; fi
  say "creating $KOPF_VENV with kopf from PyPI"
  python3 -m venv "$KOPF_VENV"
  "$KOPF_VENV/bin/pip" install -q kopf
}

# The phases of e2e.py (one control plane) and of scale.py (one each), in run order.
SCALE_LIST=(-e pvc -e evc -e evc-burst -e pvc-burst -e ticks)
E2E_PHASES=$(tr , '\n' <<<"$PHASES" | grep -vx "${SCALE_LIST[@]}" -e listen -e handover | paste -sd, || true)
SCALE_PHASES=$(tr , '\n' <<<"$PHASES" | grep -x "${SCALE_LIST[@]}" | paste -sd' ' || true)

# scale PHASE: one phase of bench/scale.py on a control plane of its own (pvc with the
# pod simulator, run by the release binary; evc without), BENCH_ROUNDS rounds.
scale() {
  local phase=$1 sim=() extra=()
  [[ $phase == pvc || $phase == pvc-burst ]] || sim=(--no-simulator)
  # Issue 19's bursts: 1,000 claims at once, all Bound within 90 s (the poll lasts 300 s).
  [[ $phase != pvc-burst ]] || extra=(--claims 1000 --pvc-timeout 300)
  say "starting a control plane for $phase ${sim[*]}"
  CLUSTER=$(OPERATOR_BIN=$BIN "$REPO/tests/cluster/start.sh" "${sim[@]}" --owner-pid $$)
  [[ -s $WORK/machine.txt ]] || describe_machine
  echo "load before $phase: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/machine.txt"
  say "scale: $phase, $ROUNDS rounds"
  python3 "$HERE/scale.py" --kubeconfig "$CLUSTER/kubeconfig" --operator "$BIN" \
    --repo "$REPO" --work "$WORK/$phase" --out "$WORK/scale.json" --phase "$phase" --repeat "$ROUNDS" "${extra[@]}"
  stop_cluster
}

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$SECONDS
cd "$REPO"
say "load average at start: $LOAD_AT_START"

say "cargo build --release --locked"
nice cargo build --release --locked --quiet

CRITERION=
echo '{}' >"$WORK/e2e.json"
if [[ -n $E2E_PHASES ]]; then
  say "criterion: flattening and spawn ceiling"
  SPAWN_BENCH_OUT=$WORK/spawn.json cargo bench --locked --quiet --bench flatten --bench spawn \
    >"$WORK/criterion.log" 2>&1 || { cat "$WORK/criterion.log" >&2; exit 1; }
  grep -E '^(flatten|true|sh-hook|runner-like|bash)|time:' "$WORK/criterion.log" >&2 || true
  CRITERION=${CARGO_TARGET_DIR:-$REPO/target}/criterion

  kopf_venv

  say "starting the local control plane (no pod simulator)"
  CLUSTER=$("$REPO/tests/cluster/start.sh" --no-simulator --owner-pid $$)
  describe_machine

  say "end-to-end: $E2E_PHASES"
  python3 "$HERE/e2e.py" --kubeconfig "$CLUSTER/kubeconfig" --operator "$BIN" \
    --kopf "$KOPF_VENV/bin/python" --work "$WORK" --out "$WORK/e2e.json" --cpus "$(nproc)" --phases "$E2E_PHASES" \
    --ceiling "$REPO"

  stop_cluster
fi

for phase in $SCALE_PHASES; do
  scale "$phase"
done
# Issue 11: the cost of --listen (metrics scraped every second) and the hand-over
# times of --leader-elect; each script starts a control plane of its own, and its
# summary goes into the table's description of the run.
for phase in listen handover; do
  grep -qx "$phase" <<<"${PHASES//,/$'\n'}" || continue
  say "$phase"
  script=$HERE/listen_cost.sh
  [[ $phase == listen ]] || script=$HERE/handover.sh
  OPERATOR_BIN=$BIN "$script" >"$WORK/$phase.txt" 2>"$WORK/$phase.log"
  { echo "$phase (bench/${script##*/}):"; tail -n 4 "$WORK/$phase.txt" | sed 's/^/  /'; } >>"$WORK/machine.txt"
done
# The load at the end includes the benchmark's own processes (cluster, tools, hooks).
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg) (run took $((SECONDS - START)) s)" >>"$WORK/machine.txt"

python3 "$HERE/report.py" --criterion "$CRITERION" --e2e "$WORK/e2e.json" --scale "$WORK/scale.json" \
  --spawn "$WORK/spawn.json" --machine "$WORK/machine.txt" --cpus "$(nproc)" --results "$RESULTS"
say "done in $((SECONDS - START)) s; table written to ${RESULTS#"$REPO"/}"
