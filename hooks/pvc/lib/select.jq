# The claims of a snapshot ({"objects": [claims]}) that need a volume: of class
# $class, not Bound, not being deleted, and not pre-bound to another volume.
# Output, for lib/snapshot.sh: line 1 "<claims in the snapshot> <claims that need a
# volume>"; then, when some do, line 2 the JSON array of them; then the valid node
# names they name, one a line (the only values from claims that reach a command
# line, as separate arguments, after the DNS-name check).
include "names";

def class: .spec.storageClassName // .metadata.annotations["volume.beta.kubernetes.io/storage-class"];
# The claim's selector, else the node the scheduler picked (WaitForFirstConsumer).
def node: [.spec.selector.matchLabels["kubernetes.io/hostname"],
           .metadata.annotations["volume.kubernetes.io/selected-node"]]
  | map(select(. != null and . != "")) | first // "";
def wanted: class == $class and .status.phase != "Bound" and (.metadata.deletionTimestamp | not)
  and ((.spec.volumeName // "") as $v | $v == "" or $v == "pvc-\(.metadata.uid)");

[.objects[] | select(wanted)
 | {uid: (.metadata.uid // ""), ns: (.metadata.namespace // ""), name: (.metadata.name // ""),
    node: (node | tostring), size: (.spec.resources.requests.storage // "" | tostring),
    mode: (.spec.volumeMode // "Filesystem" | tostring), modes: (.spec.accessModes // [])}] as $claims
| "\(.objects | length) \($claims | length)",
  if $claims == [] then empty else
    ($claims | tojson), ($claims | map(.node | select(subdomain_ok)) | unique[])
  end
