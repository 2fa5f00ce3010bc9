#!/usr/bin/env bash
# Builds the operator container image (deploy/Containerfile) with podman.
#
#   deploy/build-image.sh [--tag TAG] [--archive FILE] [--refresh] [--context-only DIR]
#
# --tag TAG       image name (default localhost/operator:VERSION, VERSION
#                 from Cargo.toml: the name deploy/*/kustomization.yaml uses)
# --archive FILE  also write the image to FILE (docker-archive), for
#                 `kind load image-archive FILE` or `docker load -i FILE`
# --refresh       rebuild the cached Debian root filesystem (new security
#                 updates) even if its inputs did not change
# --context-only DIR  lay out the build context in DIR (new or empty) and
#                 stop, for another builder: docker build -f deploy/Containerfile DIR
#
# Steps: installs podman, runc, mmdebstrap and uidmap with apt-get when
# missing; `cargo build --release --locked --bin operator` (CARGO_TARGET_DIR
# honoured); the root filesystem from Debian packages with mmdebstrap, cached
# in $IMAGE_CACHE (default /var/cache/operator-rs/image) under a key made of
# its inputs; the newest kubectl.1.N next to the kubectl on PATH (the Google
# Cloud SDK ships several; KUBECTL=PATH picks one); then `podman build`.
# IMAGE_SOURCE=URL sets the org.opencontainers.image.source label (default:
# git's origin). Prints the image name as its last line.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
IMAGE_CACHE=${IMAGE_CACHE:-/var/cache/operator-rs/image}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the image needs at run time, plus what dpkg needs to configure them
# (removed again below: BUILD_ONLY).
PACKAGES=(bash coreutils jq ca-certificates grep sed mawk findutils base-files base-passwd
  dash libc-bin dpkg diffutils perl-base)
# Needed only while packages are configured (dpkg, maintainer scripts, the
# certificate bundle's generation); the image runs without them.
BUILD_ONLY=(dpkg diffutils perl-base debconf libdebconfclient0 openssl libssl3 tar)
RUN_UID=65532

TAG=
ARCHIVE=
REFRESH=0
CONTEXT_ONLY=

# The comment at the top of this file.
usage() { awk 'NR > 1 && /^#/ && !/shellcheck/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0" >&2; exit 2; }
say() { echo "build-image: $*" >&2; }
fail() { say "$*"; exit 1; }

parse_args() {
  while (($#)); do
    case $1 in
      --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
      --archive) ARCHIVE=${2:?--archive needs a value}; shift 2 ;;
      --refresh) REFRESH=1; shift ;;
      --context-only) CONTEXT_ONLY=${2:?--context-only needs a directory}; shift 2 ;;
      -h | --help) usage ;;
      *) say "unknown argument $1"; usage ;;
    esac
  done
}

# The tools, from Debian, when missing (needs root, as apt-get does).
ensure_tools() {
  local missing=() tool
  for tool in podman:podman runc:runc mmdebstrap:mmdebstrap newuidmap:uidmap; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (apt-get)"
  ((EUID == 0)) || fail "need root to install ${missing[*]}; install them and run again"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; } \
    || fail "apt-get could not install ${missing[*]}"
}

# podman as it works on these machines (crun refuses; no systemd).
podman_() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }

cargo_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1; }

build_operator() {
  say "cargo build --release --locked --bin operator"
  (cd "$REPO" && cargo build --release --locked --bin operator) >&2 || fail "cargo build failed"
  OPERATOR=${CARGO_TARGET_DIR:-$REPO/target}/release/operator
  [[ -x $OPERATOR ]] || fail "no binary at $OPERATOR (is CARGO_TARGET_DIR relative?)"
}

# The newest kubectl.1.N beside the kubectl on PATH, else that kubectl itself.
find_kubectl() {
  if [[ -n ${KUBECTL:-} ]]; then
    [[ -x $KUBECTL ]] || fail "KUBECTL=$KUBECTL is not an executable"
  else
    local on_path dir
    on_path=$(command -v kubectl) || fail "no kubectl on PATH (set KUBECTL=/path/to/kubectl)"
    dir=$(dirname "$(readlink -f "$on_path")")
    KUBECTL=$(find "$dir" -maxdepth 1 -name 'kubectl.1.*' -type f -perm -u+x | sort -V | tail -n 1)
    [[ -n $KUBECTL ]] || KUBECTL=$(readlink -f "$on_path")
  fi
  # A wrapper script or a dynamically linked build would not run in the image.
  [[ $(head -c 4 "$KUBECTL" | od -An -c | tr -d ' ') == '177ELF' ]] || fail "$KUBECTL is not a program (a wrapper script?)"
  if ldd "$KUBECTL" >/dev/null 2>&1; then fail "$KUBECTL is dynamically linked: the image needs a static kubectl"; fi
  KUBECTL_VERSION=$("$KUBECTL" version --client -o json | jq -r .clientVersion.gitVersion) \
    || fail "$KUBECTL does not run"
}

# Everything that decides the root filesystem's content, hashed: the cache key.
rootfs_key() {
  {
    printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "${PACKAGES[*]}" "${BUILD_ONLY[*]}" "$RUN_UID"
    declare -f make_rootfs
    cat "$HERE/rootfs-customize.sh"
  } | sha256sum | cut -c1-16
}

make_rootfs() {
  local out=$1 include
  include=$(IFS=,; echo "${PACKAGES[*]}")
  mmdebstrap --variant=custom --format=tar --include="$include" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/lib/*/gconv/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="$(printf '%q ' "$HERE/rootfs-customize.sh")\"\$1\" $RUN_UID ${BUILD_ONLY[*]}" \
    "$DEBIAN_SUITE" "$out" "$DEBIAN_MIRROR"
}

cached_rootfs() {
  local key
  key=$(rootfs_key)
  ROOTFS=$IMAGE_CACHE/rootfs-$DEBIAN_SUITE-$key.tar
  if [[ -s $ROOTFS ]] && ((!REFRESH)); then
    say "root filesystem from the cache: $ROOTFS"
    return 0
  fi
  mkdir -p "$IMAGE_CACHE"
  say "building the root filesystem with mmdebstrap ($DEBIAN_SUITE: ${PACKAGES[*]})"
  # Per-process names: two builds at once each make their own, the last rename wins.
  local tmp=$ROOTFS.$$.tmp log=$IMAGE_CACHE/mmdebstrap.$$.log
  make_rootfs "$tmp" >"$log" 2>&1 || { tail -n 30 "$log" >&2; rm -f "$tmp"; fail "mmdebstrap failed (log: $log)"; }
  mv "$tmp" "$ROOTFS"
  mv "$log" "$IMAGE_CACHE/mmdebstrap.log"
}

revision() {
  local rev
  rev=$(git -C "$REPO" rev-parse HEAD 2>/dev/null) || { echo unknown; return; }
  [[ -z $(git -C "$REPO" status --porcelain 2>/dev/null) ]] || rev+=-dirty
  echo "$rev"
}

# IMAGE_SOURCE, else the clone's origin, else Cargo.toml's repository, else
# the directory it was built from.
source_url() {
  local url=${IMAGE_SOURCE:-}
  [[ -n $url ]] || url=$(git -C "$REPO" remote get-url origin 2>/dev/null) || url=
  [[ -n $url ]] || url=$(sed -n 's/^repository = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)
  echo "${url:-file://$REPO}"
}

# The build context: hard links where possible, so nothing big is copied.
make_context() {
  if [[ -n $CONTEXT_ONLY ]]; then
    mkdir -p "$CONTEXT_ONLY"
    [[ -z $(ls -A "$CONTEXT_ONLY") ]] || fail "$CONTEXT_ONLY is not empty"
    CONTEXT=$CONTEXT_ONLY
  else
    CONTEXT=$(mktemp -d "${TMPDIR:-/tmp}/operator-image.XXXXXX")
    trap 'rm -rf "$CONTEXT"' EXIT
  fi
  ln "$ROOTFS" "$CONTEXT/rootfs.tar" 2>/dev/null || cp "$ROOTFS" "$CONTEXT/rootfs.tar"
  cp "$KUBECTL" "$CONTEXT/kubectl"
  cp "$OPERATOR" "$CONTEXT/operator"
  # The release profile keeps the symbol table (2-3 MB); panics still name
  # the panicking line without it.
  if command -v strip >/dev/null; then
    strip "$CONTEXT/operator"
  else
    say "no strip (binutils): the operator binary keeps its symbol table"
  fi
  cp -r "$REPO/hooks" "$CONTEXT/hooks"
}

main() {
  parse_args "$@"
  local version
  version=$(cargo_version)
  [[ -n $version ]] || fail "no version in Cargo.toml"
  TAG=${TAG:-localhost/operator:$version}
  ensure_tools
  build_operator
  find_kubectl
  cached_rootfs
  make_context
  if [[ -n $CONTEXT_ONLY ]]; then
    say "build context in $CONTEXT_ONLY; build args VERSION=$version REVISION=$(revision) SOURCE=$(source_url) KUBECTL_VERSION=$KUBECTL_VERSION"
    echo "$CONTEXT_ONLY"
    return 0
  fi
  say "podman build -t $TAG (kubectl $KUBECTL_VERSION)"
  local build_args=() arg flags=()
  build_args=(VERSION="$version" REVISION="$(revision)" SOURCE="$(source_url)" KUBECTL_VERSION="$KUBECTL_VERSION")
  # The same values twice: as build args for the Containerfile's LABEL (what
  # docker build uses), and as --label, because buildah's layer cache keeps a
  # LABEL layer whose build args changed.
  for arg in "${build_args[@]}"; do flags+=(--build-arg "$arg"); done
  flags+=(--label "org.opencontainers.image.version=$version"
    --label "org.opencontainers.image.revision=$(revision)"
    --label "org.opencontainers.image.source=$(source_url)"
    --label "io.github.operator-rs.kubectl.version=$KUBECTL_VERSION")
  local before after
  before=$(podman_ image inspect -f '{{.Id}}' "$TAG" 2>/dev/null) || before=
  podman_ build --quiet --format oci -f "$HERE/Containerfile" -t "$TAG" "${flags[@]}" "$CONTEXT" >&2 \
    || fail "podman build failed"
  after=$(podman_ image inspect -f '{{.Id}}' "$TAG")
  # The image this one replaced under the tag, unless something else uses it:
  # repeated builds (CI) would otherwise pile up.
  if [[ -n $before && $before != "$after" ]]; then
    podman_ rmi "$before" >/dev/null 2>&1 || true
  fi
  if [[ -n $ARCHIVE ]]; then
    rm -f "$ARCHIVE"
    podman_ save --format docker-archive -o "$ARCHIVE" "$TAG" >&2 || fail "podman save failed"
    say "wrote $ARCHIVE"
  fi
  echo "$TAG"
}

main "$@"
