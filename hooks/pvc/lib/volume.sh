# shellcheck shell=bash
# The PersistentVolume of a deleted claim: looked up by its uid-derived name, checked
# to be ours (manifests.jq builds it), and the node that holds its directory.

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
