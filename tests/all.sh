#!/usr/bin/env bash
# The project's whole test suite, as CI runs it: formatting, lints, shellcheck,
# unit and integration tests (cargo, against a real local control plane), then
# the end-to-end hook tests (tests/e2e). Needs the packages .ci/run installs.
#
#   tests/all.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() { printf '\n== %s\n' "$*"; }

step "control plane binaries"
tests/cluster/build.sh >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "shellcheck"
mapfile -t scripts < <(grep -rlE '^#!.*(ba)?sh' hooks tests bench .ci | sort)
shellcheck -x "${scripts[@]}"
echo "${#scripts[@]} scripts clean"

step "cargo test"
cargo build --locked
cargo test --locked --no-fail-fast

step "end-to-end hook tests"
OPERATOR_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/operator" tests/e2e/run.sh
