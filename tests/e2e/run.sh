#!/usr/bin/env bash
# Runs the end-to-end tests: every tests/e2e/test_*.sh, or the ones named.
# Each script starts its own cluster (tests/cluster/start.sh). The last line
# printed is always `N passed, N failed` (tests, plus one failure for each
# script that died before reporting). Exit status: 0 when nothing failed.
#
#   tests/e2e/run.sh [tests/e2e/test_x.sh ...]
# Env: OPERATOR_BIN (skips the cargo build), TEST_FILTER (regex on test names),
#      KEEP_CLUSTER_DIR=1 (keep cluster dirs, even of passing scripts).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

scripts=("$@")
if ((${#scripts[@]} == 0)); then
  scripts=("$HERE"/test_*.sh)
fi

# Test what the sources say now, not a stale binary.
if [[ -z ${OPERATOR_BIN:-} ]]; then
  if ! (cd "$REPO" && cargo build --locked --bin operator); then
    echo "cargo build failed"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
export E2E_RESULTS=$results
passed=0
failed=0

for script in "${scripts[@]}"; do
  echo "=== ${script#"$REPO/"}"
  before=$(wc -l <"$results")
  bash "$script"
  rc=$?
  if (($(wc -l <"$results") == before)); then
    echo "FAILED ${script##*/} (exit $rc before reporting results)"
    failed=$((failed + 1))
  fi
done

while read -r p f; do
  passed=$((passed + p))
  failed=$((failed + f))
done <"$results"

echo "$passed passed, $failed failed"
((failed == 0))
