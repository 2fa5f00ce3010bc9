#!/usr/bin/env bash
# The operator image in the cluster, two ways, on a local cluster with real
# nodes (tests/cluster/start.sh --real-nodes).
#
# For real (test_pvc_deployment_runs_on_the_nodes): the image loaded into the
# nodes, deploy/pvc applied through a kustomize overlay that pins it, and the
# kubelets run the Deployment: two replicas Ready (probes on /readyz and
# /healthz), one leader, in-cluster config from the pod's token, the API
# server through the `kubernetes` Service, a claim provisioned by the pod,
# the hand-over when the leader pod is deleted.
#
# With podman (the other tests), for what the 1.20 kubelet cannot show or a
# test cannot stage in a pod: a projected token rotated and revoked under the
# running runner (1.20 mounts legacy Secret tokens), the container's memory
# and CPU measured from its cgroup, an upgrade's two runner versions side by
# side, the image's own tools. The image from
# deploy/build-image.sh; the container's args, env, user, read-only root,
# capabilities, seccomp, emptyDir and limits read from the rendered
# Deployment (never copied here); the service account's token, CA and namespace where a kubelet
# mounts them (a projected-volume layout: ..data symlink swapped on rotation);
# KUBERNETES_SERVICE_HOST/PORT pointing at the local API server (loopback,
# hence --network host). No kubeconfig anywhere in the container.
#
# Env: INCLUSTER_IMAGE=NAME skips the build and uses that image (podman's).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"

# podman as it works on these machines (crun refuses; no systemd).
podman_() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }

# --- the image ----------------------------------------------------------------

build_image() {
  local log=${TMPDIR:-/tmp}/incluster-build.$$.log t0=$SECONDS
  if [[ -n ${INCLUSTER_IMAGE:-} ]]; then
    IMAGE=$INCLUSTER_IMAGE
    return 0
  fi
  IMAGE=$("$REPO_ROOT/deploy/build-image.sh" 2>"$log" | tail -n 1) || {
    echo "deploy/build-image.sh failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
  }
  rm -f "$log"
  echo "# built $IMAGE in $((SECONDS - t0)) s, $(image_mib) MiB" >&2
}

# The image as a docker-archive, for tests/cluster/load-image.sh.
save_image() {
  ARCHIVE=$(mktemp "${TMPDIR:-/tmp}/incluster-image.XXXXXX.tar")
  rm -f "$ARCHIVE"
  podman_ save --format docker-archive -o "$ARCHIVE" "$IMAGE" >/dev/null 2>&1 || {
    echo "podman save $IMAGE failed" >&2
    exit 1
  }
}

image_mib() { echo $(($(podman_ image inspect -f '{{.Size}}' "$IMAGE") / 1048576)); }

build_image
save_image
cluster_up_real_nodes
# Containers are not children of this script (conmon runs them), so stop.sh
# would not end them: every one is named incluster-NAME-$$ and removed here.
remove_containers() {
  local c
  for c in $(podman_ ps -a --filter "name=^incluster-.*-$$\$" --format '{{.Names}}' 2>/dev/null); do
    podman_ rm -f -t 2 "$c" >/dev/null 2>&1 || true
  done
}
trap 'remove_containers; rm -f "$ARCHIVE"; cluster_down' EXIT

# --- the manifests --------------------------------------------------------------

# render BASE: the kustomize base's objects as JSON.
render() {
  kubectl kustomize "$REPO_ROOT/deploy/$1" | kubectl create --dry-run=client -o json -f -
}

deployment_of() { render "$1" | jq -c 'if .kind == "List" then .items[] else . end | select(.kind == "Deployment")'; }

# pod_flags DEPLOYMENT_JSON: podman run flags for its pod's only container, one
# per line. What the test cannot reproduce is an error, never skipped.
pod_flags() {
  jq -r '
    def die(m): error("the test cannot run this Deployment as podman: " + m);
    .spec.template.spec as $pod
    | ($pod.containers | if length == 1 then .[0] else die("more than one container") end) as $c
    | ($pod.securityContext // {}) as $psc | ($c.securityContext // {}) as $csc
    | ($pod.volumes // [] | map({key: .name, value: .}) | from_entries) as $vols
    | if $pod.automountServiceAccountToken == false then die("no service account token") else . end
    | if $c.command then die("command overrides the entrypoint") else . end
    | ($csc.runAsUser // $psc.runAsUser) as $uid
    | if ($csc.runAsNonRoot // $psc.runAsNonRoot) and $uid == 0 then die("runAsNonRoot with user 0") else . end
    | ($csc.seccompProfile // $psc.seccompProfile // {type: "RuntimeDefault"}).type as $seccomp
    | "--user=\($uid // die("no runAsUser")):\($csc.runAsGroup // $psc.runAsGroup // 0)",
      (if $csc.readOnlyRootFilesystem then "--read-only", "--read-only-tmpfs=false" else empty end),
      (if $csc.allowPrivilegeEscalation == false then "--security-opt=no-new-privileges" else empty end),
      (if $seccomp == "Unconfined" then "--security-opt=seccomp=unconfined"
       elif $seccomp == "RuntimeDefault" then empty else die("seccomp profile \($seccomp)") end),
      ($csc.capabilities.drop // [] | .[] | "--cap-drop=\(ascii_downcase)"),
      ($csc.capabilities.add // [] | .[] | "--cap-add=\(ascii_downcase)"),
      (if $c.resources.limits.cpu then "--cpus=\($c.resources.limits.cpu | if endswith("m") then (.[:-1] | tonumber) / 1000 else . end)" else empty end),
      (if $c.resources.limits.memory then "--memory=\($c.resources.limits.memory | sub("i$"; "") | ascii_downcase)" else empty end),
      ($c.volumeMounts // [] | .[] | . as $m | $vols[$m.name]
        | if .emptyDir == null then die("volume \($m.name) is not an emptyDir") else . end
        | "--tmpfs=\($m.mountPath):rw,mode=1777" + (if .emptyDir.sizeLimit then ",size=\(.emptyDir.sizeLimit | sub("i$"; "") | ascii_downcase)" else "" end)),
      ($c.env // [] | .[] | if .valueFrom then die("env \(.name) uses valueFrom") else "--env=\(.name)=\(.value)" end)
  ' <<<"$1"
}

pod_image() { jq -r '.spec.template.spec.containers[0].image' <<<"$1"; }
pod_args() { jq -r '.spec.template.spec.containers[0].args // [] | .[]' <<<"$1"; }
pod_account() { jq -r '.spec.template.spec.serviceAccountName // "default"' <<<"$1"; }
pod_namespace() { jq -r '.metadata.namespace' <<<"$1"; }
pod_runs_as_root() {
  jq -e '.spec.template.spec as $p | ($p.containers[0].securityContext.runAsUser // $p.securityContext.runAsUser // 0) == 0' <<<"$1" >/dev/null
}

# --- service-account tokens, mounted like a kubelet's projected volume ------------

# bound_token NS ACCOUNT SECRET: a TokenRequest token bound to Secret SECRET
# (created here): deleting the Secret invalidates the token.
bound_token() {
  local ns=$1 sa=$2 secret=$3 uid
  kubectl -n "$ns" create secret generic "$secret" >/dev/null
  uid=$(kubectl -n "$ns" get secret "$secret" -o jsonpath='{.metadata.uid}')
  jq -n --arg name "$secret" --arg uid "$uid" '{apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest", spec: {expirationSeconds: 3600,
      boundObjectRef: {apiVersion: "v1", kind: "Secret", name: $name, uid: $uid}}}' |
    kubectl create --raw "/api/v1/namespaces/$ns/serviceaccounts/$sa/token" -f - |
    jq -er .status.token
}

# write_sa_dir DIR NS TOKEN: the files of /var/run/secrets/kubernetes.io/serviceaccount,
# swapped in atomically as a kubelet does (new ..timestamp dir, ..data symlink
# renamed over the old one), so a reader never sees a half-written token.
write_sa_dir() {
  local dir=$1 ns=$2 token=$3 data
  mkdir -p "$dir"
  data=$(mktemp -d "$dir/..$(date +%Y_%m_%d_%H_%M_%S).XXXXXX")
  printf '%s' "$token" >"$data/token"
  printf '%s' "$ns" >"$data/namespace"
  cp "$CLUSTER_DIR/pki/ca.crt" "$data/ca.crt"
  chmod 0755 "$data" && chmod 0644 "$data"/*
  local old
  old=$(readlink "$dir/..data" 2>/dev/null) || old=
  ln -sfn "$(basename "$data")" "$dir/..data_tmp"
  mv -T "$dir/..data_tmp" "$dir/..data"
  local f
  for f in token namespace ca.crt; do [[ -L $dir/$f ]] || ln -s "..data/$f" "$dir/$f"; done
  [[ -z $old ]] || rm -rf "${dir:?}/$old"
}

api_status_with() {
  curl -s -o /dev/null -w '%{http_code}' --cacert "$CLUSTER_DIR/pki/ca.crt" \
    -H "Authorization: Bearer $1" "https://127.0.0.1:$(cat "$CLUSTER_DIR/api-port")/api"
}
token_refused() { [[ $(api_status_with "$1") == 401 ]]; }

# --- running the pod -----------------------------------------------------------------

# pod_prepare DEPLOYMENT_JSON SA_DIR: POD_FLAGS, the `podman run` flags that
# make a container run as the Deployment's pod would: its securityContext,
# limits, volumes and env, the service account's files, the API server.
pod_prepare() {
  local dep=$1 sa_dir=$2 image out
  image=$(pod_image "$dep")
  [[ $image == "$IMAGE" ]] || fail "the Deployment runs $image, the build made $IMAGE"
  out=$(pod_flags "$dep") || fail "cannot run the Deployment's pod with podman"
  mapfile -t POD_FLAGS <<<"$out"
  POD_FLAGS+=(--rm --network host --ulimit nofile=1024:1024 --ulimit nproc=4096:4096
    --env KUBERNETES_SERVICE_HOST=127.0.0.1 --env "KUBERNETES_SERVICE_PORT=$(cat "$CLUSTER_DIR/api-port")"
    --volume "$sa_dir:/var/run/secrets/kubernetes.io/serviceaccount:ro")
}

# run_pod NAME DEPLOYMENT_JSON SA_DIR [ARGS...]: the Deployment's container, in
# the background, with its args (or ARGS); its stderr (the runner's log) in
# logs/NAME.log. START_US is when `podman run` was called.
run_pod() {
  local name=$1 dep=$2 sa_dir=$3 args=()
  shift 3
  if (($#)); then args=("$@"); else mapfile -t args < <(pod_args "$dep"); fi
  pod_prepare "$dep" "$sa_dir"
  START_US=${EPOCHREALTIME//[!0-9]/}
  (exec podman --runtime runc --cgroup-manager=cgroupfs run "${POD_FLAGS[@]}" --name "incluster-$name-$$" \
    "$IMAGE" "${args[@]}") >"$CLUSTER_DIR/logs/$name.out" 2>"$CLUSTER_DIR/logs/$name.log" </dev/null &
  # operator_stop NAME (lib.sh) stops it after the test: SIGTERM to podman,
  # which passes it on to the runner (--sig-proxy).
  echo $! >"$CLUSTER_DIR/pids/operator-$name"
  _LIB_OPERATORS+=("$name")
}

# first_hook NAME TAG: waits for the runner to watch, then for the first hook
# line tagged [TAG] ("added NS/OBJECT", or "snapshot" for the pvc hooks' batch
# run); prints how long each took from `podman run`.
first_hook() {
  local watching
  wait_for_log "$1" ' INFO watching ' 60 || fail "the runner never started watching"
  watching=$(ms_since "$START_US")
  wait_for_log "$1" "\\[$2\\]" 60 || fail "no hook ran ($2)"
  echo "# $1: podman run to the runner watching: $watching ms, to the first hook line: $(ms_since "$START_US") ms" >&2
}

# ms_since START_US
ms_since() { echo $(((${EPOCHREALTIME//[!0-9]/} - $1) / 1000)); }

# Prints the container's usage so far (for deploy/README.md's numbers): the
# cgroup's memory high-water mark (runner, hooks, kubectl and page cache) and
# CPU time, and the runner's own peak RSS.
container_usage() {
  local pid memcg cpucg mem cpu hwm
  pid=$(podman_ inspect -f '{{.State.Pid}}' "incluster-$1-$$" 2>/dev/null) || return 0
  hwm=$(awk '$1 == "VmHWM:" {print int($2 / 1024)}' "/proc/$pid/status")
  memcg=$(awk -F: '$2 == "memory" {print $3}' "/proc/$pid/cgroup")
  cpucg=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' "/proc/$pid/cgroup")
  if [[ -n $memcg ]]; then
    mem=$(cat "/sys/fs/cgroup/memory$memcg/memory.max_usage_in_bytes")
    cpu=$(($(cat "/sys/fs/cgroup/cpuacct$cpucg/cpuacct.usage") / 1000000))
  else
    memcg=$(awk -F: '$1 == 0 {print $3}' "/proc/$pid/cgroup")
    mem=$(cat "/sys/fs/cgroup$memcg/memory.peak" 2>/dev/null || echo 0)
    cpu=$(($(awk '$1 == "usage_usec" {print $2}' "/sys/fs/cgroup$memcg/cpu.stat") / 1000))
  fi
  echo "# $1 after $(ms_since "$START_US") ms: container peak memory $((mem / 1048576)) MiB," \
    "CPU $cpu ms; the runner's peak RSS $hwm MiB" >&2
}

# --- shared steps -------------------------------------------------------------------

claim_phase() { kubectl -n "$1" get pvc "$2" -o jsonpath='{.status.phase}' 2>/dev/null; }
bound() { [[ $(claim_phase "$1" "$2") == Bound ]]; }
gone() { ! kubectl -n "$1" get "$2" "$3" >/dev/null 2>&1; }
pv_gone() { ! kubectl get pv "$1" >/dev/null 2>&1; }
has_finalizer() {
  kubectl -n "$1" get pvc "$2" -o json | jq -e --arg f "$3" '.metadata.finalizers // [] | index($f)' >/dev/null
}
log_has() { grep -Eq -- "$2" "$CLUSTER_DIR/logs/$1.log"; }

# can NS:ACCOUNT VERB RESOURCE [flags]: what `kubectl auth can-i` says for the account.
can() {
  local who=$1
  shift
  kubectl auth can-i --as="system:serviceaccount:${who%%:*}:${who#*:}" "$@" >/dev/null 2>&1
}

# expect_can WHO "VERB RESOURCE [-n NS]"...: each allowed; expect_cannot: each refused.
expect_can() {
  local who=$1 rule
  shift
  for rule in "$@"; do
    # shellcheck disable=SC2086  # a rule is words
    can "$who" $rule || fail "$who cannot: $rule"
  done
}
expect_cannot() {
  local who=$1 rule
  shift
  for rule in "$@"; do
    # shellcheck disable=SC2086
    ! can "$who" $rule || fail "$who may: $rule"
  done
}

# The pvc walkthrough's claim (examples/pvc/pvc.yaml) in namespace NS, named NAME.
example_claim() {
  jq -c --arg name "$2" '.metadata.name = $name | del(.metadata.namespace)' \
    < <(kubectl create --dry-run=client -o json -f "$REPO_ROOT/examples/pvc/pvc.yaml") |
    kubectl -n "$1" apply -f - >/dev/null
}

# --- tests ------------------------------------------------------------------------------

# listen_port DEPLOYMENT_JSON: the port of the container's --listen=ADDR.
listen_port() { pod_args "$1" | sed -n 's/^--listen=.*:\([0-9]*\)$/\1/p'; }
probe_ok() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2") == 200 ]]; }

test_manifest_copies_match_their_sources() {
  cmp -s "$REPO_ROOT/storageclass.yaml" "$REPO_ROOT/deploy/pvc/storageclass.yaml" \
    || fail "deploy/pvc/storageclass.yaml differs from storageclass.yaml: copy it again"
  cmp -s "$REPO_ROOT/hooks/evc/crd.yaml" "$REPO_ROOT/deploy/evc/crd.yaml" \
    || fail "deploy/evc/crd.yaml differs from hooks/evc/crd.yaml: copy it again"
  local version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1)
  for base in pvc evc; do
    [[ $(pod_image "$(deployment_of "$base")") == "localhost/operator:$version" ]] \
      || fail "deploy/$base does not run localhost/operator:$version (Cargo.toml's version)"
  done
}

test_image_runs_unprivileged_with_its_tools() {
  local out labels
  out=$(podman_ run --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --rm --network none --read-only --user 65532:65532 --entrypoint /bin/bash "$IMAGE" \
    -c 'id -u; operator --version; kubectl version --client -o json | jq -r .clientVersion.gitVersion;
        test -x /hooks/pvc/snapshot && test -x /hooks/evc/added && test -f /hooks/lib/log.sh && echo hooks;
        test -s /etc/ssl/certs/ca-certificates.crt && echo certs; touch /x 2>/dev/null || echo read-only') \
    || fail "the image's tools do not run: $out"
  [[ $out == $'65532\n'"operator "*$'\nv1.'*$'\nhooks\ncerts\nread-only' ]] || fail "unexpected: $out"
  [[ $(podman_ image inspect -f '{{.Config.User}}' "$IMAGE") == 65532:65532 ]] || fail "the image's user is not 65532"
  labels=$(podman_ image inspect -f '{{json .Labels}}' "$IMAGE")
  jq -e '."org.opencontainers.image.version" != "unknown" and ."org.opencontainers.image.revision" != "unknown"
    and (."org.opencontainers.image.source" | length > 0)' <<<"$labels" >/dev/null \
    || fail "OCI labels missing: $labels"
  (($(image_mib) <= 150)) || fail "the image is $(image_mib) MiB, more than 150"
}

test_pvc_deployment_provisions_and_survives_token_rotation() {
  local dep ns sa sa_dir uid1 uid2 rotated_at wait_s token1
  kubectl apply -k "$REPO_ROOT/deploy/pvc" >/dev/null || fail "kubectl apply -k deploy/pvc failed"
  dep=$(deployment_of pvc)
  ns=$(pod_namespace "$dep")
  sa=$(pod_account "$dep")
  ! pod_runs_as_root "$dep" || fail "the Deployment runs as root"
  local finalizer
  finalizer=$(pod_args "$dep" | sed -n 's/^--finalizer=//p')
  wait_until 30 kubectl -n "$ns" get serviceaccount "$sa" >/dev/null || fail "no service account $ns/$sa"
  sa_dir=$CLUSTER_DIR/sa-pvc
  token1=$(bound_token "$ns" "$sa" token-1) || fail "no token for $ns/$sa"
  write_sa_dir "$sa_dir" "$ns" "$token1"
  # The walkthrough's claim exists before the runner starts: its ADDED is the first hook.
  local cns
  cns=$(new_namespace walk)
  example_claim "$cns" localstorage-claim
  uid1=$(kubectl -n "$cns" get pvc localstorage-claim -o jsonpath='{.metadata.uid}')
  run_pod pvc "$dep" "$sa_dir"
  first_hook pvc "snapshot"
  log_has pvc "watching persistentvolumeclaims \\(all namespaces\\)" || fail "the runner does not watch all namespaces"
  # The Deployment's probes and Prometheus scrape these (--listen from its args).
  local port
  port=$(listen_port "$dep")
  wait_until 30 probe_ok "$port" /readyz || fail "/readyz on :$port never answered 200"
  probe_ok "$port" /healthz || fail "/healthz on :$port is not 200"
  curl -fsS "http://127.0.0.1:$port/metrics" | grep -qx 'operator_leader 1' \
    || fail "/metrics does not say this instance leads (operator_leader 1)"
  wait_until 60 bound "$cns" localstorage-claim || fail "the walkthrough's claim never became Bound"
  [[ -d $CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/pvc-${uid1}_${cns}_localstorage-claim ]] \
    || fail "no volume directory on kind-worker2"
  has_finalizer "$cns" localstorage-claim "$finalizer" || fail "the claim did not get the finalizer $finalizer"
  log_has pvc "created Job $(jq -r '.spec.template.spec.containers[0].env[] | select(.name == "JOB_NAMESPACE") | .value' <<<"$dep")/pvc-mkdir-$uid1 " \
    || fail "the Job did not run in the Deployment's JOB_NAMESPACE"

  # A new token, written in place the way a kubelet rotates it. The runner's
  # client (kube-client, like client-go) reads the token file again on its
  # first request 50 s or more after the last read; the old token stays valid
  # that long, as a kubelet's does until it expires (at least 10 minutes).
  write_sa_dir "$sa_dir" "$ns" "$(bound_token "$ns" "$sa" token-2)"
  rotated_at=$SECONDS

  kubectl -n "$cns" delete pvc localstorage-claim --wait=false >/dev/null
  wait_until 60 gone "$cns" pvc localstorage-claim || fail "the deleted claim stayed (finalizer not removed?)"
  wait_until 30 pv_gone "pvc-$uid1" || fail "the PersistentVolume was not deleted"
  [[ ! -e $CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/pvc-${uid1}_${cns}_localstorage-claim ]] \
    || fail "the volume directory was not removed"
  container_usage pvc

  # Now the old token dies: the runner's own requests (the finalizer's get and
  # patch) succeed only with the new one, read without a restart.
  wait_s=$((55 - (SECONDS - rotated_at)))
  ((wait_s <= 0)) || sleep "$wait_s"
  kubectl -n "$ns" delete secret token-1 >/dev/null
  wait_until 30 token_refused "$token1" || fail "the old token still works after its Secret was deleted"
  example_claim "$cns" after-rotation
  uid2=$(kubectl -n "$cns" get pvc after-rotation -o jsonpath='{.metadata.uid}')
  wait_until 60 bound "$cns" after-rotation || fail "no volume after the token rotation"
  wait_until 30 has_finalizer "$cns" after-rotation "$finalizer" \
    || fail "the runner did not add its finalizer after the rotation (still the old token?)"
  kubectl -n "$cns" delete pvc after-rotation --wait=false >/dev/null
  wait_until 60 gone "$cns" pvc after-rotation || fail "the claim stayed after the rotation (finalizer kept)"
  wait_until 30 pv_gone "pvc-$uid2" || fail "the PersistentVolume was not deleted after the rotation"
  ! log_has pvc ' ERROR ' || fail "the runner logged errors"
  container_usage pvc
}

test_evc_deployment_makes_and_expires_claims() {
  local dep ns sa sa_dir cns
  kubectl apply -k "$REPO_ROOT/deploy/evc" >/dev/null || fail "kubectl apply -k deploy/evc failed"
  kubectl wait --for=condition=Established crd/ephemeralvolumeclaims.zalando.org --timeout=30s >/dev/null \
    || fail "the CRD of deploy/evc was not established"
  dep=$(deployment_of evc)
  ns=$(pod_namespace "$dep")
  sa=$(pod_account "$dep")
  ! pod_runs_as_root "$dep" || fail "the Deployment runs as root"
  wait_until 30 kubectl -n "$ns" get serviceaccount "$sa" >/dev/null || fail "no service account $ns/$sa"
  sa_dir=$CLUSTER_DIR/sa-evc
  write_sa_dir "$sa_dir" "$ns" "$(bound_token "$ns" "$sa" token-1)"
  cns=$(new_namespace evc)
  # examples/evc's claim, expiring 5 s after its creation when no pod uses it.
  kubectl create --dry-run=client -o json -f "$REPO_ROOT/examples/evc/evc.yaml" |
    jq -c '.spec.expiryPeriod = 5 | del(.metadata.namespace)' | kubectl -n "$cns" apply -f - >/dev/null
  run_pod evc "$dep" "$sa_dir"
  first_hook evc "added $cns/my-claim-1"
  wait_until 30 kubectl -n "$cns" get pvc my-claim-1 >/dev/null || fail "no PVC for the claim"
  wait_for_log evc "$cns/my-claim-1: Countdown to expiry: reached! Deleting the EVC" 40 \
    || fail "the claim did not expire"
  wait_until 30 gone "$cns" evc my-claim-1 || fail "the expired claim was not deleted"
  wait_until 60 pvc_released "$cns" my-claim-1 || fail "the expired claim's PVC was not deleted"
  ! log_has evc ' ERROR ' || fail "the runner logged errors"
  container_usage evc
  # What a pod deletion does: SIGTERM, and the runner ends cleanly, in time.
  local t0=$SECONDS
  operator_stop evc || fail "the runner exited with status $? on SIGTERM"
  log_has evc ' INFO stopped$' || fail "the runner did not log its stop"
  ((SECONDS - t0 < $(jq '.spec.template.spec.terminationGracePeriodSeconds // 30' <<<"$dep"))) \
    || fail "the runner took longer than the pod's terminationGracePeriodSeconds to stop"
}

# deploy/README.md, Upgrading: a rolling update starts the new pod while the
# old one leads; the new one stands by (--leader-elect) and takes over the
# moment the old one stops, so a claim deleted then is cleaned up at once.
# Both run with host networking here, where pods have a network each: the
# standby's --listen gets the next port, its only change from the manifest.
test_upgrade_hands_over_to_the_new_pod() {
  local dep ns sa sa_dir cns uid dir port args=()
  kubectl apply -k "$REPO_ROOT/deploy/pvc" >/dev/null 2>&1 || fail "kubectl apply -k deploy/pvc failed"
  dep=$(deployment_of pvc)
  ns=$(pod_namespace "$dep")
  sa=$(pod_account "$dep")
  [[ $(jq -r '.spec.strategy.type' <<<"$dep") == RollingUpdate ]] || fail "the Deployment's strategy is not RollingUpdate"
  pod_args "$dep" | grep -qx -- --leader-elect || fail "the Deployment's runner does not elect a leader"
  sa_dir=$CLUSTER_DIR/sa-upgrade
  write_sa_dir "$sa_dir" "$ns" "$(bound_token "$ns" "$sa" token-upgrade)"
  cns=$(new_namespace upgrade)
  run_pod old "$dep" "$sa_dir"
  example_claim "$cns" kept
  uid=$(kubectl -n "$cns" get pvc kept -o jsonpath='{.metadata.uid}')
  dir=$CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/pvc-${uid}_${cns}_kept
  wait_until 60 bound "$cns" kept || fail "the claim never became Bound"
  [[ -d $dir ]] || fail "no volume directory $dir"
  port=$(listen_port "$dep")
  mapfile -t args < <(pod_args "$dep" | sed "s/^--listen=.*/--listen=:$((port + 1))/")
  run_pod new "$dep" "$sa_dir" "${args[@]}"
  wait_for_log new ' INFO standing by: ' 60 || fail "the new pod did not stand by while the old one led"
  wait_until 30 probe_ok "$((port + 1))" /readyz || fail "the standby's /readyz never answered 200"
  operator_stop old || fail "the old runner did not stop cleanly on SIGTERM"
  kubectl -n "$cns" delete pvc kept --wait=false >/dev/null
  wait_until 60 gone "$cns" pvc kept || fail "the new runner did not finish the claim's deletion"
  wait_until 30 pv_gone "pvc-$uid" || fail "the new runner did not delete the PersistentVolume"
  [[ ! -e $dir ]] || fail "the new runner did not remove the volume directory"
  ! log_has new ' ERROR ' || fail "the new runner logged errors"
}

test_service_account_namespace_is_the_default() {
  local dep ns sa sa_dir out
  kubectl apply -k "$REPO_ROOT/deploy/pvc" >/dev/null || fail "kubectl apply -k deploy/pvc failed"
  dep=$(deployment_of pvc)
  ns=$(pod_namespace "$dep")
  sa=$(pod_account "$dep")
  sa_dir=$CLUSTER_DIR/sa-default
  write_sa_dir "$sa_dir" "$ns" "$(bound_token "$ns" "$sa" token-default)"
  kubectl -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: probe}
spec: {accessModes: [ReadWriteOnce], storageClassName: none, resources: {requests: {storage: 1Mi}}}
EOF
  run_pod default "$dep" "$sa_dir" --object=pvc --hooks=/hooks/echo
  wait_for_log default "watching persistentvolumeclaims \\(namespace $ns\\)" 60 \
    || fail "the runner does not watch its service account's namespace $ns"
  wait_for_log default "\\[added $ns/probe\\]" 30 || fail "no hook ran for $ns/probe"
  pod_prepare "$dep" "$sa_dir"
  out=$(podman_ run "${POD_FLAGS[@]}" --name "incluster-kubectl-$$" --entrypoint kubectl "$IMAGE" \
    get pvc -o name 2>&1) \
    || fail "kubectl in the container failed: $out"
  [[ $out == persistentvolumeclaim/probe ]] || fail "kubectl in the container did not list $ns's claims: $out"
  kubectl -n "$ns" delete pvc probe --wait=false >/dev/null
}

# The PVC is gone or being deleted (the garbage collector or the deleted hook).
pvc_released() {
  local pvc
  pvc=$(kubectl -n "$1" get pvc "$2" -o json --ignore-not-found)
  [[ -z $pvc ]] || jq -e '.metadata.deletionTimestamp != null' <<<"$pvc" >/dev/null
}

# Everything the rules grant is used (above); this checks what they must not grant.
test_accounts_hold_only_what_their_hooks_use() {
  kubectl apply -k "$REPO_ROOT/deploy/pvc" >/dev/null || fail "kubectl apply -k deploy/pvc failed"
  kubectl apply -k "$REPO_ROOT/deploy/evc" >/dev/null || fail "kubectl apply -k deploy/evc failed"
  local pvc=operator-pvc:operator evc=operator-evc:operator jobs=operator-pvc-jobs
  expect_can "$pvc" "watch persistentvolumeclaims -A" "patch persistentvolumeclaims -n default" \
    "create persistentvolumes" "list persistentvolumes" "delete persistentvolumes" "get storageclasses" "get nodes" \
    "create events -n default" "update events -n default" "create jobs.batch -n $jobs" \
    "watch jobs.batch -n $jobs" "delete jobs.batch -n $jobs" "list pods -n $jobs" \
    "update leases.coordination.k8s.io -n operator-pvc"
  expect_cannot "$pvc" "get secrets -n operator-pvc" "list secrets -A" "get configmaps -n operator-pvc" \
    "create jobs.batch -n default" "create jobs.batch -n operator-pvc" "create pods -n $jobs" \
    "list pods -A" "delete persistentvolumeclaims -n default" "update persistentvolumes" \
    "patch persistentvolumes" "create persistentvolumeclaims -n default" "patch nodes" "list nodes" \
    "create storageclasses" "delete events -n default" "patch jobs.batch -n $jobs" \
    "create serviceaccounts --subresource=token -n operator-pvc" "create deployments.apps -n operator-pvc" \
    "create rolebindings.rbac.authorization.k8s.io -n $jobs" "escalate clusterroles.rbac.authorization.k8s.io" \
    "impersonate serviceaccounts" "list ephemeralvolumeclaims.zalando.org -A" \
    "update leases.coordination.k8s.io -n default" "delete leases.coordination.k8s.io -n operator-pvc"
  expect_can "$evc" "watch ephemeralvolumeclaims.zalando.org -A" "delete ephemeralvolumeclaims.zalando.org -n default" \
    "patch ephemeralvolumeclaims.zalando.org --subresource=status -n default" \
    "get ephemeralvolumeclaims.zalando.org --subresource=status -n default" "create persistentvolumeclaims -n default" \
    "delete persistentvolumeclaims -n default" "list persistentvolumeclaims -n default" \
    "update ephemeralvolumeclaims.zalando.org --subresource=status -n default" "list pods -n default" \
    "create events -n default" "update leases.coordination.k8s.io -n operator-evc"
  expect_cannot "$evc" "get secrets -n operator-evc" "list secrets -A" "get configmaps -n default" \
    "patch ephemeralvolumeclaims.zalando.org -n default" "create ephemeralvolumeclaims.zalando.org -n default" \
    "watch persistentvolumeclaims -A" "update ephemeralvolumeclaims.zalando.org -n default" "get persistentvolumes" "create persistentvolumes" "get pods -n default" \
    "create pods -n default" "get nodes" "create jobs.batch -n $jobs" "create serviceaccounts --subresource=token -n operator-evc" \
    "update customresourcedefinitions.apiextensions.k8s.io" "impersonate serviceaccounts"
  # Nor can the Jobs' pods call the API: their account mounts no token.
  [[ $(kubectl -n "$jobs" get serviceaccount default -o jsonpath='{.automountServiceAccountToken}') == false ]] \
    || fail "the Jobs' service account mounts a token"
}

# Gone, or its deletion started (the namespace controller empties it first).
namespace_leaving() {
  local ts
  ts=$(kubectl get namespace "$1" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null) || return 0
  [[ -n $ts ]]
}

# readme_block AFTER: the first ```sh block of deploy/README.md after the line
# matching AFTER.
readme_block() {
  awk -v after="$1" 'found && /^```sh$/ {on = 1; next} on && /^```$/ {exit}
    on {print} $0 ~ after {found = 1}' "$REPO_ROOT/deploy/README.md"
}

# A claim deleted while no operator runs waits for it; the README's command
# releases it.
# --- the Deployments run by the kubelets -------------------------------------------

# dep_pods BASE: the pods of deploy/BASE's Deployment (namespace operator-BASE)
# that are not being deleted, as a JSON array.
dep_pods() {
  kubectl -n "operator-$1" get pods -l "app.kubernetes.io/instance=operator-$1" -o json |
    jq -c '[.items[] | select(.metadata.deletionTimestamp == null)]'
}
# ready_pods BASE N: N such pods, each Running and Ready.
ready_pods() {
  dep_pods "$1" | jq -e --argjson n "$2" 'length == $n and all(.[]; .status.phase == "Running"
    and any(.status.conditions[]?; .type == "Ready" and .status == "True"))' >/dev/null
}
no_pods() { [[ $(dep_pods "$1" | jq length) == 0 ]]; }
# roles BASE: "POD leading" or "POD standing" for each pod, from the last of
# its log lines about the Lease (a standby that took over logged both).
roles() {
  local pod last
  for pod in $(dep_pods "$1" | jq -r '.[].metadata.name'); do
    last=$(kubectl -n "operator-$1" logs "$pod" 2>/dev/null | grep -E ' INFO (leading|standing by): ' | tail -n 1)
    case $last in
      *' INFO leading: '*) echo "$pod leading" ;;
      *' INFO standing by: '*) echo "$pod standing" ;;
    esac
  done
  return 0
}
# One pod leads and the other stands by.
one_leader() { [[ $(roles "$1" | awk '{print $2}' | sort | tr '\n' ' ') == "leading standing " ]]; }
leader_of() { roles "$1" | awk '$2 == "leading" {print $1}'; }
restarts() { dep_pods "$1" | jq '[.[].status.containerStatuses[]?.restartCount] | add // 0'; }

# pinned_overlay BASE: a kustomize overlay of deploy/BASE pinning the image just built.
pinned_overlay() {
  local dir
  dir=$(mktemp -d "$CLUSTER_DIR/overlay-$1.XXXXXX")
  cat >"$dir/kustomization.yaml" <<EOF
resources: [$(realpath --relative-to="$dir" "$REPO_ROOT/deploy/$1")]
images:
  - {name: localhost/operator, newName: ${IMAGE%:*}, newTag: "${IMAGE##*:}"}
EOF
  echo "$dir"
}

# deploy_for_real BASE: apply the pinned overlay, then two replicas Ready, one
# leading and one standing by.
deploy_for_real() {
  local base=$1
  kubectl apply -k "$(pinned_overlay "$base")" >/dev/null 2>&1 || fail "kubectl apply -k (deploy/$base, image pinned) failed"
  [[ $(kubectl -n "operator-$base" get deploy operator -o jsonpath='{.spec.template.spec.containers[0].image}') == "$IMAGE" ]] \
    || fail "the overlay did not pin $IMAGE"
  # deploy/evc's CRD first, so the new pods find their resource at once.
  [[ -z $(kubectl get crd -o name) ]] || kubectl wait --for=condition=Established crd --all --timeout=30s >/dev/null \
    || fail "CRDs not established"
  # Pods of the earlier tests' applies waited for an image no node had: new ones.
  kubectl -n "operator-$base" rollout restart deploy/operator >/dev/null
  # Until the old ReplicaSet's pods are gone: mid-rollout, an old pod can lead
  # and then be stopped, taking the log the test reads with it.
  kubectl -n "operator-$base" rollout status deploy/operator --timeout=180s >/dev/null \
    || fail "deploy/$base: the rollout did not finish: $(kubectl -n "operator-$base" get pods -o wide 2>&1)"
  wait_until 180 ready_pods "$base" 2 \
    || fail "deploy/$base: two replicas never became Running and Ready: $(kubectl -n "operator-$base" get pods -o wide 2>&1)"
  wait_until 30 one_leader "$base" || fail "deploy/$base: not one leader and one standby: $(roles "$base")"
}

# The leader's log.
leader_log() { kubectl -n "operator-$1" logs "$(leader_of "$1")"; }

test_pvc_deployment_runs_on_the_nodes() {
  local cns leader uid dir
  "$REPO_ROOT/tests/cluster/load-image.sh" "$CLUSTER_DIR" "$ARCHIVE" || fail "could not load $IMAGE into the nodes"
  deploy_for_real pvc
  leader=$(leader_of pvc)
  # In-cluster config: the pod's token, the API server through the Service.
  leader_log pvc | grep -q "watching persistentvolumeclaims (all namespaces)" \
    || fail "the leader does not watch: $(leader_log pvc | tail -n 20)"
  cns=$(new_namespace deployed)
  example_claim "$cns" by-pod
  uid=$(kubectl -n "$cns" get pvc by-pod -o jsonpath='{.metadata.uid}')
  dir=$CLUSTER_DIR/nodes/kind-worker2/mnt/local-volumes/pvc-${uid}_${cns}_by-pod
  wait_until 90 bound "$cns" by-pod || fail "the operator pod did not provision the claim: $(leader_log pvc | tail -n 20)"
  [[ -d $dir ]] || fail "no volume directory on kind-worker2"
  leader_log pvc | grep -q "created PersistentVolume pvc-$uid" || fail "the claim was not provisioned by the leader pod"

  # The leader pod goes (a drain, an eviction): the standby takes over at once.
  kubectl -n operator-pvc delete pod "$leader" --wait=false >/dev/null
  wait_until 90 one_leader pvc || fail "no new leader and standby after the leader pod was deleted: $(roles pvc)"
  [[ $(leader_of pvc) != "$leader" ]] || fail "the deleted pod still leads"
  example_claim "$cns" after-handover
  wait_until 90 bound "$cns" after-handover || fail "the new leader did not provision a claim"
  wait_until 120 ready_pods pvc 2 || fail "the Deployment did not get back to two Ready replicas"
  [[ $(restarts pvc) == 0 ]] || fail "containers restarted $(restarts pvc) times (liveness probe /healthz?)"
  kubectl -n "$cns" delete pvc by-pod after-handover --wait=false >/dev/null
  wait_until 60 gone "$cns" pvc by-pod || fail "the claim's deletion was not finished by the pod"
  [[ ! -e $dir ]] || fail "the volume directory stayed"
  # The next tests need no operator running.
  kubectl -n operator-pvc scale deploy/operator --replicas=0 >/dev/null
  wait_until 60 no_pods pvc || fail "the Deployment's pods did not stop"
}

test_evc_deployment_runs_on_the_nodes() {
  local cns
  deploy_for_real evc
  cns=$(new_namespace evc-deployed)
  kubectl create --dry-run=client -o json -f "$REPO_ROOT/examples/evc/evc.yaml" |
    jq -c '.spec.expiryPeriod = 5 | del(.metadata.namespace)' | kubectl -n "$cns" apply -f - >/dev/null
  wait_until 60 kubectl -n "$cns" get pvc my-claim-1 >/dev/null || fail "the evc pod made no PVC: $(leader_log evc | tail -n 20)"
  wait_until 60 gone "$cns" evc my-claim-1 || fail "the evc pod did not expire the claim"
  leader_log evc | grep -q "$cns/my-claim-1: Countdown to expiry: reached" || fail "the leader pod did not log the expiry"
  [[ $(restarts evc) == 0 ]] || fail "containers restarted $(restarts evc) times"
  kubectl -n operator-evc scale deploy/operator --replicas=0 >/dev/null
  wait_until 60 no_pods evc || fail "the Deployment's pods did not stop"
}

test_readme_releases_claims_left_terminating() {
  local ns finalizer script
  finalizer=$(pod_args "$(deployment_of pvc)" | sed -n 's/^--finalizer=//p')
  ns=$(new_namespace stuck)
  example_claim "$ns" orphan
  kubectl -n "$ns" patch pvc orphan --type=merge -p "{\"metadata\": {\"finalizers\": [\"$finalizer\"]}}" >/dev/null
  kubectl -n "$ns" delete pvc orphan --wait=false >/dev/null
  sleep 1
  kubectl -n "$ns" get pvc orphan >/dev/null 2>&1 || fail "the claim went without its finalizer's release"
  script=$(readme_block 'Release them by hand')
  [[ $script == *"kubectl"*"patch pvc"* ]] || fail "no release command found in deploy/README.md"
  bash -euo pipefail -c "$script" >/dev/null || fail "the README's release command failed"
  wait_until 30 gone "$ns" pvc orphan || fail "the README's command did not release the claim"
}

# Last: deploy/README.md's uninstall leaves nothing cluster-wide behind.
test_uninstall_removes_both_bases() {
  local base kinds
  for base in pvc evc; do
    kubectl apply -k "$REPO_ROOT/deploy/$base" >/dev/null 2>&1 || fail "kubectl apply -k deploy/$base failed"
  done
  for base in evc pvc; do
    kubectl delete -k "$REPO_ROOT/deploy/$base" --wait=false >/dev/null || fail "kubectl delete -k deploy/$base failed"
  done
  for kinds in clusterrole/operator-pvc clusterrole/operator-evc clusterrolebinding/operator-pvc \
    clusterrolebinding/operator-evc storageclass/local-storage crd/ephemeralvolumeclaims.zalando.org; do
    wait_until 30 gone default "${kinds%%/*}" "${kinds#*/}" || fail "$kinds is still there"
  done
  for kinds in operator-pvc operator-pvc-jobs operator-evc; do
    namespace_leaving "$kinds" || fail "namespace $kinds is not being deleted"
  done
  return 0
}

run_tests
