#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, and for real nodes kubelet,
# kube-scheduler and kube-proxy, 1.20.2 from Debian bookworm's source package
# into a cache outside the repository, once.
# Re-used when present and matching this script's recipe; rebuilt otherwise.
set -euo pipefail

CACHE_DIR=${KUBE_CACHE_DIR:-/var/cache/operator-rs/kube}
# Bump when the recipe below changes so stale caches are rebuilt.
RECIPE=4
STAMP="$CACHE_DIR/recipe-$RECIPE"
BINARIES=(kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy)

log() { printf '%s build.sh: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }

cached() {
  [[ -f $STAMP ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x $CACHE_DIR/bin/$b ]] || return 1; done
}

install_packages() {
  local want=(golang-go rsync make dpkg-dev etcd-server golang-github-modern-go-reflect2-dev openssl jq curl)
  local missing=()
  local p
  for p in "${want[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

enable_sources() {
  local list=/etc/apt/sources.list.d/operator-rs-src.sources
  [[ -f $list ]] && return 0
  cat >"$list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
}

fetch_source() {
  local work=$1
  # Quiet first; on failure run again to show apt's error.
  if ! (cd "$work" && apt-get source -qq --download-only kubernetes >/dev/null 2>&1); then
    (cd "$work" && apt-get source -qq --download-only kubernetes)
  fi
  (cd "$work" && dpkg-source --no-check -x ./kubernetes_*.dsc src >/dev/null)
}

# The vendored reflect2 1.0.1 faults under Go >= 1.18; Debian ships 1.0.2.
patch_reflect2() {
  local tree=$1
  local vend="$tree/vendor/github.com/modern-go/reflect2"
  local deb=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -d $deb ]] || { log "no $deb"; return 1; }
  rm -f "$vend"/*.go "$vend"/*.s
  cp "$deb"/*.go "$vend"/
  cp "$deb"/*.s "$vend"/ 2>/dev/null || true
  rm -f "$vend"/*_test.go
}

build() {
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/kube-build.XXXXXX")
  log "building into $CACHE_DIR (work dir $work; about 10 minutes)"
  enable_sources
  fetch_source "$work"
  patch_reflect2 "$work/src"
  (cd "$work/src" && GO111MODULE=off GOPROXY=off GOFLAGS=-mod=vendor \
     make WHAT="${BINARIES[*]/#/cmd/}" >"$work/make.log" 2>&1) \
    || { tail -40 "$work/make.log" >&2; return 1; }
  mkdir -p "$CACHE_DIR/bin"
  local b
  for b in "${BINARIES[@]}"; do
    cp "$work/src/_output/local/bin/linux/amd64/$b" "$CACHE_DIR/bin/$b.new"
    mv "$CACHE_DIR/bin/$b.new" "$CACHE_DIR/bin/$b"
  done
  rm -f "$CACHE_DIR"/recipe-*
  touch "$STAMP"
  rm -rf "$work"
  log "built"
}

main() {
  install_packages
  if cached; then
    log "using cached binaries in $CACHE_DIR/bin"
  else
    build
  fi
  echo "$CACHE_DIR/bin"
}

main "$@"
