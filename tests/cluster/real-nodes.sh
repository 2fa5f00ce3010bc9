# shellcheck shell=bash
# Real nodes for start.sh --real-nodes (real_* start functions) and stop.sh
# (real_stop_*), sourced by both. Layout (README.md, "Real nodes"):
#
#   one network namespace per cluster, held by the `netns` process: a veth
#     opr-nK (machine side, 10.250.K.1/24) <-> eth0 (inside), every node's IP
#     10.250.K.(i+1) on eth0, kube-proxy's rules, the CNI bridges cbrI
#     (pods 10.244.I.0/24); the machine's own iptables and routes stay as they are
#   per worker node of cluster.yaml: a mount namespace (node.sh) holding its
#     containerd and kubelet, its disks (extraMounts) and runtime directories
#   kube-scheduler on the machine, beside the control plane
#
# Globals used: DIR, BIN, HERE, API_PORT, TOKEN (start.sh), run, fail, step.

REAL_NET_PREFIX=10.250
REAL_POD_PREFIX=10.244
# Machine-wide: the lock serialising the choice of K, the sysctls the kubelet
# changes (saved once, restored when the last real-node cluster stops).
REAL_STATE=/run/operator-rs-nodes
REAL_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
REAL_PACKAGES=(containerd runc containernetworking-plugins iptables busybox-static python3-yaml iproute2 util-linux)

# --- prerequisites, topology, images -----------------------------------------------

real_prereqs() {
  local p missing=()
  FAILED_LOG=
  for p in "${REAL_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  echo "start.sh: installing ${missing[*]} (real nodes)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >>"$DIR/logs/apt.log" 2>&1 \
    || fail "installing ${missing[*]} failed (see $DIR/logs/apt.log)"
}

# cluster.yaml (kind's format) -> REAL_NODES (worker names, as kind names them)
# and REAL_MOUNTS[name] (their extraMounts' containerPaths). A YAML parser
# (python3-yaml), not awk: it is a user-edited file where comments, flow style
# and quoting are all legal.
real_topology() {
  local out line
  FAILED_LOG=
  out=$(python3 - "${CLUSTER_YAML:-$REPO/cluster.yaml}" 2>&1 <<'PY'
import re, sys, yaml
path = sys.argv[1]
def die(msg):
    sys.exit(f"{path}: {msg}")
try:
    cfg = yaml.safe_load(open(path))
except (OSError, yaml.YAMLError) as e:
    die(f"cannot read it: {e}")
if not isinstance(cfg, dict) or cfg.get("kind") != "Cluster":
    die("not a kind Cluster config (kind: Cluster)")
name = cfg.get("name") or "kind"
workers = [n for n in cfg.get("nodes") or [] if isinstance(n, dict) and n.get("role") == "worker"]
if not workers:
    die("no node with role: worker")
for i, n in enumerate(workers):
    paths = []
    for m in n.get("extraMounts") or []:
        p = str(m.get("containerPath", ""))
        if not re.fullmatch(r"(/[A-Za-z0-9_][A-Za-z0-9._-]*)+", p) or "/.." in p:
            die(f"worker {i + 1}: containerPath must be an absolute path without . or .., got {p!r}")
        paths.append(p)
    print(f"{name}-worker{'' if i == 0 else i + 1}", *paths)
PY
  ) || fail "$out"
  REAL_NODES=()
  declare -gA REAL_MOUNTS=()
  while read -r -a line; do
    REAL_NODES+=("${line[0]}")
    REAL_MOUNTS[${line[0]}]=${line[*]:1}
  done <<<"$out"
}

# The images every node loads: TOOLS_IMAGE/PAUSE_IMAGE and their archives.
real_images() {
  local out
  FAILED_LOG=
  out=$("$HERE/images.sh" 2>&1) || fail "building the node images failed: $out"
  { read -r TOOLS_IMAGE TOOLS_TAR; read -r PAUSE_IMAGE PAUSE_TAR; } <<<"$out"
  printf '%s\n' "$TOOLS_IMAGE" >"$DIR/tools-image"
}

# --- the cluster's network namespace -------------------------------------------------

# Starts the namespace's holder, picks a free K (one /24 per cluster on this
# machine) and links the namespace to the machine with a veth pair.
real_network() {
  local pid lock k
  mkdir -p "$DIR/real" "$REAL_STATE"
  run netns unshare --net bash -c 'while sleep 3600; do :; done' netns "$DIR"
  pid=$(cat "$DIR/pids/netns")
  FAILED_LOG=$DIR/logs/netns.log
  local t=$((SECONDS + 10))
  while [[ $(readlink "/proc/$pid/ns/net" 2>/dev/null) == "$(readlink /proc/self/ns/net)" ]]; do
    ((SECONDS < t)) || fail "the network namespace did not come up"
    sleep 0.05
  done
  exec {lock}>"$REAL_STATE/lock"
  flock "$lock"
  for ((k = 0; k < 256; k++)); do
    ip link show "opr-n$k" >/dev/null 2>&1 || break
  done
  ((k < 256)) || fail "no free network slot (256 real-node clusters run?)"
  ip link add "opr-n$k" type veth peer name eth0 netns "$pid" >>"$FAILED_LOG" 2>&1 \
    || fail "cannot create the veth pair opr-n$k"
  printf '%s\n' "$k" >"$DIR/real/slot"
  real_save_sysctls "$k"
  flock -u "$lock"
  exec {lock}>&-
  REAL_K=$k
  HOST_IP=$REAL_NET_PREFIX.$k.1
  ip addr add "$HOST_IP/24" dev "opr-n$k" && ip link set "opr-n$k" up
  local i setup="ip link set lo up"
  for i in "${!REAL_NODES[@]}"; do setup+=" && ip addr add $(node_ip $((i + 1)))/24 dev eth0"; done
  in_netns sh -c "$setup && ip link set eth0 up && ip route add default via $HOST_IP" \
    >>"$FAILED_LOG" 2>&1 || fail "cannot configure the network namespace"
}

# in_netns CMD...: CMD in the cluster's network namespace.
in_netns() { nsenter --net="$(netns_path)" "$@"; }
netns_path() { echo "/proc/$(cat "$DIR/pids/netns")/ns/net"; }

node_ip() { echo "$REAL_NET_PREFIX.$REAL_K.$(($1 + 1))"; }

# The kubelet changes these machine-wide sysctls: the first real-node cluster
# saves them, the last one to stop restores them (real_restore_sysctls).
real_save_sysctls() {
  local s
  mkdir -p "$REAL_STATE/clusters"
  if [[ ! -f $REAL_STATE/sysctls ]]; then
    for s in "${REAL_SYSCTLS[@]}"; do sysctl -n "$s" | sed "s/^/$s=/"; done >"$REAL_STATE/sysctls"
  fi
  printf '%s\n' "$DIR" >"$REAL_STATE/clusters/$1"
}

# --- per node ---------------------------------------------------------------------------

real_node_files() {
  local i=$1 name=$2 nd=$DIR/real/$2
  mkdir -p "$nd"/{root,state,runc,cni,ipam,cni-cache,log,kubelet,plugins}
  cat >"$nd/containerd.toml" <<EOF
version = 2
root = "$nd/root"
state = "$nd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$nd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine lacks CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "$(node_ip "$i")"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$nd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni"
    max_conf_num = 1
EOF
  jq -n --arg name "node$i" --arg br "cbr$i" --arg subnet "$REAL_POD_PREFIX.$i.0/24" --arg ipam "$nd/ipam" '
    {cniVersion: "0.4.0", name: $name, plugins: [{type: "bridge", bridge: $br, isGateway: true,
      ipMasq: true, hairpinMode: true,
      ipam: {type: "host-local", ranges: [[{subnet: $subnet}]], routes: [{dst: "0.0.0.0/0"}],
             dataDir: $ipam}}]}' >"$nd/cni/10-bridge.conflist"
  cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzPort: 0
# Reached only from this machine, through the cluster's own veth.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# A node registers before its runtime is checked, NotReady; the next status
# (10 s later by default) says Ready. Looking every 2 s makes it Ready sooner;
# the status is still posted only when it changes (and once a minute).
nodeStatusUpdateFrequency: 2s
EOF
}

# The kubeconfig of kubelets and kube-proxy: the API server through the veth.
real_kubeconfig() {
  sed "s#server: https://127.0.0.1:#server: https://$HOST_IP:#" "$DIR/kubeconfig" >"$DIR/real/kubeconfig"
  chmod 600 "$DIR/real/kubeconfig"
}

# node_fail NODE WHAT LOG: one line naming the node and why, from its log.
node_fail() {
  local why
  why=$(grep -E '(level=(error|fatal)|^[EF][0-9]{4} )' "$3" 2>/dev/null | tail -n 1 | cut -c1-300)
  FAILED_LOG=
  fail "node $1: $2${why:+: $why} (log: $3)"
}

real_containerd_start() {
  local i=$1 name=$2
  real_node_files "$i" "$name"
  # shellcheck disable=SC2086  # the node's mount paths are words (checked)
  run "$name-containerd" nsenter --net="$(netns_path)" unshare --mount --propagation private \
    "$HERE/node.sh" "$DIR" "$name" ${REAL_MOUNTS[$name]}
}

# Waits for the node's containerd and loads the images into it.
real_containerd_ready() {
  local name=$1 nd=$DIR/real/$1 log=$DIR/logs/$1-containerd.log t=$((SECONDS + 30)) tar
  until ctr --address "$nd/containerd.sock" version >/dev/null 2>&1; do
    alive "$DIR/pids/$name-containerd" "$DIR" || node_fail "$name" "containerd exited" "$log"
    ((SECONDS < t)) || node_fail "$name" "containerd not ready after 30s" "$log"
    sleep 0.1
  done
  for tar in "$TOOLS_TAR" "$PAUSE_TAR" ${NODE_IMAGES:-}; do
    ctr --address "$nd/containerd.sock" -n k8s.io images import "$tar" >>"$log" 2>&1 \
      || node_fail "$name" "cannot load image $tar" "$log"
  done
}

real_kubelet_start() {
  local i=$1 name=$2 nd=$DIR/real/$2 pid
  pid=$(cat "$DIR/pids/$name-containerd")
  run "$name-kubelet" nsenter --target "$pid" --mount --net "$BIN/kubelet" \
    --config="$nd/kubelet.yaml" --kubeconfig="$DIR/real/kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$nd/containerd.sock" \
    --runtime-request-timeout=5m \
    --root-dir="$nd/kubelet" --cert-dir="$nd/kubelet/pki" --volume-plugin-dir="$nd/plugins" \
    --hostname-override="$name" --node-ip="$(node_ip "$i")" \
    --node-labels="operator-rs.dev/node=real" --v=1
}

node_ready() {
  api "/api/v1/nodes/$1" | jq -e 'any(.status.conditions[]?; .type == "Ready" and .status == "True")' >/dev/null
}

real_nodes_ready() {
  local name t=$((SECONDS + ${NODE_READY_SECONDS:-90}))
  for name in "${REAL_NODES[@]}"; do
    until node_ready "$name"; do
      alive "$DIR/pids/$name-kubelet" "$DIR" || node_fail "$name" "kubelet exited" "$DIR/logs/$name-kubelet.log"
      alive "$DIR/pids/$name-containerd" "$DIR" || node_fail "$name" "containerd exited" "$DIR/logs/$name-containerd.log"
      ((SECONDS < t)) || node_fail "$name" "not Ready after ${NODE_READY_SECONDS:-90}s" "$DIR/logs/$name-kubelet.log"
      sleep 0.2
    done
  done
}

# kube-proxy: one for the namespace all nodes share (its rules serve every node's
# pods). The conntrack flags at 0 leave the machine's conntrack sysctls alone.
real_proxy_start() {
  run kube-proxy nsenter --net="$(netns_path)" "$BIN/kube-proxy" --kubeconfig="$DIR/real/kubeconfig" \
    --hostname-override="${REAL_NODES[0]}" --proxy-mode=iptables \
    --cluster-cidr="$REAL_POD_PREFIX.0.0/16" \
    --conntrack-max-per-core=0 --conntrack-min=0 \
    --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 --v=1
}

real_scheduler_start() {
  run kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$DIR/kubeconfig" \
    --authentication-kubeconfig="$DIR/kubeconfig" --authorization-kubeconfig="$DIR/kubeconfig" \
    --leader-elect=false --port=0 --secure-port=0 --v=1
}

# The `kubernetes` Service has its endpoint (the lease reconciler) and
# kube-proxy has written its rule for it.
service_routed() {
  in_netns iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'
}

real_start() {
  local i name
  for i in "${!REAL_NODES[@]}"; do real_containerd_start $((i + 1)) "${REAL_NODES[$i]}"; done
  for name in "${REAL_NODES[@]}"; do real_containerd_ready "$name"; done
  step "containerd ready, images loaded"
  real_kubeconfig
  for i in "${!REAL_NODES[@]}"; do real_kubelet_start $((i + 1)) "${REAL_NODES[$i]}"; done
  real_scheduler_start
  real_proxy_start
  real_nodes_ready
  step "nodes Ready"
  await kube-proxy 30 service_routed
  step "kube-proxy routes the kubernetes Service"
}

# --- stop (stop.sh) -------------------------------------------------------------------------

# Before the processes go: the kubelets (so they start nothing again), then every
# container of every node, by runc's state (processes and cgroups).
real_stop_containers() {
  local f nd id
  for f in "$DIR"/pids/*-kubelet; do
    [[ -f $f ]] && alive "$f" "$DIR" && signal KILL "$(cat "$f")"
  done
  for nd in "$DIR"/real/*/runc/k8s.io; do
    [[ -d $nd ]] || continue
    for id in $(runc --root "$nd" list -q 2>/dev/null); do
      runc --root "$nd" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
}

# After: what was not started by start.sh itself but by its processes (the
# shims of containerd, started with their own session), by command line.
real_stop_rest() {
  local p cmd pids=()
  [[ -d $DIR/real ]] || return 0
  for p in /proc/[0-9]*; do
    { cmd=$(tr '\0' ' ' <"$p/cmdline"); } 2>/dev/null || continue
    [[ $cmd == *"$DIR/real/"* ]] && pids+=("${p#/proc/}")
  done
  ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
  # containerd's parent cgroup of the pods, in every hierarchy: removed once empty
  # (rmdir fails while another cluster's containers are in it).
  local cg
  for cg in /sys/fs/cgroup/*/k8s.io; do [[ ! -d $cg ]] || rmdir "$cg" 2>/dev/null || true; done
  local k
  k=$(cat "$DIR/real/slot" 2>/dev/null) || return 0
  # Gone with the namespace already, unless something still holds it.
  ip link del "opr-n$k" 2>/dev/null || true
  real_restore_sysctls "$k"
  rm -f "$DIR/real/slot"
}

real_restore_sysctls() {
  local lock f s
  [[ -d $REAL_STATE/clusters ]] || return 0
  exec {lock}>"$REAL_STATE/lock"
  flock "$lock"
  [[ $(cat "$REAL_STATE/clusters/$1" 2>/dev/null) == "$DIR" ]] && rm -f "$REAL_STATE/clusters/$1"
  # A cluster whose directory is gone will not stop any more.
  for f in "$REAL_STATE"/clusters/*; do
    [[ -f $f && ! -d $(cat "$f") ]] && rm -f "$f"
  done
  if [[ -z $(ls -A "$REAL_STATE/clusters") && -f $REAL_STATE/sysctls ]]; then
    while IFS= read -r s; do sysctl -qw "$s" || true; done <"$REAL_STATE/sysctls"
    rm -f "$REAL_STATE/sysctls"
  fi
  flock -u "$lock"
  exec {lock}>&-
}
