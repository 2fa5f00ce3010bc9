# What one snapshot run does, decided at once for every claim that needs a volume.
# $claims[0]: select.jq's array; $found: the PVs and Jobs with the managed-by label;
# $named: the claims' nodes and the StorageClass (kubectl output, may be empty);
# $s: the settings (manifests.jq). Output for lib/snapshot.sh, NUL-terminated fields:
#   log LEVEL MESSAGE | warn NAMESPACE NAME REASON MESSAGE | running JOB | failed UID | new JOB WHAT
#   create LIST | plan JSON
# The plan: {policy, jobs: [{name, node, state: new|running|succeeded|failed, uid (found Jobs),
# claims: [{uid, ns, name, node, path, size, mode, modes}]}]}.
include "names";
include "manifests";

def items: if . == null then [] elif .kind == "List" then .items // [] else [.] end;
def all_items($docs): [$docs[] | items[]];
def rec($fields): $fields | map(tostring + "\u0000") | add;
def ref: "\(.ns)/\(.name)";
# As lib/job.sh's JOB_STATE_JQ: a Job deleted after it made the directories did its work.
def job_state: if (.status.succeeded // 0) > 0 then "succeeded"
  elif .metadata.deletionTimestamp then "deleting"
  elif (.status.failed // 0) > 0
    or any(.status.conditions[]?; .type == "Failed" and .status == "True") then "failed"
  else "running" end;
def modes_ok: type == "array" and length > 0
  and all(.[]; IN("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"));

$ARGS.named as $s
| all_items($found) as $found | all_items($named) as $named
| ($found | map(select(.kind == "PersistentVolume") | {key: .metadata.name, value: .}) | from_entries) as $pvs
| ($named | map(select(.kind == "Node") | {key: .metadata.name, value: true}) | from_entries) as $nodes
| (if $s.policy != "" then $s.policy
   else ([$named[] | select(.kind == "StorageClass" and .metadata.name == $s.class) | .reclaimPolicy]
         | first // "Delete") end) as $policy
| [$found[] | select(.kind == "Job" and .metadata.labels["app.kubernetes.io/component"] == "mkdir")
   | {name: .metadata.name, uid: .metadata.uid, node: (.spec.template.spec.nodeName // ""), state: job_state,
      serves: ((.metadata.annotations["operator-pvc/claims"] // "[]") | fromjson? // [])}
   | select(.state != "deleting")] as $jobs

# Every claim's verdict, in the order of the checks of the per-claim hooks before.
| [$claims[0][]
   | . + {path: "\($s.dir)/\("pvc-\(.uid)_\(.ns)_\(.name)" | .[0:200])"}
   | . as $c | $pvs["pvc-\(.uid)"] as $pv
   | if (.uid | uuid_ok | not) or (.ns | label_ok | not) or (.name | subdomain_ok | not) then
       . + {v: "refuse"}
     elif $pv and ($pv.spec.claimRef.uid == .uid
                   and $pv.metadata.labels["app.kubernetes.io/managed-by"] == $s.managed) then
       . + {v: "has_pv"}
     elif $pv then . + {v: "fail", why: "PersistentVolume pvc-\(.uid) exists but was not made for this claim"}
     elif .size == "" then . + {v: "fail", why: "no storage size requested (spec.resources.requests.storage)"}
     elif (.size | quantity_ok | not) then . + {v: "fail", why: "storage request \(.size | tojson) is not a quantity"}
     elif .mode != "Filesystem" then
       . + {v: "fail", why: "volumeMode \(.mode | tojson) is not supported: a directory is a Filesystem volume"}
     elif (.modes | modes_ok | not) then . + {v: "fail", why: "access modes \(.modes | tojson) are missing or unknown"}
     elif .node == "" then . + {v: "no_node"}
     elif (.node | subdomain_ok | not) then . + {v: "fail", why: "node name \(.node | tojson) is not a valid node name"}
     elif ($nodes[.node] | not) then . + {v: "fail", why: "node \(.node) does not exist"}
     else
       ([$jobs[] | select(.node == $c.node and any(.serves[]; .uid == $c.uid and .path == $c.path))
         | .name] | first) as $job
       | . + (if $job then {v: "covered", job: $job} else {v: "new"} end)
     end] as $verdicts

| ([$jobs[] | .name as $n | . + {claims: [$verdicts[] | select(.v == "covered" and .job == $n)]}
    | select(.claims != []) | {name, uid, node, state, claims}]) as $old
| ([$verdicts[] | select(.v == "new")] | group_by(.node) | map(_nwise(256))
   | map({name: "pvc-mkdir-\(map(.uid) | min)", node: .[0].node, state: "new", claims: .})) as $new
| [($old + $new)[] | .claims |= map(del(.v, .job, .why))] as $plan

| ($verdicts[]
   | if .v == "refuse" then
       rec(["log", "ERROR", "pvc: refusing claim \(.ns | tojson)/\(.name | tojson) with uid \(.uid | tojson): not a valid namespace, name and uid"])
     elif .v == "has_pv" then
       rec(["log", "INFO", "pvc: claim \(ref) already has PersistentVolume pvc-\(.uid); Kubernetes binds them"])
     elif .v == "fail" then
       rec(["log", "ERROR", "pvc: claim \(ref): \(.why)"]),
       rec(["warn", .ns, .name, "ProvisioningFailed", .why])
     elif .v == "no_node" then
       rec(["log", "INFO", "pvc: claim \(ref) names no node (selector \($s.hostkey) or annotation volume.kubernetes.io/selected-node); no volume yet"]),
       rec(["warn", .ns, .name, "NoNodeSelected", "no node chosen: set spec.selector.matchLabels[\"\($s.hostkey)\"], or use a WaitForFirstConsumer class"])
     else empty end),
  ($old[] | rec(["log", "INFO", "pvc: found Job \($s.jobns)/\(.name) of an earlier attempt (\(.state)) on node \(.node) for \(.claims | length) claim(s): \(.claims | map(ref) | join(" ")); not creating another"])),
  ($old[] | select(.state == "running") | rec(["running", .name])),
  ($old[] | select(.state == "failed") | rec(["failed", .uid])),
  ($new[] | rec(["new", .name, "on node \(.node) for \(.claims | length) claim(s): mkdir -m \($s.mode) -p -- \(.claims[0].path)\(if (.claims | length) > 1 then " …" else "" end)"])),
  (if $new == [] then empty else rec(["create", (list($new[] | mkdir_job($s; .name; .node; .claims)) | tojson)]) end),
  rec(["plan", ({policy: $policy, jobs: $plan} | tojson)])
