# shellcheck shell=bash
# Children that follow their parent: the hook's object (that of $EVENT_FILE)
# becomes their controlling owner, so Kubernetes' garbage collector deletes
# them when it is deleted. Source it relative to the hook:
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib/children.sh"
#
#   adopt < MANIFEST | kubectl apply -f -
#
# adopt reads manifests on stdin: JSON (one object, several, an array or a
# List) or YAML (converted with `kubectl create --dry-run=client -o json`,
# which needs the API server). It writes them as JSON, each with:
#   - the hook's object appended to metadata.ownerReferences (`operator
#     owner-ref`: controller: true, blockOwnerDeletion: true); an earlier
#     reference to the same owner is replaced, so adopting twice is harmless;
#   - metadata.namespace set to the owner's when the child has none;
#   - metadata.generateName "<owner name>-" when the child has neither name
#     nor generateName.
# It fails (non-zero, a message naming the child) when the child is in
# another namespace than its owner (owner references cannot cross
# namespaces) or already has another controller.

adopt() {
  local refs owner ns input
  refs=$("${OPERATOR_BIN:-operator}" owner-ref) || return 1
  owner=$(jq -c '.object.metadata | {name, namespace: (.namespace // "")}' "$EVENT_FILE") || return 1
  ns=$(jq -r .namespace <<<"$owner")
  input=$(cat) || return 1
  if [[ ! $input =~ ^[[:space:]]*[\{\[] ]]; then
    # kubectl fills in the namespace: the owner's, not the kubeconfig's.
    input=$(kubectl create --dry-run=client -o json ${ns:+--namespace "$ns"} -f - <<<"$input") ||
      { echo "adopt: stdin is neither JSON nor YAML that kubectl can read" >&2; return 1; }
  fi
  jq --argjson refs "$refs" --argjson owner "$owner" "$_CHILDREN_ADOPT_JQ" <<<"$input"
}

# shellcheck disable=SC2016  # a jq program: $refs and $owner are jq's
_CHILDREN_ADOPT_JQ='
def child: "\(.kind // "object") \(.metadata.name // .metadata.generateName // "(no name)")";
def adopt_one:
  $refs[0] as $ref
  | (.metadata.ownerReferences // []) as $old
  | if any($old[]; .controller == true and .uid != $ref.uid) then
      error("adopt: \(child) already has a controller: \([$old[] | select(.controller == true)
        | "\(.kind) \(.name)"] | join(", "))")
    elif $owner.namespace != "" and (.metadata.namespace // $owner.namespace) != $owner.namespace then
      error("adopt: \(child) is in namespace \(.metadata.namespace), its owner in \($owner.namespace): owner references cannot cross namespaces")
    else . end
  | .metadata.ownerReferences = [$old[] | select(.uid != $ref.uid)] + $refs
  | if $owner.namespace != "" then .metadata.namespace = $owner.namespace else . end
  | if (.metadata.name // "") == "" and (.metadata.generateName // "") == ""
    then .metadata.generateName = "\($owner.name)-" else . end;
if type == "array" then map(adopt_one)
elif .kind == "List" then .items |= map(adopt_one)
else adopt_one end'
