# Input: a Running pod. $results: {containers: [{name, exitCode, message}],
# init: [...same...]} from running the simulated commands. $now: RFC 3339 time.
# Output: the status merge-patch of a pod whose containers have exited.

def terminated($r; $started):
  {exitCode: $r.exitCode, reason: (if $r.exitCode == 0 then "Completed" else "Error" end),
   startedAt: $started, finishedAt: $now}
  + (if ($r.message // "") != "" then {message: $r.message} else {} end);

# A condition keeps its lastTransitionTime while its status stays the same.
def cond($old; $type; $status):
  ([$old[] | select(.type == $type and .status == $status) | .lastTransitionTime] | first) as $t
  | {type: $type, status: $status, lastProbeTime: null, lastTransitionTime: ($t // $now)}
    + (if $status == "False" then {reason: "PodCompleted"} else {} end);

(.status.conditions // []) as $conds
| (.status.startTime // $now) as $started
| ([$results.init[], $results.containers[] | select(.exitCode != 0)] | first) as $failed
| ($results.init | map(select(.exitCode != 0)) | length > 0) as $init_failed
| (.status.containerStatuses // []) as $old
| (.status.initContainerStatuses // []) as $old_init
| {status: ({
    phase: (if $failed then "Failed" else "Succeeded" end),
    conditions: [cond($conds; "Initialized"; if $init_failed then "False" else "True" end),
                 cond($conds; "Ready"; "False"), cond($conds; "ContainersReady"; "False"),
                 cond($conds; "PodScheduled"; "True")],
    containerStatuses: [$old[] | .name as $n
      | ($results.containers[] | select(.name == $n)) as $r
      | . + {ready: false, started: false,
             state: (if $init_failed then {waiting: {reason: "PodInitializing"}}
                     else {terminated: (terminated($r; $started) + {containerID})} end)}]}
    + (if $old_init == [] then {} else
        {initContainerStatuses: [$old_init[] | .name as $n
          | ($results.init[] | select(.name == $n)) as $r
          | . + {ready: ($r.exitCode == 0),
                 state: {terminated: (terminated($r; $started) + {containerID})}}]} end)
    + (if $failed and ($failed.message // "") != "" then {message: $failed.message} else {} end))}
