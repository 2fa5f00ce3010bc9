#!/usr/bin/env bash
# The project's whole test suite, as CI runs it: formatting, lints, shellcheck,
# unit and integration tests (cargo, against a real local control plane), then
# the end-to-end hook tests (tests/e2e: test_nodes.sh, test_incluster.sh and
# test_demo.sh on real nodes, the rest on simulated ones) and the demos
# (examples/demo.sh). On a fresh machine it first installs what it needs: the
# Debian packages below (apt, as root or through sudo; real nodes need
# containerd, runc, the CNI plugins, iptables, busybox-static and podman),
# rustfmt and clippy (rustup), and the control plane's and nodes' binaries
# (tests/cluster/build.sh, about 10-12 minutes once). kubectl must be on PATH.
#
#   tests/all.sh
# Env: CARGO_TARGET_DIR is honoured (.ci/run keeps it outside the checkout).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() { printf '\n== %s\n' "$*"; }

# command:package pairs the tests run.
TOOLS=(shellcheck:shellcheck jq:jq openssl:openssl curl:curl python3:python3 pgrep:procps setsid:util-linux)
# Packages without a command to look for: real nodes (tests/cluster/README.md)
# and the operator's image (deploy/build-image.sh).
PACKAGES=(containerd runc containernetworking-plugins iptables iproute2 busybox-static python3-yaml
  podman mmdebstrap uidmap)

install_tools() {
  local pair need=()
  for pair in "${TOOLS[@]}"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  for pair in "${PACKAGES[@]}"; do
    dpkg -s "$pair" >/dev/null 2>&1 || need+=("$pair")
  done
  if ((${#need[@]})); then
    echo "installing ${need[*]}"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "installing rustfmt and clippy"
    rustup component add rustfmt clippy
  fi
  command -v kubectl >/dev/null || { echo "tests/all.sh: kubectl is not on PATH" >&2; exit 1; }
  echo "tools ready"
}

step "tools"
install_tools

step "control plane binaries"
tests/cluster/build.sh >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "layers: imports point down src/'s layers (tests/layers.rs, docs/ARCHITECTURE.md)"
cargo test --locked --quiet --test layers

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "shellcheck"
mapfile -t scripts < <(grep -rlE '^#!.*(ba)?sh' hooks tests bench examples .ci | sort)
shellcheck -x "${scripts[@]}"
echo "${#scripts[@]} scripts clean"

step "cargo test"
cargo build --locked
cargo test --locked --no-fail-fast

step "end-to-end hook tests"
OPERATOR_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/operator" tests/e2e/run.sh
