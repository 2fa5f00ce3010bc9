# shellcheck shell=bash
# Warning Events on the claim, so `kubectl describe pvc` says why it has no
# volume (or why its volume was not cleaned up).

# A name no other Event has: the claim's name (cut so the whole stays a valid
# name) and the time in nanoseconds plus a random number, in hex.
event_name() {
  printf '%s.%x%04x' "${CLAIM_NAME:0:200}" "$(date +%s%N)" "$RANDOM"
}

# event_warning REASON MESSAGE. The claim may already be gone (deleted hook):
# an Event can still point at it, it is only a record.
event_warning() {
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  jq -n --arg name "$(event_name)" --arg ns "$CLAIM_NS" --arg claim "$CLAIM_NAME" \
    --arg uid "$CLAIM_UID" --arg reason "$1" --arg message "${2:0:1000}" --arg now "$now" \
    --arg component "$MANAGED_BY" '{
      apiVersion: "v1", kind: "Event",
      metadata: {name: $name, namespace: $ns},
      involvedObject: {apiVersion: "v1", kind: "PersistentVolumeClaim",
                       name: $claim, namespace: $ns, uid: $uid},
      reason: $reason, message: $message, type: "Warning", count: 1,
      firstTimestamp: $now, lastTimestamp: $now,
      source: {component: $component}
    }' | kubectl create -f - >/dev/null
}
