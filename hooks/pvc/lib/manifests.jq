# The objects the snapshot creates, built from checked values only (lib/decide.jq),
# never from text: every value is a JSON string in its field.
# $s: the settings {jobns, image, mode, dir, managed, uidkey, hostkey, class, ttl}.

# A claim's label on the mkdir Job that serves it: `kubectl get job -l` finds the Job
# (the deleted hook waits for it). The uid is checked, so the key is a valid name.
def claim_label($c): "operator-pvc/claim-\($c.uid)";

# One Job on $node making every claim's directory: `mkdir -m MODE -p -- PATH...` as an
# argv, with VOLUMES_DIR mounted at the same path, so each PV's path is the one made.
# MODE (VOLUME_MODE, 0777 by default, as local-path-provisioner): any user of the pod
# that mounts it can write, whatever its uid (hooks/pvc/README.md, "Directory mode").
# The annotation operator-pvc/claims says whom it serves (uid, namespace, name, path):
# a later run finds a claim there and waits for this Job instead of starting another.
def mkdir_job($s; $name; $node; $claims):
  {"app.kubernetes.io/managed-by": $s.managed, "app.kubernetes.io/component": "mkdir"} as $labels
  | {apiVersion: "batch/v1", kind: "Job",
     metadata: {name: $name, namespace: $s.jobns,
       labels: ($labels + ($claims | map({key: claim_label(.), value: "true"}) | from_entries)),
       annotations: {"operator-pvc/claims":
         ($claims | map({uid, namespace: .ns, name, path}) | tojson)}},
     spec: {backoffLimit: 0, ttlSecondsAfterFinished: $s.ttl,
       template: {metadata: {labels: $labels},
         spec: {nodeName: $node, restartPolicy: "Never",
           tolerations: [{operator: "Exists"}],
           containers: [{name: "mkdir", image: $s.image, imagePullPolicy: "IfNotPresent",
                         command: (["mkdir", "-m", $s.mode, "-p", "--"] + ($claims | map(.path))),
                         volumeMounts: [{name: "volumes", mountPath: $s.dir}]}],
           volumes: [{name: "volumes", hostPath: {path: $s.dir, type: "DirectoryOrCreate"}}]}}}};

# The PersistentVolume of claim $c, bound to it (claimRef with uid), pinned to the
# node that holds its directory.
def pv($s; $c; $policy):
  {apiVersion: "v1", kind: "PersistentVolume",
   metadata: {name: "pvc-\($c.uid)",
     labels: ({"app.kubernetes.io/managed-by": $s.managed, ($s.uidkey): $c.uid}
              + (if ($c.node | length) <= 63 then {($s.hostkey): $c.node} else {} end)),
     annotations: {"operator-pvc/claim": "\($c.ns)/\($c.name)"}},
   spec: {capacity: {storage: $c.size}, accessModes: $c.modes, volumeMode: $c.mode,
     storageClassName: $s.class, persistentVolumeReclaimPolicy: $policy,
     local: {path: $c.path},
     claimRef: {apiVersion: "v1", kind: "PersistentVolumeClaim",
                namespace: $c.ns, name: $c.name, uid: $c.uid},
     nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [
       {key: $s.hostkey, operator: "In", values: [$c.node]}]}]}}}};

def list(items): {apiVersion: "v1", kind: "List", items: [items]};
