# shellcheck shell=bash
# The PersistentVolume of a claim: looked up by its uid-derived name, made
# bound to the claim (claimRef), pinned to the node that holds the directory.

# The PV as JSON; empty when there is none. Non-zero only on API errors.
pv_get() {
  kubectl get pv "$PV_NAME" --ignore-not-found -o json
}

# pv_is_ours JSON: made by these hooks, for this very claim.
pv_is_ours() {
  jq -e --arg uid "$CLAIM_UID" --arg managed "$MANAGED_BY" \
    '.spec.claimRef.uid == $uid and .metadata.labels["app.kubernetes.io/managed-by"] == $managed' \
    <<<"$1" >/dev/null
}

# RECLAIM_POLICY, else the StorageClass's reclaimPolicy, else Kubernetes' Delete.
reclaim_policy() {
  [[ -z $RECLAIM_POLICY ]] || { echo "$RECLAIM_POLICY"; return 0; }
  local json
  json=$(kubectl get storageclass "$STORAGE_CLASS" --ignore-not-found -o json) || return 1
  [[ -n $json ]] || json='{}'
  jq -r '.reclaimPolicy // "Delete"' <<<"$json"
}

# pv_manifest POLICY: from SIZE, MODE, MODES, NODE and the claim's names.
pv_manifest() {
  jq -n --arg name "$PV_NAME" --arg size "$SIZE" --arg policy "$1" --arg mode "$MODE" \
    --argjson modes "$MODES" --arg class "$STORAGE_CLASS" --arg path "$VOLUME_PATH" \
    --arg node "$NODE" --arg hostkey "$HOSTNAME_KEY" --arg ns "$CLAIM_NS" \
    --arg claim "$CLAIM_NAME" --arg uid "$CLAIM_UID" --arg managed "$MANAGED_BY" \
    --arg uidkey "$UID_LABEL" '
    {apiVersion: "v1", kind: "PersistentVolume",
     metadata: {name: $name,
       labels: ({"app.kubernetes.io/managed-by": $managed, ($uidkey): $uid}
                + (if ($node | length) <= 63 then {($hostkey): $node} else {} end)),
       annotations: {"operator-pvc/claim": "\($ns)/\($claim)"}},
     spec: {capacity: {storage: $size}, accessModes: $modes, volumeMode: $mode,
       storageClassName: $class, persistentVolumeReclaimPolicy: $policy,
       local: {path: $path},
       claimRef: {apiVersion: "v1", kind: "PersistentVolumeClaim",
                  namespace: $ns, name: $claim, uid: $uid},
       nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [
         {key: $hostkey, operator: "In", values: [$node]}]}]}}}}'
}

# pv_node JSON: the node in the PV's required node affinity.
pv_node() {
  jq -r --arg hostkey "$HOSTNAME_KEY" '[.spec.nodeAffinity.required.nodeSelectorTerms[]?
    .matchExpressions[]? | select(.key == $hostkey and .operator == "In") | .values[]?]
    | first // empty' <<<"$1"
}

# node_check REASON: NODE is a valid name of an existing node, or claim_fail.
node_check() {
  local out
  subdomain_ok "$NODE" || claim_fail 100 "$1" "node name $(printf '%q' "$NODE") is not a valid node name"
  out=$(kubectl get node "$NODE" -o name 2>&1) && return 0
  [[ $out == *NotFound* ]] && claim_fail 100 "$1" "node $NODE does not exist"
  claim_fail 1 "$1" "could not look up node $NODE: $out"
}
