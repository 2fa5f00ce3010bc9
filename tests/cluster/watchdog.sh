#!/usr/bin/env bash
# Stops cluster DIR once process OWNER_PID is gone, so tests that die never
# leak clusters. Started by start.sh --owner-pid.
#
#   tests/cluster/watchdog.sh DIR OWNER_PID
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$1
OWNER=$2

while kill -0 "$OWNER" 2>/dev/null; do sleep 1; done
echo "$(date '+%F %T') owner $OWNER is gone; stopping $DIR"
# stop.sh ends this watchdog's process group: run it in a session of its own.
exec setsid "$HERE/stop.sh" "$DIR"
