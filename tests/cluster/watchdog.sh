#!/usr/bin/env bash
# Stops cluster DIR once process OWNER_PID is gone, so tests that die never
# leak clusters. Started by start.sh --owner-pid. With --clean (start.sh
# --owner-clean) it deletes DIR too, unless DIR/keep exists: a test that
# failed keeps its logs there.
#
#   tests/cluster/watchdog.sh DIR OWNER_PID [--clean]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$1
OWNER=$2
CLEAN=${3:-}

while kill -0 "$OWNER" 2>/dev/null; do sleep 1; done
echo "$(date '+%F %T') owner $OWNER is gone; stopping $DIR"
# stop.sh ends this watchdog's process group: run it in a session of its own.
if [[ $CLEAN == --clean ]]; then
  # shellcheck disable=SC2016  # expanded by that bash
  exec setsid bash -c '"$1" "$2" && { [[ -e $2/keep ]] || "$1" --clean "$2"; }' stop "$HERE/stop.sh" "$DIR"
fi
exec setsid "$HERE/stop.sh" "$DIR"
