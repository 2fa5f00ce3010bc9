# shellcheck shell=bash
# shellcheck disable=SC2034  # globals set here are read by the other libraries
# Settings of the pvc hooks, all from the environment (documented in
# hooks/pvc/README.md). Checked before the hooks touch the cluster, so a bad
# value is one clear ERROR instead of a half-made volume.

STORAGE_CLASS=${STORAGE_CLASS:-local-storage}
VOLUMES_DIR=${VOLUMES_DIR:-/mnt/local-volumes}
JOB_TIMEOUT=${JOB_TIMEOUT:-60s}
RECLAIM_POLICY=${RECLAIM_POLICY:-}
# Pinned (a tag other than latest, pulled only if the node lacks it): the image
# tests/cluster's real nodes hold, and the same busybox release upstream.
JOB_IMAGE=${JOB_IMAGE:-busybox:1.35.0}
# As local-path-provisioner: any uid in the pod can write (README.md, "Directory mode").
VOLUME_MODE=${VOLUME_MODE:-0777}
# A fixed namespace rather than the claim's: a terminating namespace refuses
# new Jobs (so cleanup would never run), and hostPath pods should not need to
# be allowed in every tenant namespace.
JOB_NAMESPACE=${JOB_NAMESPACE:-default}

# The hook deletes finished Jobs itself; the TTL catches any it could not.
JOB_TTL_SECONDS=600
# Marks what the hooks create, so they only ever change their own objects.
MANAGED_BY=operator-pvc
# The reporter of the hooks' Events (../lib/events.sh: operator event).
EVENTS_COMPONENT=$MANAGED_BY
UID_LABEL=operator-pvc/claim-uid
HOSTNAME_KEY=kubernetes.io/hostname

# JOB_TIMEOUT as seconds: accepts 90, 90s, 2m or 1h.
timeout_seconds() {
  [[ $JOB_TIMEOUT =~ ^([0-9]{1,6})(s|m|h)?$ ]] || return 1
  local n=$((10#${BASH_REMATCH[1]}))
  case ${BASH_REMATCH[2]} in
    m) n=$((n * 60)) ;;
    h) n=$((n * 3600)) ;;
  esac
  ((n > 0)) && printf '%s\n' "$n"
}

# An absolute, normalised path (no //, . or .. components), not / itself: it
# is both the hostPath mounted into Jobs and the prefix of every volume path.
volumes_dir_ok() {
  [[ $VOLUMES_DIR =~ ^(/[A-Za-z0-9._-]+)+$ ]] || return 1
  [[ /$VOLUMES_DIR/ != */./* && /$VOLUMES_DIR/ != */../* ]]
}

# Prints what is wrong with the settings (nothing when all is well).
config_problems() {
  [[ -n $STORAGE_CLASS ]] || echo "STORAGE_CLASS is empty"
  volumes_dir_ok || echo "VOLUMES_DIR must be an absolute path without . or .. components, got '$VOLUMES_DIR'"
  timeout_seconds >/dev/null || echo "JOB_TIMEOUT must be like 60, 60s, 2m or 1h, got '$JOB_TIMEOUT'"
  [[ $RECLAIM_POLICY =~ ^(|Delete|Retain)$ ]] || echo "RECLAIM_POLICY must be Delete or Retain, got '$RECLAIM_POLICY'"
  [[ $JOB_IMAGE =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || echo "JOB_IMAGE is not an image reference: '$JOB_IMAGE'"
  [[ $VOLUME_MODE =~ ^0?[0-7]{3}$ ]] || echo "VOLUME_MODE must be an octal mode like 0777 or 0770, got '$VOLUME_MODE'"
  [[ $JOB_NAMESPACE =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || echo "JOB_NAMESPACE is not a namespace name: '$JOB_NAMESPACE'"
  return 0
}
