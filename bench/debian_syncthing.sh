# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# What bench/get_syncthing.sh (Debian's syncthing package) and bench/build_syncthing.sh (the
# same source built without purego) share, sourced by both from the repository's root
# after they set LOG_NAME: the version and where it comes from, the tools directory, log and
# fail, the host checks, and apt with a state of its own, to download and check packages of
# another Debian suite without touching the system's apt lists, cache or dpkg database.
VERSION=1.29.5
SUITE=${BENCH_ST_SUITE:-trixie}
MIRROR=${BENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
TOOLS_DIR=${BENCH_TOOLS_DIR:-$PWD/bench/tools}
case $TOOLS_DIR in /*) ;; *) TOOLS_DIR=$PWD/$TOOLS_DIR ;; esac

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# is_version BINARY: it runs and says it is $VERSION.
is_version() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  case $out in "syncthing v$VERSION "*) return 0 ;; *) return 1 ;; esac
}

# need_debian_tools CMD...: the host has apt, dpkg and CMD..., and Debian's archive keyring;
# sets ARCH.
need_debian_tools() {
  local c
  for c in apt-get apt-cache dpkg-deb dpkg "$@"; do
    command -v "$c" >/dev/null || fail "'$c' is required (a Debian or Ubuntu system)"
  done
  [ -r "$KEYRING" ] || fail "$KEYRING not found (package debian-archive-keyring)"
  ARCH=$(dpkg --print-architecture)
}

# private_apt DIR WITH_SOURCES: makes DIR's state, cache and sources list (a deb line for
# $SUITE of $MIRROR, signed by $KEYRING, for $ARCH; a deb-src line too when WITH_SOURCES is
# 1, with an empty dpkg status) and sets APT to the options that point apt-get and
# apt-cache there. As root apt downloads as the user _apt: `private_apt_writable DIR...`
# (after private_apt) lets it write into the directories named, inside DIR.
private_apt() {
  local dir=$1 with_sources=$2
  PRIVATE_APT_DIR=$dir
  mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial"
  : >"$dir/state/status"
  {
    echo "deb [arch=$ARCH signed-by=$KEYRING target=Packages] $MIRROR $SUITE main"
    if [ "$with_sources" = 1 ]; then
      echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main"
    fi
  } >"$dir/sources.list"
  APT=(
    -o "Dir::Etc::SourceList=$dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State=$dir/state"
    -o "Dir::State::status=$dir/state/status"
    -o "Dir::Cache=$dir/cache"
    -o "Acquire::Languages=none"
  )
}

private_apt_writable() {
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
    chmod 755 "$PRIVATE_APT_DIR"
    chown _apt "$@"
  fi
}
