# shellcheck shell=bash
# Kubernetes Events from hooks, about the hook's object. Source it relative to the hook:
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib/events.sh"
#
#   event_normal REASON MESSAGE [--object KIND/NS/NAME]
#   event_warning REASON MESSAGE [--object KIND/NS/NAME]
#   event_post TYPE REASON MESSAGE [--object KIND/NS/NAME]     TYPE: Normal or Warning
#
# They run `operator event` (docs/HOOKS.md): the Event is about the object of
# $EVENT_FILE unless --object names another, posted with the runner's
# credentials. The same message about the same object again within 10 minutes
# counts on the existing Event (count, lastTimestamp) instead of adding one.
# Status: 0 posted, 1 the API server refused or could not be reached (the
# reason on stderr, which the runner logs), 2 a usage error. Posting is
# usually best effort: `event_warning NoNode "…" || true`.
#
# EVENTS_COMPONENT, when set, names the reporter (the Event's source, "From"
# in kubectl describe; default "operator"): set it once per hook directory.
# The runner gives hooks its own binary as OPERATOR_BIN; elsewhere `operator`
# is looked up on PATH.

event_post() {
  "${OPERATOR_BIN:-operator}" event --type "${1:?usage: event_post TYPE REASON MESSAGE}" \
    --reason "${2:?usage: event_post TYPE REASON MESSAGE}" \
    --message "${3?usage: event_post TYPE REASON MESSAGE}" \
    ${EVENTS_COMPONENT:+--component "$EVENTS_COMPONENT"} "${@:4}"
}

event_normal() { event_post Normal "$@"; }
event_warning() { event_post Warning "$@"; }
