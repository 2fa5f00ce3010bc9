#!/usr/bin/env bash
# Real nodes (tests/cluster/start.sh --real-nodes): kubelets and containerd
# run the pods, so what a simulator cannot show is checked here: a non-root
# pod writes into a volume hooks/pvc made, the real scheduler honours the PV's
# node affinity, each node has its own disk, a Job image a node lacks is named
# in the claim's Event, and hooks/evc keeps a claim while its pod runs and
# deletes it after its grace period. Each test fails when what it names breaks.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cluster_up_real_nodes

VOLUMES=/mnt/local-volumes
kubectl apply -f "$REPO_ROOT/storageclass.yaml" >/dev/null
kubectl apply -f "$REPO_ROOT/hooks/evc/crd.yaml" >/dev/null
kubectl wait --for=condition=Established crd/ephemeralvolumeclaims.zalando.org --timeout=30s >/dev/null

# pod NS NAME SPEC_JSON: a pod of TOOLS_IMAGE that ends at once on deletion;
# SPEC_JSON is merged into its spec (command, volumes, nodeName, ...).
pod() {
  jq -n --arg name "$2" --arg image "$TOOLS_IMAGE" --argjson spec "$3" '
    {apiVersion: "v1", kind: "Pod", metadata: {name: $name},
     spec: ({restartPolicy: "Never", terminationGracePeriodSeconds: 0,
             containers: [{name: "c", image: $image, imagePullPolicy: "Never"}]}
            * ($spec | del(.container)))}
    | .spec.containers[0] += ($spec.container // {})' | kubectl -n "$1" create -f - >/dev/null
}
pod_phase() { kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null; }
pod_is() { [[ $(pod_phase "$1" "$2") == "$3" ]]; }
claim_phase() { kubectl -n "$1" get pvc "$2" -o jsonpath='{.status.phase}' 2>/dev/null; }
bound() { [[ $(claim_phase "$1" "$2") == Bound ]]; }
gone() { ! kubectl -n "$1" get "$2" "$3" >/dev/null 2>&1; }
on_disk() { echo "$CLUSTER_DIR/nodes/$1$2"; }

# claim NS NAME NODE [CLASS]: a 1Gi claim hooks/pvc provisions on NODE.
claim() {
  kubectl -n "$1" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $2}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${4:-local-storage}
  resources: {requests: {storage: 1Gi}}
  selector: {matchLabels: {kubernetes.io/hostname: $3}}
EOF
}

claim_volume() {
  jq -n --arg c "$1" '{volumes: [{name: "v", persistentVolumeClaim: {claimName: $c}}],
    container: {volumeMounts: [{name: "v", mountPath: "/data"}]}}'
}

test_nodes_run_pods_each_on_its_own_disk() {
  local ns node spec
  ns=$(new_namespace disks)
  kubectl get nodes -o json | jq -e '[.items[] | select(.status.nodeInfo.containerRuntimeVersion
    | startswith("containerd://"))] | length >= 2' >/dev/null || fail "fewer than two containerd nodes"
  for node in kind-worker kind-worker2; do
    spec=$(jq -n --arg node "$node" --arg dir "$VOLUMES" '{nodeName: $node,
      volumes: [{name: "disk", hostPath: {path: $dir}}],
      container: {command: ["sh", "-c", "echo $NODE > /disk/written-by-pod-$NODE"],
        env: [{name: "NODE", value: $node}], volumeMounts: [{name: "disk", mountPath: "/disk"}]}}')
    pod "$ns" "on-$node" "$spec"
  done
  for node in kind-worker kind-worker2; do
    wait_until 60 pod_is "$ns" "on-$node" Succeeded || fail "the pod on $node did not succeed"
  done
  [[ $(cat "$(on_disk kind-worker "$VOLUMES/written-by-pod-kind-worker")") == kind-worker ]] \
    || fail "kind-worker's file is not on its disk"
  [[ ! -e $(on_disk kind-worker "$VOLUMES/written-by-pod-kind-worker2") ]] \
    || fail "kind-worker2's file is on kind-worker's disk"
  [[ ! -e $(on_disk kind-worker2 "$VOLUMES/written-by-pod-kind-worker") ]] \
    || fail "kind-worker's file is on kind-worker2's disk"
  rm -f "$(on_disk kind-worker "$VOLUMES")"/written-by-pod-* "$(on_disk kind-worker2 "$VOLUMES")"/written-by-pod-*
}

test_pod_reaches_the_api_server_through_the_kubernetes_service() {
  local ns out
  ns=$(new_namespace svc)
  # The token of the pod's service account, the CA, and the Service's address
  # from the environment the kubelet gives every pod.
  pod "$ns" api "$(jq -n '{container: {command: ["sh", "-c",
    "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo reached $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; ls /var/run/secrets/kubernetes.io/serviceaccount"]}}')"
  wait_until 60 pod_is "$ns" api Succeeded || fail "the pod did not reach the API server: $(kubectl -n "$ns" logs api 2>&1)"
  out=$(kubectl -n "$ns" logs api) || fail "kubectl logs failed: $out"
  [[ $out == *"reached 10.0.0.1:443"* && $out == *token* ]] || fail "unexpected pod output: $out"
}

test_pvc_non_root_pod_writes_a_second_pod_reads_delete_cleans_the_node() {
  local ns uid dir spec out node
  ns=$(new_namespace pvc)
  operator_start "pvc-$ns" -o pvc -n "$ns" -h "$REPO_ROOT/hooks/pvc" -E "JOB_NAMESPACE=$ns"
  claim "$ns" data kind-worker2
  wait_until 90 bound "$ns" data || fail "the claim never became Bound"
  uid=$(kubectl -n "$ns" get pvc data -o jsonpath='{.metadata.uid}')
  dir=$VOLUMES/pvc-${uid}_${ns}_data
  [[ $(stat -c %a "$(on_disk kind-worker2 "$dir")") == 777 ]] || fail "the volume's mode is not 0777"
  # No nodeName: the scheduler must follow the PV's node affinity to kind-worker2.
  spec=$(claim_volume data | jq '. + {securityContext: {runAsUser: 1000, runAsGroup: 1000}}
    | .container.command = ["sh", "-c", "id -u > /data/hello && echo written by $(id -u)"]')
  pod "$ns" writer "$spec"
  wait_until 90 pod_is "$ns" writer Succeeded || fail "the non-root writer did not succeed: $(kubectl -n "$ns" logs writer 2>&1)"
  node=$(kubectl -n "$ns" get pod writer -o jsonpath='{.spec.nodeName}')
  [[ $node == kind-worker2 ]] || fail "the writer ran on $node, not on the volume's node"
  [[ $(stat -c %u "$(on_disk kind-worker2 "$dir/hello")") == 1000 ]] || fail "the file is not the pod user's"
  [[ ! -e $(on_disk kind-worker "$dir") ]] || fail "the volume shows on kind-worker's disk"
  spec=$(claim_volume data | jq '.container.command = ["cat", "/data/hello"]')
  pod "$ns" reader "$spec"
  wait_until 60 pod_is "$ns" reader Succeeded || fail "the reader did not succeed"
  out=$(kubectl -n "$ns" logs reader) || fail "kubectl logs reader failed: $out"
  [[ $out == 1000 ]] || fail "the reader did not see the writer's file: $out"
  kubectl -n "$ns" delete pod writer reader --wait=true >/dev/null
  kubectl -n "$ns" delete pvc data --wait=false >/dev/null
  wait_until 60 gone "$ns" pvc data || fail "the claim was not deleted"
  wait_until 60 test ! -e "$(on_disk kind-worker2 "$dir")" || fail "the volume's directory stayed on kind-worker2"
  wait_until 30 gone default pv "pvc-$uid" || fail "the PersistentVolume stayed"
}

# An image the node lacks (and cannot pull here) is named in the claim's
# Event once JOB_TIMEOUT passed, instead of a claim Pending without a word.
test_missing_job_image_is_named_in_the_claims_event() {
  local ns
  ns=$(new_namespace noimage)
  operator_start "noimage-$ns" -o pvc -n "$ns" -h "$REPO_ROOT/hooks/pvc" \
    -E "JOB_NAMESPACE=$ns,JOB_IMAGE=localhost/not-on-any-node:1,JOB_TIMEOUT=15s" --retries 0
  claim "$ns" lost kind-worker
  wait_until 60 claim_event_says "$ns" lost 'ProvisioningFailed.*(ErrImagePull|ImagePullBackOff).*localhost/not-on-any-node:1' \
    || fail "no Event on the claim names the missing image: $(kubectl -n "$ns" get events 2>&1)"
}

claim_event_says() {
  kubectl -n "$1" get events -o json | jq -r --arg c "$2" '.items[]
    | select(.involvedObject.kind == "PersistentVolumeClaim" and .involvedObject.name == $c)
    | "\(.reason) \(.message)"' | grep -Eq -- "$3"
}

evc_phase_is() {
  [[ $(kubectl -n "$1" get evc "$2" -o jsonpath='{.status.phase}' 2>/dev/null) == "$3" ]]
}

# The EVC's claim is provisioned when its pod is scheduled (a WaitForFirstConsumer
# class: the real scheduler picks the node, hooks/pvc follows it).
test_evc_pod_uses_the_claim_which_goes_after_its_grace_period() {
  local ns spec uid
  ns=$(new_namespace evc)
  kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-$ns}
provisioner: operator-pvc/local
volumeBindingMode: WaitForFirstConsumer
EOF
  operator_start "pvc-$ns" -o pvc -n "$ns" -h "$REPO_ROOT/hooks/pvc" -E "JOB_NAMESPACE=$ns,STORAGE_CLASS=local-$ns"
  operator_start "evc-$ns" -o evc -n "$ns" -h "$REPO_ROOT/hooks/evc" --resync 1s \
    -E EXPIRY_PERIOD=120,GRACE_PERIOD=5,COUNTDOWN_INTERVAL=2
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: zalando.org/v1
kind: EphemeralVolumeClaim
metadata: {name: scratch}
spec: {size: 1Gi, storageClassName: local-$ns}
EOF
  wait_until 30 kubectl -n "$ns" get pvc scratch >/dev/null || fail "the EVC made no claim"
  spec=$(claim_volume scratch | jq '.container.command = ["sh", "-c", "echo used > /data/f; sleep 8; cat /data/f"]')
  pod "$ns" user "$spec"
  wait_until 90 pod_is "$ns" user Running || fail "the pod using the EVC's claim never ran"
  wait_until 10 evc_phase_is "$ns" scratch InUse || fail "the EVC is not InUse while its pod runs"
  wait_until 30 pod_is "$ns" user Succeeded || fail "the pod did not finish"
  [[ $(kubectl -n "$ns" logs user) == used ]] || fail "the pod did not read back what it wrote"
  kubectl -n "$ns" get evc scratch >/dev/null 2>&1 || fail "the EVC went before its grace period"
  wait_until 30 gone "$ns" evc scratch || fail "the EVC stayed after its grace period"
  # kubernetes.io/pvc-protection keeps the claim while a pod names it, even a
  # finished one (1.20): deleting the pod lets it go, and its volume with it.
  uid=$(kubectl -n "$ns" get pvc scratch -o jsonpath='{.metadata.uid}')
  kubectl -n "$ns" delete pod user >/dev/null
  wait_until 60 gone "$ns" pvc scratch || fail "the EVC's claim stayed"
  wait_until 60 gone default pv "pvc-$uid" || fail "the claim's PersistentVolume stayed"
}

run_tests
