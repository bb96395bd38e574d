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
VERSION=1.29.5
SUITE=${BENCH_ST_SUITE:-trixie}
MIRROR=${BENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
TOOLS_DIR=${BENCH_TOOLS_DIR:-$PWD/bench/tools}
case $TOOLS_DIR in /*) ;; *) TOOLS_DIR=$PWD/$TOOLS_DIR ;; esac
DEST=$TOOLS_DIR/syncthing-$VERSION
BIN=$DEST/usr/bin/syncthing

log() { printf 'get_syncthing: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# is_version BINARY: it runs and says it is $VERSION.
is_version() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  case $out in "syncthing v$VERSION "*) return 0 ;; *) return 1 ;; esac
}

if [ -e "$DEST/.complete" ] && [ -x "$BIN" ] && is_version "$BIN"; then
  echo "$BIN"
  exit 0
fi

for c in apt-get apt-cache dpkg-deb dpkg; do
  command -v "$c" >/dev/null || fail "'$c' is required (a Debian or Ubuntu system)"
done
[ -r "$KEYRING" ] || fail "$KEYRING not found (package debian-archive-keyring)"
ARCH=$(dpkg --print-architecture)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-get-syncthing.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/state/lists/partial" "$TMP/cache/archives/partial" "$TMP/deb"
: >"$TMP/state/status"
echo "deb [arch=$ARCH signed-by=$KEYRING target=Packages] $MIRROR $SUITE main" >"$TMP/sources.list"
APT=(
  -o "Dir::Etc::SourceList=$TMP/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State=$TMP/state"
  -o "Dir::State::status=$TMP/state/status"
  -o "Dir::Cache=$TMP/cache"
  -o "Acquire::Languages=none"
)
# As root, apt downloads as the user _apt: let it write where the .deb goes.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
  chmod 755 "$TMP"
  chown _apt "$TMP/deb"
fi

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
