#!/usr/bin/env bash
# Builds syncthing 1.29.5 from Debian's source package (trixie) the way Debian does, but
# WITHOUT `-tags purego`, and installs it as bench/tools/syncthing-1.29.5-asm/usr/bin/syncthing
# for fair benchmarks. Prints the binary's path on stdout, nothing else.
#
#   bench/build_syncthing.sh      fetch, build and install (skipped when already built)
#
# Why: Debian's syncthing 1.29.5 (what bench/get_syncthing.sh unpacks) is built with
# `-tags 'noupgrade purego'`; purego drops the assembly of SHA-256 and AES in the Go
# modules it uses, so that binary hashes ~6x slower than any upstream or older Debian
# build ("Hashing performance is ~160 MB/s" in its log instead of ~900). This build keeps
# everything else of debian/rules: the same source (orig tarball + Debian's patches), the
# Go libraries of Debian's golang-*-dev packages in GOPATH mode (GO111MODULE=off,
# GOPROXY=off, GOTOOLCHAIN=local), Debian's Go toolchain (golang-any -> golang-1.24-go),
# `go install -trimpath`, the tag noupgrade, the same -ldflags -X (Version=v1.29.5,
# User/Host=debian, Stamp=the changelog date), cgo with dpkg-buildflags' hardening flags,
# the GUI assets generated from Debian's libjs-bootstrap and fonts-fork-awesome, and
# dh_strip's stripping. It works offline apart from the Debian mirror: no Go module proxy.
#
# Nothing is installed: apt runs with a configuration of its own (its own sources list
# with a deb and a deb-src line, an empty dpkg status, state and cache in a temporary
# directory) only to download and check (signed Release file, the indexes' SHA256) the
# source package and the Build-Depends' .debs (golang-*, libjs-bootstrap,
# fonts-fork-awesome and what they depend on, ~160 .debs, ~150 MB), which `dpkg-deb -x`
# unpacks into the temporary directory, where the build happens; it is removed on exit.
# The system's apt lists, cache, Go and syncthing package are not touched. Needs, on the
# host: apt-get, apt-cache, dpkg-deb, tar, xz, patch, and a C compiler (gcc) for cgo as
# Debian's build (CGO_ENABLED=0 in the environment builds without it, a deviation).
# It takes ~2 min on 2 cores (the go build ~1 min of that), under `nice -n 19` (BENCH_ST_NICE).
#
# Settings: BENCH_TOOLS_DIR (default bench/tools), BENCH_ST_SUITE (default trixie),
# BENCH_DEBIAN_MIRROR (default http://deb.debian.org/debian), BENCH_ST_JOBS (go -p,
# default the number of CPUs), BENCH_ST_NICE (default 19), BENCH_ST_KEEP_TMP=1 (keep the
# temporary directory, for debugging).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_NAME=build_syncthing
# shellcheck source=bench/debian_syncthing.sh
. bench/debian_syncthing.sh
DEST=$TOOLS_DIR/syncthing-$VERSION-asm
BIN=$DEST/usr/bin/syncthing
JOBS=${BENCH_ST_JOBS:-$(nproc 2>/dev/null || echo 2)}
NICE=${BENCH_ST_NICE:-19}
GOPKG=github.com/syncthing/syncthing
# Debian's tags were 'noupgrade purego'.
TAGS=noupgrade

if [ -e "$DEST/.complete" ] && [ -x "$BIN" ] && is_version "$BIN" &&
  grep -qx "tags: $TAGS" "$DEST/.complete"; then
  echo "$BIN"
  exit 0
fi

need_debian_tools tar xz patch
CGO=${CGO_ENABLED:-1}
if [ "$CGO" = 1 ] && ! command -v "${CC:-gcc}" >/dev/null; then
  fail "'${CC:-gcc}' is required for cgo, as in Debian's build (or set CGO_ENABLED=0)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-build-syncthing.XXXXXX")
if [ "${BENCH_ST_KEEP_TMP:-0}" = 1 ]; then
  trap 'log "kept $TMP"' EXIT
else
  # u+w first: go may leave read-only files behind (e.g. in GOPATH/pkg).
  trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
fi
mkdir -p "$TMP/debs" "$TMP/dl" "$TMP/root"
private_apt "$TMP" 1
private_apt_writable "$TMP/debs" "$TMP/dl"

# ---------------------------------------------------------------------------------------
# 1. The source package and its Build-Depends, downloaded with the private apt.
# ---------------------------------------------------------------------------------------
log "reading the $SUITE indexes from $MIRROR (private apt state in $TMP)..."
apt-get "${APT[@]}" -qq update >"$TMP/update.log" 2>&1 || {
  cat "$TMP/update.log" >&2
  fail "apt-get update of $SUITE failed"
}
# The source version whose upstream part is $VERSION (e.g. 1.29.5~ds1-2), the newest if several.
DEBVER=$(apt-cache "${APT[@]}" showsrc syncthing | sed -n 's/^Version: //p' | sort -u |
  grep -E "^([0-9]+:)?${VERSION//./\\.}([~+-]|$)" | sort -V -r | head -n1 || true)
[ -n "$DEBVER" ] || fail "no syncthing $VERSION source package in $SUITE"
log "downloading the source package syncthing $DEBVER..."
(cd "$TMP/dl" && apt-get "${APT[@]}" -qq source --download-only "syncthing=$DEBVER") \
  >"$TMP/source.log" 2>&1 || {
  cat "$TMP/source.log" >&2
  fail "apt-get source syncthing=$DEBVER failed"
}
ORIG=$(find "$TMP/dl" -maxdepth 1 -name 'syncthing_*.orig.tar.*' -print -quit)
DEBIAN=$(find "$TMP/dl" -maxdepth 1 -name 'syncthing_*.debian.tar.*' -print -quit)
{ [ -n "$ORIG" ] && [ -n "$DEBIAN" ]; } || fail "apt-get source left no orig/debian tarball in $TMP/dl"

# Build-Depends of that version: keep the Go toolchain and libraries (golang-*) and the GUI's
# web assets (libjs-*, fonts-*); the rest (debhelper, dh-golang, genxdr) is build machinery.
# apt's resolver (a simulated install against the empty status) gives their dependency
# closure, virtual packages resolved (e.g. golang-github-quic-go-quic-go-dev is provided by
# golang-github-lucas-clemente-quic-go-dev); of it, again only golang-*/libjs-*/fonts-* are
# kept (the others, libc6, ca-certificates and the like, are not needed to build).
BDEPS=$(apt-cache "${APT[@]}" showsrc syncthing |
  awk -v v="$DEBVER" '/^Package:/ { p = 0 } $0 == "Version: " v { p = 1 }
    p && /^Build-Depends:/ { sub(/^Build-Depends: /, ""); print; exit }' |
  tr ',' '\n' | sed 's/([^)]*)//g; s/\[[^]]*\]//g; s/<[^>]*>//g; s/|.*//; s/[[:space:]]//g' |
  grep -E '^(golang-|libjs-|fonts-)' || true)
[ -n "$BDEPS" ] || fail "could not read the Build-Depends of syncthing $DEBVER"
# shellcheck disable=SC2086 # word splitting of the package list is meant
apt-get "${APT[@]}" -s -q install --no-install-recommends $BDEPS >"$TMP/resolve.log" 2>&1 || {
  cat "$TMP/resolve.log" >&2
  fail "apt cannot resolve the build dependencies in $SUITE"
}
# "Inst NAME (VERSION SUITE [ARCH])" -> NAME=VERSION, the versions the resolver chose.
PKGS=$(awk '$1 == "Inst" { v = $3; sub(/^\(/, "", v); print $2 "=" v }' "$TMP/resolve.log" |
  grep -E '^(golang-|libjs-|fonts-)' | sort -u)
log "downloading $(echo "$PKGS" | wc -l) build-dependency .debs..."
# shellcheck disable=SC2086
(cd "$TMP/debs" && apt-get "${APT[@]}" -qq download $PKGS) >"$TMP/download.log" 2>&1 || {
  cat "$TMP/download.log" >&2
  fail "apt-get download of the build dependencies failed"
}
for deb in "$TMP"/debs/*.deb; do
  dpkg-deb -x "$deb" "$TMP/root"
done
R=$TMP/root
GO=$R/usr/bin/go # golang-go's symlink to ../lib/go-1.2x/bin/go
[ -x "$GO" ] || fail "no go binary in the unpacked golang-go (looked for $GO)"
GOROOT_DIR=$(cd "$(dirname "$(readlink -f "$GO")")/.." && pwd)

# ---------------------------------------------------------------------------------------
# 2. The source tree: orig tarball + debian/ + Debian's patches (dpkg-source -x by hand).
# ---------------------------------------------------------------------------------------
SRC=$TMP/src
mkdir -p "$SRC"
tar -xf "$ORIG" -C "$SRC" --strip-components=1
tar -xf "$DEBIAN" -C "$SRC"
if [ -f "$SRC/debian/patches/series" ]; then
  while read -r p opt; do
    case $p in '' | '#'*) continue ;; esac
    patch -d "$SRC" -s -f -N "${opt:--p1}" -i "debian/patches/$p" >&2 ||
      fail "Debian patch $p does not apply"
  done <"$SRC/debian/patches/series"
fi
# The Version -X of debian/rules: v + the upstream version up to its first non-[0-9.] char.
UPSTREAM=${DEBVER#*:}
UPSTREAM=${UPSTREAM%-*}
ST_VERSION=v$(printf '%s' "$UPSTREAM" | sed 's/[^0-9.].*//')
[ "$ST_VERSION" = "v$VERSION" ] || fail "version from $DEBVER is $ST_VERSION, expected v$VERSION"
# SOURCE_DATE_EPOCH as dpkg sets it: the date of the changelog's latest entry.
CHDATE=$(sed -n 's/^ -- .*>  //p' "$SRC/debian/changelog" | head -n1)
SOURCE_DATE_EPOCH=$(date -d "$CHDATE" +%s) || fail "cannot parse the changelog date '$CHDATE'"
export SOURCE_DATE_EPOCH

# ---------------------------------------------------------------------------------------
# 3. The GOPATH (dh-golang's dh_auto_configure + debian/rules' execute_after_dh_auto_configure).
# ---------------------------------------------------------------------------------------
B=$TMP/build
PKGDIR=$B/src/$GOPKG
mkdir -p "$PKGDIR"
# dh-golang copies only *.go/*.s/*.c/... and go.mod/go.sum, then debian/rules copies gui/,
# signingkey.pem and test data; the whole tree (less debian/) is the same for the build.
(cd "$SRC" && tar -cf - --exclude=./debian .) | tar -xf - -C "$PKGDIR"
# dh-golang's _link_contents: symlink the -dev packages' /usr/share/gocode/src into the
# GOPATH, merging directories that exist on both sides.
link_contents() { # SRCDIR DSTDIR
  local e base
  for e in "$1"/*.go; do [ -f "$e" ] && return 0; done
  for e in "$1"/*/; do
    [ -d "$e" ] || continue
    e=${e%/}
    base=${e##*/}
    if [ -d "$2/$base" ]; then
      link_contents "$e" "$2/$base"
    else
      ln -s "$e" "$2/$base"
    fi
  done
}
[ -d "$R/usr/share/gocode/src" ] || fail "the unpacked -dev packages have no usr/share/gocode/src"
link_contents "$R/usr/share/gocode/src" "$B/src"

export GOROOT=$GOROOT_DIR GOPATH=$B GOCACHE=$TMP/gocache GOTMPDIR="" GOENV=off GOFLAGS=""
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=$CGO
export PATH=$GOROOT/bin:$PATH
# dh-golang: CGO_{CFLAGS,...} from dpkg-buildflags (debian/rules: hardening=+all), without
# -ffat-lto-objects -flto=auto -fstack-protector-strong. This host's dpkg-buildflags (from
# dpkg-dev) is used when present; otherwise Go's defaults (-g -O2) stay (the cgo code is
# only the libc resolver/user lookups, nothing that the benchmarks time).
if command -v dpkg-buildflags >/dev/null; then
  for f in CFLAGS CPPFLAGS CXXFLAGS FFLAGS LDFLAGS; do
    v=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$f" |
      sed 's/ *-ffat-lto-objects//g; s/ *-flto=auto//g; s/ *-fstack-protector-strong//g')
    export "CGO_$f=$v"
  done
else
  log "no dpkg-buildflags (dpkg-dev): cgo uses Go's default C flags"
fi

# The GUI assets, as debian/rules: Debian's bootstrap and fork-awesome into gui/default/vendor,
# then script/genassets.go writes lib/api/auto/gui.files.go.
V=$PKGDIR/gui/default/vendor
mkdir -p "$V/bootstrap" "$V/fork-awesome"
cp -r "$R/usr/share/javascript/bootstrap/css" "$R/usr/share/javascript/bootstrap/js" "$V/bootstrap/"
cp --dereference -r "$R/usr/share/fonts-fork-awesome/css" "$R/usr/share/fonts-fork-awesome/fonts" \
  "$V/fork-awesome/"
log "generating the GUI assets..."
(cd "$PKGDIR" && nice -n "$NICE" go run script/genassets.go gui >lib/api/auto/gui.files.go.new) \
  >"$TMP/genassets.log" 2>&1 || {
  cat "$TMP/genassets.log" >&2
  fail "go run script/genassets.go failed"
}
mv "$PKGDIR/lib/api/auto/gui.files.go.new" "$PKGDIR/lib/api/auto/gui.files.go"
rm -rf "$V"

# ---------------------------------------------------------------------------------------
# 4. The build (dh_auto_build: go install -trimpath -v -p N -ldflags ... -tags ...), only
#    the syncthing command of Debian's target list, then dh_strip's strip.
# ---------------------------------------------------------------------------------------
LDFLAGS="-X $GOPKG/lib/build.Version=$ST_VERSION -X $GOPKG/lib/build.User=debian"
LDFLAGS+=" -X $GOPKG/lib/build.Host=debian -X $GOPKG/lib/build.Stamp=$SOURCE_DATE_EPOCH"
log "building $GOPKG/cmd/syncthing with $("$GO" version | cut -d' ' -f3), tags '$TAGS', go -p $JOBS, nice $NICE..."
start=$(date +%s)
(cd "$B" && nice -n "$NICE" go install -trimpath -v -p "$JOBS" -ldflags "$LDFLAGS" -tags "$TAGS" \
  "$GOPKG/cmd/syncthing") >"$TMP/build.log" 2>&1 || {
  tail -n 50 "$TMP/build.log" >&2
  fail "go install failed"
}
log "built in $(($(date +%s) - start)) s"
OUT=$B/bin/syncthing
[ -x "$OUT" ] || fail "go install left no $OUT"
if command -v strip >/dev/null; then
  strip --remove-section=.comment --remove-section=.note "$OUT"
else
  log "no strip (binutils): the binary keeps its symbols"
fi

mkdir -p "$TOOLS_DIR"
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/usr/bin"
cp "$OUT" "$DEST.tmp/usr/bin/syncthing"
is_version "$DEST.tmp/usr/bin/syncthing" ||
  fail "the built binary does not run or is not v$VERSION: $("$DEST.tmp/usr/bin/syncthing" --version 2>&1 | head -n1)"
{
  echo "source: syncthing $DEBVER from $MIRROR $SUITE"
  echo "orig sha256: $(sha256sum "$ORIG" | cut -d' ' -f1)"
  echo "debian sha256: $(sha256sum "$DEBIAN" | cut -d' ' -f1)"
  echo "go: $("$GO" version)"
  echo "tags: $TAGS"
  echo "ldflags: $LDFLAGS"
  echo "cgo: CGO_ENABLED=$CGO CGO_CFLAGS=${CGO_CFLAGS:-} CGO_LDFLAGS=${CGO_LDFLAGS:-}"
  echo "build-deps:"
  for deb in "$TMP"/debs/*.deb; do
    echo "  $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
  done
  echo "binary: $("$DEST.tmp/usr/bin/syncthing" --version)"
} >"$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "installed to ${DEST#"$PWD"/}"
echo "$BIN"
