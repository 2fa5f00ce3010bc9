# Input: a pod. Output: its containers, init containers first, as
# NUL-terminated fields: kind (init|main), name, workingDir, argc, argv...,
# mount count, then per mount its mountPath and the hostPath directory behind
# it (with subPath), or "" for any other kind of volume.
(.spec.volumes // [] | map({key: .name, value: (.hostPath.path // "")}) | from_entries) as $host
| ((.spec.initContainers // [] | map({kind: "init"} + .))
   + (.spec.containers | map({kind: "main"} + .)))[]
| ((.command // []) + (.args // [])) as $argv
| [.volumeMounts[]? | .mountPath,
    (($host[.name] // "") as $h
     | if $h == "" then "" elif (.subPath // "") == "" then $h else $h + "/" + .subPath end)] as $mounts
| ([.kind, .name, (.workingDir // "/"), ($argv | length | tostring)] + $argv
   + [($mounts | length / 2 | tostring)] + $mounts)[]
| . + "\u0000"
