# jq definitions shared by the EVC hooks; load with `jq -L "$EVC_LIB" 'include "evc"; ...'`.
# Everything here is pure: the decision about a claim is computed from the claim,
# the pods of its namespace, the time and the settings, so the hooks keep no state.

# --- sizes --------------------------------------------------------------------

# A Kubernetes quantity without sign. Exponents are tried before the E (exa) suffix.
def qty_parts:
  tostring
  | capture("^(?<n>[0-9]+(\\.[0-9]*)?|\\.[0-9]+)(?<s>[eE][+-]?[0-9]+|[KMGTPE]i|[kMGTPE]|m|u|n)?$")
  | .s //= "";

def qty_factor($s):
  if $s == "" then 1
  elif ($s | test("^[eE].")) then pow(10; $s[1:] | tonumber)
  else {"Ki": 1024, "Mi": 1048576, "Gi": 1073741824, "Ti": 1099511627776,
        "Pi": 1125899906842624, "Ei": 1152921504606846976,
        "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
        "m": 1e-3, "u": 1e-6, "n": 1e-9}[$s]
  end;

# Bytes as a (floating) number, or null when the value is not a quantity.
def qty_bytes:
  ([try qty_parts catch empty] | first) as $p
  | if $p == null then null else ($p.n | tonumber) * qty_factor($p.s) end;

# A storage request must be a quantity and more than zero.
def valid_size: (qty_bytes // 0) > 0;

# --- pods ---------------------------------------------------------------------

def ts: if . == null or . == "" then null else (try fromdateiso8601 catch null) end;

def labels_match($want): . as $have | all($want | to_entries[]; $have[.key] == .value);

# Pods that reference the claim by name and, where the claim has a selector, match it.
def designated($evc):
  ($evc.spec.selector.matchLabels // {}) as $want
  | map(select(any(.spec.volumes[]?; .persistentVolumeClaim.claimName? == $evc.metadata.name)
               and ((.metadata.labels // {}) | labels_match($want))));

# Failed is terminal for a pod: containers that restart keep the pod Running.
def finished: .status.phase == "Succeeded" or .status.phase == "Failed";

# When a finished pod stopped: its containers' finish, else its last condition change.
def finish_time:
  ([.status.containerStatuses[]?.state.terminated.finishedAt | ts | values] | max)
  // ([.status.conditions[]?.lastTransitionTime | ts | values] | max)
  // (.metadata.creationTimestamp | ts);

# --- decision -------------------------------------------------------------------

def period($v; $default): if $v == null then $default else $v end;

def iso: if . == null then null else todate end;

# The settings: {expiry, grace, interval} from the environment; spec overrides periods.
def periods($evc; $cfg):
  {expiry: period($evc.spec.expiryPeriod; $cfg.expiry),
   grace: period($evc.spec.gracePeriod; $cfg.grace),
   interval: ([$cfg.interval, 1] | max)};

# The claim is used: refresh lastUsed at most once an interval, to bound status writes.
def in_use($st; $now; $p; $active):
  ($st.lastUsed | ts) as $last
  | {phase: "InUse", deadline: null,
     lastUsed: (if $st.phase != "InUse" or $last == null or $now - $last >= $p.interval
                then $now else $last end),
     message: "In use by pod(s) \([$active[].metadata.name] | sort | join(", "))"};

# Used before and every designated pod is finished or gone: the grace countdown
# from the latest finish. Coming from InUse, lastUsed was refreshed while the last
# user ran, so that user finished at or after it: when no pod here did, it was
# deleted unseen, and now is its finish (late rather than early).
def last_finish($st; $now; $pods):
  [$pods[] | finish_time | values] as $finishes
  | ($st.lastUsed | ts) as $last
  | if $st.phase != "InUse" then $finishes + [$last | values] | max
    elif any($finishes[]; . >= ($last // 0)) then $finishes | max
    else $now end;

def released($st; $now; $p; $pods):
  last_finish($st; $now; $pods) as $stop
  | {phase: "Released", lastUsed: $stop, deadline: ($stop + $p.grace), kind: "cleanup",
     message: "All pods finished; deleted at \(($stop + $p.grace) | todate) unless used again"};

def never_used($evc; $p):
  (($evc.metadata.creationTimestamp | ts) + $p.expiry) as $deadline
  | {phase: "Pending", lastUsed: null, deadline: $deadline, kind: "expiry",
     message: "Not used yet; deleted at \($deadline | todate) unless a pod uses it"};

# Countdown bookkeeping: log when a countdown starts (a new deadline) and then
# whenever an interval has passed since the last line, whatever the events' pace,
# as long as an interval is left: the last line before the deletion would cost every
# claim of a burst expiring together one more status write, for a few seconds' notice.
# Due only once the deadline is in the stored status: a claim found past a deadline
# nobody was shown yet (a slow pass) first gets that status, and goes at the next run.
def countdown($st; $now; $p):
  if .deadline == null then . + {countdownLogged: null, log: false, due: false}
  else ((.deadline - $now) | ceil) as $left
    | (($st.deadline | ts) != .deadline
       or ($left <= ($st.countdownLogged // 0) - $p.interval and $left >= $p.interval)) as $next
    | (($st.deadline | ts) == .deadline) as $recorded
    # The line announcing a new countdown comes even when a slow pass finds it over
    # already ("0s left"); the deletion follows at the next run.
    | . + {left: ([$left, 0] | max), due: ($left <= 0 and $recorded), log: ($next and ($left > 0 or ($recorded | not))),
           countdownLogged: (if $next then $left else $st.countdownLogged end)}
  end;

# Input: {evc, pods}. Output: the new status fields plus what to do:
# {phase, message, lastUsed, deadline (epoch), kind, left, due, log, countdownLogged,
#  cancelled (a countdown stopped because a pod uses the claim)}.
def decide($now; $cfg):
  .evc as $evc | (.evc.status // {}) as $st
  | periods($evc; $cfg) as $p
  | (.pods | designated($evc)) as $pods
  | ($pods | map(select(finished | not))) as $active
  | if ($active | length) > 0 then in_use($st; $now; $p; $active)
    elif ($pods | length) > 0 or ($st.lastUsed | ts) != null then released($st; $now; $p; $pods)
    else never_used($evc; $p)
    end
  | countdown($st; $now; $p)
  | .cancelled = (.phase == "InUse" and ($st.phase == "Pending" or $st.phase == "Released"))
  | .previous = ($st.phase // "")
  | .cancelledKind = (if $st.phase == "Pending" then "expiry" else "cleanup" end);

# The status fields of a decision, as stored (timestamps in RFC 3339).
def status_of: {phase, message, lastUsed: (.lastUsed | iso), deadline: (.deadline | iso), countdownLogged};

# True when the stored status differs from the decision's.
def status_changed($st): status_of as $new | ($new | keys) | any(($new[.]) != ($st[.]));

# --- the PVC ------------------------------------------------------------------

# Annotation on the PVC listing the label keys copied from the claim, so that
# labels the claim drops later are removed from the PVC (and no others).
def copied_labels_key: "ephemeralvolumeclaims.zalando.org/copied-labels";

def size_of: .spec.size // "" | tostring;

def owned_by($uid): any(.metadata.ownerReferences[]?; .uid == $uid);

def pvc_manifest:
  (.metadata.labels // {}) as $labels
  | {apiVersion: "v1", kind: "PersistentVolumeClaim",
     metadata: {name: .metadata.name, namespace: .metadata.namespace, labels: $labels,
                annotations: {(copied_labels_key): ($labels | keys | tojson)}},
     spec: ({accessModes: (if (.spec.accessModes // []) == [] then ["ReadWriteOnce"]
                           else .spec.accessModes end),
             resources: {requests: {storage: size_of}}}
            + if .spec.storageClassName then {storageClassName: .spec.storageClassName}
              else {} end)};

# A merge patch making the PVC's copied labels those of the claim, or null if none is needed.
def label_patch($evc; $pvc):
  ($evc.metadata.labels // {}) as $want
  | ($pvc.metadata.labels // {}) as $have
  | ($pvc.metadata.annotations[copied_labels_key]? // "[]" | try fromjson catch []) as $copied
  | ($copied - ($want | keys)) as $drop
  | if any($want | to_entries[]; $have[.key] != .value) or any($drop[]; in($have))
       or ($want | keys | tojson) != $pvc.metadata.annotations[copied_labels_key]?
    then {metadata: {labels: ($want + (reduce $drop[] as $k ({}; .[$k] = null))),
                     annotations: {(copied_labels_key): ($want | keys | tojson)}}}
    else null end;

# What a changed spec.size asks of the PVC: grow, shrink, same or invalid.
def resize_verdict($evc; $pvc):
  ($evc | size_of) as $want
  | if ($want | valid_size | not) then "invalid"
    else ($want | qty_bytes) as $w
      | ($pvc.spec.resources.requests.storage // "" | qty_bytes) as $have
      | if $have == null or $w > $have then "grow" elif $w < $have then "shrink" else "same" end
    end;

# --- a whole pass at once (sync-all) -----------------------------------------------------

# A pod cut down to what decide reads (name, labels, claims, phase, finish times), so a
# namespace of thousands of pods stays small in memory.
def slim_pod:
  {metadata: (.metadata | {name, labels, creationTimestamp}),
   spec: {volumes: [.spec.volumes[]? | select(.persistentVolumeClaim != null)
                    | {persistentVolumeClaim: {claimName: .persistentVolumeClaim.claimName}}]},
   status: {phase: .status.phase,
            containerStatuses: [.status.containerStatuses[]?
                                | {state: {terminated: {finishedAt: .state.terminated.finishedAt?}}}],
            conditions: [.status.conditions[]? | {lastTransitionTime}]}};

# Input: a PodList. Output: {claim name: [slim pods that mount it]}, so that each claim
# looks up its pods instead of scanning the namespace (1,000 claims x 5,000 pods).
def pods_by_claim:
  reduce (.items[] | slim_pod) as $pod ({};
    reduce ([$pod.spec.volumes[].persistentVolumeClaim.claimName] | unique[]) as $claim (.;
      .[$claim] += [$pod]));

# Input: a PersistentVolumeClaimList. Output: {name: PVC with the fields the hooks compare}.
def pvcs_by_name:
  reduce .items[] as $pvc ({};
    .[$pvc.metadata.name] = ($pvc
      | {metadata: (.metadata | {name, uid, labels, ownerReferences, deletionTimestamp,
                                 annotations: {(copied_labels_key): .annotations[copied_labels_key]?}}),
         spec: {resources: .spec.resources}}));

# Input: the PodLists and PersistentVolumeClaimLists of the claims' namespaces (as
# `kubectl get --raw` prints them). Output: {namespace: {claims: pods_by_claim,
# pvcs: pvcs_by_name}}; items are placed by their own namespace.
def index_lists:
  reduce .[] as $list ({};
    if $list.kind == "PodList" then
      reduce ($list.items | group_by(.metadata.namespace))[] as $ns (.;
        .[$ns[0].metadata.namespace].claims = ({items: $ns} | pods_by_claim))
    elif $list.kind == "PersistentVolumeClaimList" then
      reduce ($list.items | group_by(.metadata.namespace))[] as $ns (.;
        .[$ns[0].metadata.namespace].pvcs = ({items: $ns} | pvcs_by_name))
    else . end);


# --- plans in bulk (snapshot and sync-all) -------------------------------------------------
# One jq run decides every claim of a run and prints one record (a JSON line) per claim that
# needs something; lib/bulk.sh carries them out with a few kubectl runs for all claims:
#   {do: "delete", ref, ns, name, uid, rv, kind, pvc}  deadline reached (pvc: its PVC's uid)
#   {do: "create", ref, pvc, size, then}                PVC missing: create it, then write `then`
#   {do: "write", ref, object, logs, event}             new status (object: the claim with it)
#   {do: "reconcile", evc, pods, pvc}                   labels or size of its PVC: one by one
# logs: [{level, text}], announced once the status is stored; event: {reason, message} or null.

def evc_ref: "\(.metadata.namespace)/\(.metadata.name)";

# The claim as a status write sends it: its resourceVersion makes the write conditional.
def write_object($status):
  {apiVersion, kind, metadata: (.metadata | {name, namespace, uid, resourceVersion}), spec, status: $status};

# The PVC as created in bulk: owned by the claim, as `adopt` (../../lib/children.sh) makes it.
def pvc_child:
  . as $evc
  | pvc_manifest
  | .metadata.ownerReferences = [{apiVersion: ($evc.apiVersion // "zalando.org/v1"), kind: "EphemeralVolumeClaim",
      name: $evc.metadata.name, uid: $evc.metadata.uid, controller: true, blockOwnerDeletion: true}];

def invalid_size_message: "spec.size must be a positive quantity such as 1Gi, got '\(size_of)'; no PVC created";
def conflict_message: "PVC \(evc_ref) exists and is not owned by this EphemeralVolumeClaim; it is left alone";

# Already Failed for the reason that still holds: deciding again would change nothing.
def failed_as_before($evc; $pvc):
  $evc.status.phase == "Failed"
  and $evc.status.message == (
    if $pvc == null and ($evc | size_of | valid_size | not) then $evc | invalid_size_message
    elif $pvc != null and ($pvc | owned_by($evc.metadata.uid) | not) then $evc | conflict_message
    else null end);

# The status to store: the old one with the decision's fields; null fields are left out,
# as a merge patch would remove them (the schema refuses null).
# Input: a decision.
def new_status($old): ($old // {}) + status_of | with_entries(select(.value != null));

# The log lines of a decision, as run_lifecycle (lib/lifecycle.sh) writes them.
def decision_logs($ref):
  (if .cancelled then "\($ref): Countdown to \(.cancelledKind): cancelled, the claim is in use."
   else empty end),
  (if .phase != .previous then "\($ref): Phase \(.phase): \(.message)" else empty end),
  (if .log then "\($ref): Countdown to \(.kind): \(.left)s left" else empty end);

# Input: a claim that cannot have its PVC. Failed, no countdown, a Warning Event; nothing
# when it is Failed with that message already (the Event and log line come once).
def failure($reason; $message):
  if .status.phase == "Failed" and .status.message == $message then empty
  else {do: "write", ref: evc_ref, event: {reason: $reason, message: $message},
        logs: [{level: "WARNING", text: "\(evc_ref): \($message)"}],
        object: write_object((.status // {}) + {phase: "Failed", message: $message}
                             | del(.deadline, .countdownLogged))}
  end;

# Input: a claim and its decision $d. The status write of that decision, or nothing when
# the status would not change. $extra: fields to store beside it (status.size).
def decided_write($d; $extra):
  (.status as $old | ($d | new_status($old)) + $extra) as $status
  | if $status == (.status // {}) then empty
    else {do: "write", ref: evc_ref, event: null, object: write_object($status),
          logs: [$d | decision_logs(.evc_ref) | {level: "INFO", text: .}]}
    end;

# Input: a claim without PVC and its decision: create the PVC, then store the decision and
# status.size (lib/bulk.sh: the write goes out only if the PVC was created).
def create_then_write($d):
  {do: "create", ref: evc_ref, size: size_of, pvc: pvc_child, old: (.status // {}),
   then: (decided_write($d; {size: size_of}) // {do: "write", ref: evc_ref, event: null, logs: [],
          object: write_object((.status // {}) + {size: size_of})})};

# One claim. $first: a new claim (no status yet; the snapshot hook): its first phase is
# decided without pods, and nothing is deleted. Otherwise (sync-all) with its pods.
def claim_plan($now; $cfg; $pods; $pvc; $first):
  evc_ref as $ref | .metadata.uid as $uid
  | if failed_as_before(.; $pvc) then empty
    elif $pvc != null and ($pvc | owned_by($uid) | not) then failure("NameConflict"; conflict_message)
    elif $pvc == null and (size_of | valid_size | not) then failure("InvalidSize"; invalid_size_message)
    elif $pvc != null and ($first | not) and ((label_patch(.; $pvc) != null) or size_of != (.status.size // "" | tostring))
      then {do: "reconcile", evc: ., pods: $pods, pvc: $pvc}
    else
      ({evc: ., pods: (if $first then [] else $pods end)} | decide($now; $cfg) | .evc_ref = $ref) as $d
      | if $d.due and ($first | not) then
          {do: "delete", ref: $ref, ns: .metadata.namespace, name: .metadata.name, uid: .metadata.uid,
           rv: .metadata.resourceVersion, kind: $d.kind,
           pvc: (if $pvc != null and ($pvc | owned_by($uid)) then $pvc.metadata.uid else null end)}
        elif $pvc == null then create_then_write($d)
        else decided_write($d; {})
        end
    end;

# Input: the objects of a run ({objects: [claims]}). $index: {namespace: {claims:
# pods_by_claim, pvcs: pvcs_by_name}}. $first: the snapshot hook's run (the claims without
# a status), else sync-all's (the claims with one). Output: {do: "count", claims, mine,
# next: the earliest stored deadline still ahead}, then the records above.
def plan($now; $cfg; $index; $first):
  [.objects[] | select(.metadata.deletionTimestamp == null and ((.status.phase == null) == $first))] as $mine
  | {do: "count", claims: (.objects | length), mine: ($mine | length),
     next: ([$mine[].status.deadline | ts | values | select(. > $now)] | min)},
    ($mine[]
     | ($index[.metadata.namespace] // {}) as $ns
     | claim_plan($now; $cfg; $ns.claims[.metadata.name] // []; $ns.pvcs[.metadata.name]; $first));

# The namespaces of the claims a run handles ($first: the snapshot's, without a status; else
# sync-all's, with one), so that it lists only there, and only when there is one.
def claims_namespaces($first):
  [.objects[] | select(.metadata.deletionTimestamp == null and ((.status.phase == null) == $first))
   | .metadata.namespace]
  | unique[];

# After a bulk create: the status writes. Input: a create record; $made: {ref: true} of the
# PVCs created; $errs: kubectl's error lines of their namespace.
def create_result($made; $errs):
  if $made[.ref] then .size as $size
    | .then | .logs = [{level: "INFO", text: "\(.ref): Created PVC \(.ref) of \($size)"}] + .logs
  else
    .ref as $ref | (.ref | split("/")[1]) as $name
    | ([$errs[] | select(contains("persistentvolumeclaims \"\($name)\""))] | first
       // ($errs | first) // "no answer from kubectl") as $line
    | ($line | sub("^.*error when creating \"[^\"]*\": "; "")) as $why
    | .old as $old | .then.object | .status = $old
    | failure("PVCNotCreated"; "could not create PVC \($ref): \($why); tried again at the next pass")
  end;
