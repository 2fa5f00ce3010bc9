# What to do next with a pod: delete | schedule | start | finish | none.
# $run: seconds a run-to-completion pod runs; $keep: the keep-running annotation.
def stage($run; $keep):
  if .metadata.deletionTimestamp then "delete"
  elif (.status.phase == "Succeeded" or .status.phase == "Failed") then "none"
  elif (.spec.nodeName // "") == "" then "schedule"
  elif .status.phase != "Running" then "start"
  elif (.spec.restartPolicy // "Always") == "Always" then "none"
  elif (.metadata.annotations[$keep] // "") == "true" then "none"
  elif (now - (.status.startTime // "1970-01-01T00:00:00Z" | fromdateiso8601)) >= $run
    then "finish"
  else "none" end;
