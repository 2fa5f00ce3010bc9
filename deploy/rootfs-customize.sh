#!/usr/bin/env bash
# mmdebstrap's customize hook for the image's root filesystem (run by
# build-image.sh, never by hand):
#
#   rootfs-customize.sh DIR UID PACKAGE...
#
# Removes PACKAGEs (those only needed while packages are configured: dpkg,
# perl, openssl, ...), drops what no program reads (apt's lists, logs)
# and adds the user and group `nonroot` with id UID, home /tmp. The dpkg
# database stays, listing exactly what is left, for image scanners.
set -euo pipefail

dir=${1:?root filesystem directory}
uid=${2:?user id}
shift 2
# dpkg itself needs these to run, so they cannot be purged with dpkg.
by_hand=(dpkg tar diffutils)

purge_with_dpkg() {
  local pkgs=() p
  for p in "$@"; do [[ " ${by_hand[*]} " == *" $p "* ]] || pkgs+=("$p"); done
  chroot "$dir" dpkg --purge --force-remove-essential --force-depends "${pkgs[@]}" >/dev/null
}

# remove_by_hand PKG: its files (from dpkg's list), its info files and its
# stanza in the status file.
remove_by_hand() {
  local pkg=$1 info=$dir/var/lib/dpkg/info list f lists
  shopt -s nullglob
  lists=("$info/$pkg.list" "$info/$pkg:"*.list)
  shopt -u nullglob
  list=${lists[0]}
  [[ -f $list ]] || return 0
  while IFS= read -r f; do
    [[ -d $dir$f && ! -L $dir$f ]] || rm -f "$dir$f"
  done <"$list"
  rm -f "$info/$pkg".* "$info/$pkg:"*
  awk -v pkg="$pkg" 'BEGIN { RS = ""; ORS = "\n\n" } $0 !~ ("(^|\n)Package: " pkg "\n")' \
    "$dir/var/lib/dpkg/status" >"$dir/var/lib/dpkg/status.new"
  mv "$dir/var/lib/dpkg/status.new" "$dir/var/lib/dpkg/status"
}

purge_with_dpkg "$@"
for p in "${by_hand[@]}"; do
  [[ " $* " == *" $p "* ]] && remove_by_hand "$p"
done
rm -rf "$dir"/var/cache/* "$dir"/var/lib/apt "$dir"/var/log/* \
  "$dir"/usr/share/man "$dir"/usr/share/info "$dir"/usr/share/locale "$dir"/usr/share/lintian \
  "$dir"/var/lib/dpkg/*-old "$dir"/etc/*-
echo "nonroot:x:$uid:$uid:nonroot:/tmp:/usr/sbin/nologin" >>"$dir/etc/passwd"
echo "nonroot:x:$uid:" >>"$dir/etc/group"
