#!/usr/bin/env bash
# Builds the two images every real node holds, from Debian's busybox-static,
# without any registry: docker-archive tarballs that `ctr images import` loads.
#
#   tests/cluster/images.sh        prints two lines: NAME PATH (tools, then pause)
#
# tools  docker.io/library/busybox:1.35.0  busybox 1.35.0 (sh, coreutils, mkdir,
#        rm, ...), CMD sh: the image hooks/pvc's Jobs and the demo pods use. It
#        carries the upstream name of the same busybox release so that one pinned
#        default (JOB_IMAGE) works here, where it is loaded, and on kind or a real
#        cluster, where IfNotPresent pulls the upstream image once.
# pause  localhost/operator-rs/pause:1.35.0  busybox sleeping forever: containerd's
#        sandbox_image (the upstream pause image cannot be pulled here).
#
# Cached in $NODE_IMAGE_CACHE (default /var/cache/operator-rs/node-images/KEY/),
# KEY = hash of this script and the busybox-static package version, so a new
# Debian busybox or a change here builds them again; otherwise they are reused.
set -euo pipefail

CACHE_ROOT=${NODE_IMAGE_CACHE:-/var/cache/operator-rs/node-images}
TOOLS_IMAGE=docker.io/library/busybox:1.35.0
PAUSE_IMAGE=localhost/operator-rs/pause:1.35.0
BUSYBOX=/bin/busybox

die() { echo "images.sh: $*" >&2; exit 1; }

cache_key() {
  local version
  version=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null) \
    || die "busybox-static is not installed (apt-get install busybox-static)"
  # The tools image carries upstream's name for this release: it must be that release.
  [[ ${version#*:} == "${TOOLS_IMAGE##*:}"-* ]] \
    || die "busybox-static is $version, not ${TOOLS_IMAGE##*:}: change TOOLS_IMAGE here and JOB_IMAGE in hooks/pvc"
  { cat "${BASH_SOURCE[0]}"; echo "$version"; } | sha256sum | cut -c1-16
}

# rootfs DIR: busybox with one symlink per applet, /etc/passwd and /etc/group
# (root, nobody) and a world-writable /tmp.
rootfs() {
  local d=$1 applet
  mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root"
  cp "$BUSYBOX" "$d/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$d/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
  chmod 1777 "$d/tmp"
}

# archive OUT NAME CMD_JSON ROOTFS: a docker-archive (docker save's layout) of one
# reproducible layer: fixed mtimes, owners and order.
archive() {
  local out=$1 name=$2 cmd=$3 root=$4 work layer_sha config config_sha
  work=$(mktemp -d)
  tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -cf "$work/layer.tar" .
  layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  mkdir "$work/$layer_sha"
  mv "$work/layer.tar" "$work/$layer_sha/layer.tar"
  config=$(jq -cn --arg diff "sha256:$layer_sha" --argjson cmd "$cmd" '{
    architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
    config: {Env: ["PATH=/bin"], Cmd: $cmd, WorkingDir: "/"},
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "tests/cluster/images.sh (busybox-static)"}]}')
  config_sha=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  printf '%s' "$config" >"$work/$config_sha.json"
  jq -cn --arg c "$config_sha.json" --arg n "$name" --arg l "$layer_sha/layer.tar" \
    '[{Config: $c, RepoTags: [$n], Layers: [$l]}]' >"$work/manifest.json"
  tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.new" .
  mv "$out.new" "$out"
  rm -rf "$work"
}

main() {
  { [[ -x $BUSYBOX ]] && "$BUSYBOX" --list >/dev/null 2>&1; } || die "no static busybox at $BUSYBOX (apt-get install busybox-static)"
  local dir root
  dir=$CACHE_ROOT/$(cache_key)
  if [[ ! -f $dir/tools.tar || ! -f $dir/pause.tar ]]; then
    mkdir -p "$dir"
    root=$(mktemp -d)
    rootfs "$root"
    archive "$dir/tools.tar" "$TOOLS_IMAGE" '["sh"]' "$root"
    # PID 1 of a sandbox only holds the pod's namespaces; containerd kills it with SIGKILL.
    archive "$dir/pause.tar" "$PAUSE_IMAGE" '["sleep", "2147483647"]' "$root"
    rm -rf "$root"
  fi
  echo "$TOOLS_IMAGE $dir/tools.tar"
  echo "$PAUSE_IMAGE $dir/pause.tar"
}

main "$@"
