# Input: a pod; $f: "containers" or "initContainers"; $i: index.
# Output: NUL-separated pairs: mountPath, then the hostPath directory behind
# it (with subPath) or "" for any other kind of volume.
(.spec.volumes // [] | map({key: .name, value: (.hostPath.path // "")}) | from_entries) as $host
| .spec[$f][$i].volumeMounts[]?
| .mountPath, "\u0000",
  (($host[.name] // "") as $h
   | if $h == "" then "" elif (.subPath // "") == "" then $h else $h + "/" + .subPath end),
  "\u0000"
