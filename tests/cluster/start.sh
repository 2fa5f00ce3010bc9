#!/usr/bin/env bash
# Starts a local Kubernetes control plane for tests: etcd + kube-apiserver +
# kube-controller-manager on loopback (free ports), three simulated nodes kept
# Ready by a lease heartbeat, and the pod simulator (this project's operator
# running tests/cluster/kubelet); or real nodes (--real-nodes). A node that
# cannot start fails it with one line naming the node and why, and everything
# started is stopped again. Prints exactly one line on stdout: the
# cluster directory (kubeconfig in DIR/kubeconfig, logs in DIR/logs).
#
#   tests/cluster/start.sh [--dir DIR] [--owner-pid PID [--owner-clean]] [--no-simulator | --real-nodes]
#
# --owner-pid PID  stop the cluster (stop.sh DIR) as soon as PID is gone.
# --owner-clean    then also delete DIR, unless DIR/keep exists (a failed test's logs).
# --no-simulator   no pod simulator (pods then stay Pending, as without kubelet).
# --real-nodes     real nodes instead of simulated ones: kube-scheduler, and per
#                  worker of cluster.yaml a containerd and a kubelet, kube-proxy
#                  (README.md, "Real nodes"). DIR/tools-image names the small
#                  image every node holds. Env: CLUSTER_YAML (default: the
#                  repository's cluster.yaml), NODE_IMAGES (docker archives to
#                  load into every node, space-separated).
# Env: SIM_RUN_SECONDS (default 1) how long run-to-completion pods run;
#      OPERATOR_BIN path of the operator binary (default: ${CARGO_TARGET_DIR:-target}/debug/operator,
#      built with cargo when missing).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
# shellcheck source=real-nodes.sh
source "$HERE/real-nodes.sh"

DIR=
OWNER_PID=
OWNER_CLEAN=
SIMULATOR=1
REAL=0
STARTED=0
HOST_IP=

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

parse_args() {
  while (($#)); do
    case $1 in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --owner-pid) OWNER_PID=${2:?--owner-pid needs a value}; shift 2 ;;
      --owner-clean) OWNER_CLEAN=--clean; shift ;;
      --no-simulator) SIMULATOR=0; shift ;;
      --real-nodes) REAL=1; SIMULATOR=0; shift ;;
      -h|--help) usage ;;
      *) echo "start.sh: unknown argument $1" >&2; usage ;;
    esac
  done
  if [[ -n $OWNER_PID && ! $OWNER_PID =~ ^[0-9]+$ ]]; then
    echo "start.sh: --owner-pid needs a number" >&2; exit 2
  fi
}

# On failure: show the log that explains it, then stop what was started.
on_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  if [[ -n $DIR && -d $DIR/logs ]]; then
    local f=${FAILED_LOG:-}
    if [[ -n $f && -f $f ]]; then
      echo "start.sh: failed; last lines of $f:" >&2
      tail -n 30 "$f" >&2
    fi
    if ((STARTED)); then "$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true; fi
  fi
  exit "$rc"
}

fail() { echo "start.sh: $*" >&2; exit 1; }

# Timings of the start, for the README's numbers: DIR/logs/start.log.
T0=${EPOCHREALTIME//[!0-9]/}
step() {
  local us=$((${EPOCHREALTIME//[!0-9]/} - T0))
  printf '%d.%03d s %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >>"$DIR/logs/start.log"
}

prepare_dir() {
  if [[ -z $DIR ]]; then
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/kube-cluster.XXXXXX")
  fi
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  [[ -e $DIR/kubeconfig ]] && fail "$DIR already holds a cluster (stop.sh --clean it first)"
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/pki" "$DIR/nodes"
}

binaries() {
  FAILED_LOG=$DIR/logs/build.log
  if ! "$HERE/build.sh" >"$DIR/logs/build.out" 2>"$DIR/logs/build.log"; then
    fail "build.sh failed"
  fi
  BIN=$(tail -n 1 "$DIR/logs/build.out")
  [[ -x $BIN/kube-apiserver ]] || fail "no kube-apiserver in $BIN"
}

operator_binary() {
  ((SIMULATOR)) || return 0
  OPERATOR_BIN=${OPERATOR_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/operator}
  [[ -x $OPERATOR_BIN ]] && return 0
  FAILED_LOG=$DIR/logs/cargo.log
  echo "start.sh: building the operator (cargo build --locked --bin operator)" >&2
  (cd "$REPO" && cargo build --locked --bin operator) >"$FAILED_LOG" 2>&1 \
    || fail "cargo build failed"
  [[ -x $OPERATOR_BIN ]] || fail "no operator binary at $OPERATOR_BIN"
}

# Three distinct free loopback ports, held open together so they differ.
free_ports() {
  python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# CA, serving cert, front-proxy CA + client cert, service-account keys, token.
make_pki() {
  local p=$DIR/pki
  FAILED_LOG=$DIR/logs/pki.log
  {
    new_ca "$p/ca" kube-ca
    new_cert "$p/apiserver" "$p/ca" kube-apiserver \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1${HOST_IP:+,IP:$HOST_IP}" \
      serverAuth
    new_ca "$p/front-proxy-ca" front-proxy-ca
    new_cert "$p/front-proxy-client" "$p/front-proxy-ca" front-proxy-client "" clientAuth
    openssl ecparam -name prime256v1 -genkey -noout -out "$p/sa.key"
    openssl ec -in "$p/sa.key" -pubout -out "$p/sa.pub"
  } >"$FAILED_LOG" 2>&1 || fail "certificate generation failed"
  TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s,admin,admin,"system:masters"\n' "$TOKEN" >"$p/tokens.csv"
  chmod 600 "$p"/*.key "$p/tokens.csv"
}

new_ca() {
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}

# new_cert OUT CA CN EXTRA_EXT EXTENDED_KEY_USAGE
new_cert() {
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$5"
  [[ -n $4 ]] && ext+=$'\n'"$4"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$1.key" -subj "/CN=$3" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial \
    -days 3650 -out "$1.crt" -extfile <(printf '%s\n' "$ext")
  rm -f "$1.csr"
}

write_kubeconfig() {
  local ca
  ca=$(base64 -w0 "$DIR/pki/ca.crt")
  umask 077
  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: local
  context:
    cluster: local
    user: admin
    namespace: default
current-context: local
EOF
  umask 022
  printf '%s\n' "$API_PORT" >"$DIR/api-port"
}

# run NAME CMD...: start CMD in its own session (so stop.sh can end the whole
# process group), logs to DIR/logs/NAME.log, PID to DIR/pids/NAME.
run() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name"
  # stop.sh ends it, not this shell: no "Killed" report from bash on a failed start.
  disown $!
  STARTED=1
}

start_etcd() {
  run etcd etcd --name=default --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$PEER_PORT" \
    --initial-cluster="default=http://127.0.0.1:$PEER_PORT" \
    --quota-backend-bytes=2147483648 --snapshot-count=10000 --log-level=warn
}

# Simulated nodes: loopback only, and the `kubernetes` Service has no endpoint
# (nothing routes to it). Real nodes: their pods reach the API server through
# that Service, i.e. kube-proxy's rule to the advertised address on the veth.
network_flags() {
  if ((REAL)); then
    echo --bind-address=0.0.0.0 --advertise-address="$HOST_IP" --endpoint-reconciler-type=lease \
      --kubelet-preferred-address-types=InternalIP,Hostname
  else
    echo --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
  fi
}

start_apiserver() {
  local p=$DIR/pki flags
  read -r -a flags < <(network_flags)
  run kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" "${flags[@]}" \
    --secure-port="$API_PORT" --insecure-port=0 \
    --cert-dir="$p" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --token-auth-file="$p/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-key-file="$p/sa.pub" \
    --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" \
    --proxy-client-key-file="$p/front-proxy-client.key" \
    --feature-gates=TTLAfterFinished=true \
    --profiling=false \
    --v=1
}

start_controller_manager() {
  local p=$DIR/pki
  run kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kubeconfig" \
    --authentication-kubeconfig="$DIR/kubeconfig" \
    --authorization-kubeconfig="$DIR/kubeconfig" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$p/sa.key" \
    --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --leader-elect=false --kube-api-qps=200 --kube-api-burst=400 \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 \
    --feature-gates=TTLAfterFinished=true \
    --profiling=false \
    --v=1
}

# Polls until CMD succeeds, failing early when process NAME has died.
await() {
  local name=$1 timeout=$2
  shift 2
  FAILED_LOG=$DIR/logs/$name.log
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$DIR/pids/$name" "$DIR" || fail "$name exited"
    ((SECONDS < deadline)) || fail "$name not ready after ${timeout}s"
    sleep 0.1
  done
}

api() {
  curl -sf --max-time 5 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$API_PORT$1" "${@:2}"
}

etcd_ready() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
api_ready() { api /readyz >/dev/null; }
api_listening() { curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$API_PORT/livez"; }
# The service-account controller making default/default is a sign kcm works.
kcm_ready() { api /api/v1/namespaces/default/serviceaccounts/default >/dev/null; }

start_heartbeat() {
  run heartbeat "$HERE/nodes.sh" heartbeat "$DIR"
}

start_simulator() {
  ((SIMULATOR)) || return 0
  run kubelet env KUBECONFIG="$DIR/kubeconfig" KUBECACHEDIR="$DIR/kube-cache" CLUSTER_DIR="$DIR" \
    SIM_RUN_SECONDS="${SIM_RUN_SECONDS:-1}" \
    "$OPERATOR_BIN" -o pods -A -h "$HERE/kubelet" --workers 8 --resync 1s --hook-timeout 60s \
    -l "$DIR/logs/kubelet.log"
  FAILED_LOG=$DIR/logs/kubelet.log
  sleep 0.2
  alive "$DIR/pids/kubelet" "$DIR" || fail "the pod simulator exited"
}

start_watchdog() {
  [[ -n $OWNER_PID ]] || return 0
  run watchdog "$HERE/watchdog.sh" "$DIR" "$OWNER_PID" $OWNER_CLEAN
}

main() {
  parse_args "$@"
  trap on_exit EXIT
  prepare_dir
  binaries
  operator_binary
  step "binaries ready"
  if ((REAL)); then
    real_prereqs
    real_topology
    real_images
    real_network
    step "node images, network namespace"
  fi
  read -r ETCD_PORT PEER_PORT API_PORT < <(free_ports)
  make_pki
  write_kubeconfig
  step "ports and certificates"
  start_etcd
  # A watchdog from the start, so a caller dying mid-start leaks nothing.
  start_watchdog
  await etcd 20 etcd_ready
  step "etcd ready"
  start_apiserver
  # kcm waits up to 10 s for a healthy apiserver by itself: starting it as
  # soon as the apiserver listens overlaps both start-ups.
  await kube-apiserver 60 api_listening
  step "kube-apiserver listening"
  start_controller_manager
  await kube-apiserver 60 api_ready
  step "kube-apiserver ready"
  if ((REAL)); then
    real_start
  else
    FAILED_LOG=$DIR/logs/nodes.log
    "$HERE/nodes.sh" create "$DIR" >>"$DIR/logs/nodes.log" 2>&1 || fail "creating nodes failed"
    start_heartbeat
    step "nodes created"
  fi
  await kube-controller-manager 30 kcm_ready
  step "kube-controller-manager ready"
  start_simulator
  ((REAL)) || step "simulator started"
  echo "$DIR"
}

main "$@"
