# shellcheck shell=bash
# Logging for hooks, in the runner's line format: `YYYY-MM-DD HH:MM:SS LEVEL message`.
# Source it relative to the hook, never to the working directory:
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"
# Lines go to $LOG_FILE when the runner was given -l, else to stderr (which the
# runner captures into its own log). LOG_LEVEL is 0 DEBUG, 1 INFO, 2 WARNING, 3 ERROR.

_log() {
  local level=$1 rank=$2
  shift 2
  (( rank >= ${LOG_LEVEL:-1} )) || return 0
  local line
  printf -v line '%(%Y-%m-%d %H:%M:%S)T %s %s' -1 "$level" "$*"
  if [[ -n ${LOG_FILE:-} ]]; then
    printf '%s\n' "$line" >>"$LOG_FILE"
  else
    printf '%s\n' "$line" >&2
  fi
}

log_debug() { _log DEBUG 0 "$@"; }
log_info() { _log INFO 1 "$@"; }
log_warning() { _log WARNING 2 "$@"; }
log_error() { _log ERROR 3 "$@"; }
