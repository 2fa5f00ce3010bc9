# After a round of Jobs (lib/snapshot.sh): which PVs to create, which Jobs to delete,
# which claims failed. $plan[0]: decide.jq's plan; $results: lines "NAME STATE UID"
# of the Jobs waited for (succeeded, failed, missing, timeout, uncreated); $pods[0]:
# the mkdir Jobs' pods when one failed or timed out (may be missing); $createerr: what kubectl create said;
# $split: "yes" when a failed Job of several claims is to be retried as one Job per
# claim (the first round). Output, NUL-terminated fields:
#   pv PVNAME NAMESPACE CLAIM SIZE POLICY NODE PATH | pvs LIST | delete JOB
#   fail NAMESPACE CLAIM MESSAGE | new JOB WHAT | split LIST | plan JSON
include "manifests";

def rec($fields): $fields | map(tostring + "\u0000") | add;
def items: if . == null then [] elif .kind == "List" then .items // [] else [.] end;
def ref: "\(.ns)/\(.name)";
# What a failed Job's pod said, as lib/job.sh's job_why.
def why($pods; $uid):
  [$pods[] | select(.metadata.labels["controller-uid"] == $uid) | .status
   | ((.containerStatuses // [])[].state.terminated // empty
      | "exit code \(.exitCode)" + (if .reason then " (\(.reason))" else "" end)
        + (if .message then ": \(.message)" else "" end)),
     (select(.reason) | "pod \(.reason): \(.message // "")")]
  | first // "its pod left no details";
# Why the pod of a Job that timed out has not ended: a waiting container (ErrImagePull
# or ImagePullBackOff, naming the image the node lacks and cannot pull) or no node.
def waiting($pods; $job):
  [$pods[] | select(.metadata.labels["job-name"] == $job) | .status
   | ((.containerStatuses // [])[].state.waiting // empty | select(.reason)
      | "its pod waits: \(.reason)" + (if .message then ": \(.message)" else "" end)),
     (.conditions[]? | select(.type == "PodScheduled" and .status == "False")
      | "its pod is not scheduled: \(.message // "")")]
  | first // "its pod never started";

$ARGS.named as $s
| ($results | split("\n") | map(select(. != "") | split(" ") | {key: .[0], value: {state: .[1], uid: (.[2] // "")}})
 | from_entries) as $res
| [$pods[] | items[]] as $pods
| $plan[0].policy as $policy
| [$plan[0].jobs[] | . + ($res[.name] // {}) | .uid = (if (.uid // "") == "" then null else .uid end)] as $jobs
| [$jobs[] | select(.state == "failed" and $split == "yes" and (.claims | length) > 1)] as $splits
| ($jobs[] | select(.state == "succeeded") | .claims[]
   | rec(["pv", "pvc-\(.uid)", .ns, .name, .size, $policy, .node, .path])),
  ([$jobs[] | select(.state == "succeeded") | .claims[]] as $ok
   | if $ok == [] then empty else rec(["pvs", (list($ok[] | pv($s; .; $policy)) | tojson)]) end),
  ($jobs[] | select(IN(.state; "succeeded", "failed", "timeout")) | rec(["delete", .name])),
  ($jobs[] | select(IN(.state; "failed", "timeout", "missing", "uncreated"))
   | select(IN(.; $splits[]) | not) | . as $j
   | (if .state == "failed" then "failed on node \(.node), \(why($pods; .uid))"
      elif .state == "timeout" then "did not finish on node \(.node) within JOB_TIMEOUT=\($s.timeout), \(waiting($pods; .name))"
      elif .state == "missing" then "disappeared before it finished"
      else "could not be created on node \(.node): \($createerr | rtrimstr("\n"))" end) as $what
   | .claims[]
   | rec(["fail", .ns, .name, "Job \($s.jobns)/\($j.name) (mkdir -m \($s.mode) -p -- \(.path)\(if ($j.claims | length) > 1
       then " and \($j.claims | length - 1) more" else "" end)) \($what)"])),
  (if $splits == [] then empty else
     [$splits[].claims[] | {name: "pvc-mkdir-\(.uid)", node, state: "new", claims: [.]}] as $new
     | ($new[] | rec(["new", .name, "on node \(.node) for 1 claim: mkdir -m \($s.mode) -p -- \(.claims[0].path)"])),
       rec(["split", (list($new[] | mkdir_job($s; .name; .node; .claims)) | tojson)]),
       rec(["plan", ({policy: $policy, jobs: $new} | tojson)])
   end)
