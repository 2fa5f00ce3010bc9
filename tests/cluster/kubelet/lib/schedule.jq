# Input: a pod. $nodes: a NodeList; $load: node names, one line per pod on it.
# Output: the name of the node to bind the pod to, or "" when none fits.
# Honours nodeSelector, required node affinity (matchExpressions and
# matchFields), NoSchedule/NoExecute taints vs tolerations, Ready, cordoning.

def tolerates($taint):
  ((.key // "") == "" and .operator == "Exists")
  or ((.key // "") == $taint.key
      and (.operator == "Exists" or (.value // "") == ($taint.value // "")));

def tolerated($tols):
  . as $taint
  | any($tols[]; tolerates($taint) and ((.effect // "") == "" or .effect == $taint.effect));

def expr_ok($labels):
  ($labels[.key]) as $v
  | (.values // []) as $values
  | if .operator == "In" then $v != null and ($v | IN($values[]))
    elif .operator == "NotIn" then $v == null or ($v | IN($values[]) | not)
    elif .operator == "Exists" then $v != null
    elif .operator == "DoesNotExist" then $v == null
    elif .operator == "Gt" then $v != null and (($v | tonumber) > (.values[0] | tonumber))
    elif .operator == "Lt" then $v != null and (($v | tonumber) < (.values[0] | tonumber))
    else false end;

def field_ok($name):
  (.values // []) as $values
  | if .key != "metadata.name" then false
  elif .operator == "In" then ($name | IN($values[]))
  elif .operator == "NotIn" then ($name | IN($values[]) | not)
  else false end;

# An empty term matches no node, as in the real scheduler.
def term_ok($node):
  ((.matchExpressions // []) + (.matchFields // []) | length > 0)
  and all(.matchExpressions[]?; expr_ok($node.metadata.labels // {}))
  and all(.matchFields[]?; field_ok($node.metadata.name));

def fits($pod):
  . as $node
  | ($node.metadata.labels // {}) as $labels
  | ($pod.spec.tolerations // []) as $tols
  | ($pod.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms) as $terms
  | any($node.status.conditions[]?; .type == "Ready" and .status == "True")
    and (($node.spec.unschedulable // false) | not)
    and all(($pod.spec.nodeSelector // {}) | to_entries[]; $labels[.key] == .value)
    and ($terms == null or any($terms[]; term_ok($node)))
    and all($node.spec.taints[]? | select(.effect == "NoSchedule" or .effect == "NoExecute");
            tolerated($tols));

($load | split("\n") | map(select(. != "")) | group_by(.)
 | map({(.[0]): length}) | add // {}) as $load
| . as $pod
| [$nodes.items[] | select(fits($pod))]
| sort_by([($load[.metadata.name] // 0), .metadata.name])
| (first | .metadata.name) // ""
