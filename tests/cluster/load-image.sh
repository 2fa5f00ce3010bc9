#!/usr/bin/env bash
# Loads images into every real node of a running cluster (start.sh --real-nodes),
# as `kind load image-archive` does for kind's nodes.
#
#   tests/cluster/load-image.sh DIR ARCHIVE...
#
# ARCHIVE: a docker-archive or OCI archive, e.g. from
# `deploy/build-image.sh --archive FILE`. Pods name the image as it is tagged
# in the archive; nothing is pulled.
set -euo pipefail

DIR=${1:?usage: load-image.sh DIR ARCHIVE...}
shift
(($#)) || { echo "usage: load-image.sh DIR ARCHIVE..." >&2; exit 2; }
found=0
for sock in "$DIR"/real/*/containerd.sock; do
  [[ -S $sock ]] || continue
  found=1
  node=${sock%/containerd.sock}
  node=${node##*/}
  for archive; do
    out=$(ctr --address "$sock" -n k8s.io images import "$archive" 2>&1) \
      || { echo "load-image.sh: node $node: cannot load $archive: $out" >&2; exit 1; }
  done
done
((found)) || { echo "load-image.sh: $DIR has no running real node" >&2; exit 1; }
