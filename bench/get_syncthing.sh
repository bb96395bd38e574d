#!/usr/bin/env bash
# Fetches Debian's syncthing 1.29.5 package (from trixie; this machine's apt sources are
# bookworm, which has 1.19.2) and unpacks it under bench/tools/syncthing-1.29.5/ for
# bench/sync.sh's syncthing-1.29 anchors. Prints the binary's path on stdout, nothing else.
#
#   bench/get_syncthing.sh        fetch and unpack (skipped when already unpacked)
#
# Nothing is installed: apt runs with a configuration of its own (its own sources list,
# an empty dpkg status, state and cache in a temporary directory), only to download and
# check the .deb (signed Release file, the index's SHA256), which `dpkg-deb -x` then
# unpacks into the directory above. The system's apt lists, cache and syncthing package
# are not touched. Works as root or as any user with network access to the mirror.
#
# Settings: BENCH_TOOLS_DIR (default bench/tools), BENCH_ST_SUITE (default trixie),
# BENCH_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_NAME=get_syncthing
# shellcheck source=bench/debian_syncthing.sh
. bench/debian_syncthing.sh
DEST=$TOOLS_DIR/syncthing-$VERSION
BIN=$DEST/usr/bin/syncthing

if [ -e "$DEST/.complete" ] && [ -x "$BIN" ] && is_version "$BIN"; then
  echo "$BIN"
  exit 0
fi

need_debian_tools dpkg  # apt and dpkg only

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-get-syncthing.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/deb"
private_apt "$TMP" 0
private_apt_writable "$TMP/deb"

log "reading the $SUITE index from $MIRROR (private apt state in $TMP)..."
apt-get "${APT[@]}" -qq update >"$TMP/update.log" 2>&1 || {
  cat "$TMP/update.log" >&2
  fail "apt-get update of $SUITE failed"
}
# The Debian version whose upstream part is $VERSION (e.g. 1.29.5~ds1-2), the newest if several.
DEBVER=$(apt-cache "${APT[@]}" madison syncthing | awk -F'|' '{gsub(/ /, "", $2); print $2}' |
  grep -E "^([0-9]+:)?${VERSION//./\\.}([~+-]|$)" | head -n1 || true)
if [ -z "$DEBVER" ]; then
  log "syncthing versions in $SUITE:"
  apt-cache "${APT[@]}" madison syncthing >&2 || true
  fail "no syncthing $VERSION in $SUITE (set BENCH_ST_SUITE to a suite that has it)"
fi
log "downloading syncthing $DEBVER ($ARCH)..."
(cd "$TMP/deb" && apt-get "${APT[@]}" -qq download "syncthing=$DEBVER") >"$TMP/download.log" 2>&1 || {
  cat "$TMP/download.log" >&2
  fail "apt-get download syncthing=$DEBVER failed"
}
DEB=$(find "$TMP/deb" -maxdepth 1 -name 'syncthing_*.deb' -print -quit)
[ -n "$DEB" ] || fail "apt-get download left no .deb in $TMP/deb"
pkg=$(dpkg-deb -f "$DEB" Package)
ver=$(dpkg-deb -f "$DEB" Version)
arch=$(dpkg-deb -f "$DEB" Architecture)
if [ "$pkg" != syncthing ] || [ "$ver" != "$DEBVER" ] || [ "$arch" != "$ARCH" ]; then
  fail "$DEB is '$pkg $ver $arch', expected 'syncthing $DEBVER $ARCH'"
fi

mkdir -p "$TOOLS_DIR"
rm -rf "$DEST.tmp"
dpkg-deb -x "$DEB" "$DEST.tmp"
is_version "$DEST.tmp/usr/bin/syncthing" ||
  fail "the unpacked binary does not run or is not v$VERSION: $("$DEST.tmp/usr/bin/syncthing" --version 2>&1 | head -n1)"
{
  echo "package: syncthing $DEBVER $ARCH from $MIRROR $SUITE"
  echo "sha256: $(sha256sum "$DEB" | cut -d' ' -f1)"
  echo "binary: $("$DEST.tmp/usr/bin/syncthing" --version)"
} >"$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "unpacked to ${DEST#"$PWD"/}"
echo "$BIN"
