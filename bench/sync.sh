#!/usr/bin/env bash
# Sync benchmark: cairn and Syncthing side by side on loopback, on the same data. Run by
# hand, not in CI (needs ~3 GB of disk, root or syncthing installed, network access to
# deb.debian.org once for Syncthing 1.29.5; ~15 minutes for cairn and one Syncthing, each
# further Syncthing variant adds its own share).
#
#   bench/sync.sh                    all data sets except small100k, huge10g and scale, for
#                                    cairn and the default tools (below)
#   BENCH_TOOLS="cairn syncthing-1.29-asm syncthing-1.29-asm-d1" bench/sync.sh
#                                    only the fair 1.29.5 anchors (at its defaults, watcher
#                                    delay 1)
#   BENCH_TOOLS="cairn syncthing-1.19 syncthing-1.19-d1 syncthing-1.29 syncthing-1.29-d1" bench/sync.sh
#                                    both versions, each at its defaults and with delay 1
#   BENCH_TOOLS="cairn syncthing" bench/sync.sh
#                                    the old run: the installed syncthing, BENCH_ST_WATCH_DELAY
#   BENCH_ONLY=edit BENCH_TOOLS="cairn syncthing-1.29-d1" bench/sync.sh
#                                    one data set (the edit, with rsync's bytes), one anchor
#   BENCH_100K=1 bench/sync.sh       also 100,000 small files (memory target; slow)
#   BENCH_ONLY=scale bench/sync.sh   issue #13's scale run, 100,000 files, beside Syncthing
#   BENCH_ONLY=scale BENCH_SCALE_FILES=1000000 BENCH_TOOLS=cairn bench/sync.sh
#                                    the same with 1,000,000 files, cairn only
#   bench/fresh_fs.sh mount 24       first, for runs that compare across days: a fresh ext4
#                                    under bench/data/sync (an aged one slows inode allocation)
#
# Data sets (generated once under bench/data/sync/, kept between runs):
#   large      1 GiB as 4 x 256 MiB files
#   small10k   10,000 files of 1-64 KiB (also: peak RSS of both daemons)
#   edit       a 256 MiB file is synced first, then replaced (rename over) by a version with
#              ten 100-byte insertions and one 1 MiB overwrite; the edit is what is measured.
#              After the tools, rsync -a --no-whole-file --stats copies the edited file onto a
#              copy of the original on this machine (no daemon): its bytes sent + received are
#              the "rsync bytes" column (installed as root if missing; BENCH_NO_RSYNC=1: none)
#   identical  8 identical 32 MiB files
#   dirrename  the 10,000 files of small10k are synced under old/, then old/ is renamed to
#              new/ on the sender; the rename is what is measured
#   latency    a few bytes written to a new file on the sender, until it is on the receiver;
#              BENCH_LATENCY_RUNS times (default 5), median
#   small100k  100,000 files of 1-8 KiB, only with BENCH_100K=1 (peak RSS, target < 200 MiB)
#   huge10g    one 10 GiB file, only with BENCH_HUGE=1 (needs ~31 GB of disk; peak RSS)
#   scale      BENCH_SCALE_FILES files (default 100,000) of 1-4 KiB, 1,000 to a directory
#              (seeded; kept as bench/data/sync/scale-N, one per N); only when named in
#              BENCH_ONLY. Disk: about 3 x N x 4 KiB (data, sender, receiver; checked first).
#              Issue #13's figures: the first sync as for the other data sets, then
#              BENCH_SCALE_EDITS times (default 3) 16 bytes overwritten in place in one
#              existing file on the sender until the receiver has them (median; both tools);
#              peak RSS of each daemon (VmHWM at the end, and the highest of RSS samples every
#              BENCH_STATUS_INTERVAL s, default 0.2; both tools); GET /v1/status timed at the
#              same interval on each cairn daemon from before the copy to the end of the edits
#              (p50, p99, max, errors), and at the same instants the same GET to a server that
#              does nothing (a process of the monitor's: what the loaded machine costs any
#              answer, printed as "baseline"; a daemon's answers >= 50 ms are also counted
#              apart where the baseline's at the same instant took < 50 ms);
#              cairn_loop_stall_seconds from each cairn daemon's
#              /metrics at the end (p99 = upper bound of the bucket where the cumulative count
#              reaches 99%, the highest bucket with a count, count). Targets printed: first
#              sync completes, edit < 1 s, RSS < 500 MiB, /v1/status < 50 ms, stall p99 <= 20 ms.
#              Timeouts: BENCH_SCALE_TIMEOUT (default the larger of BENCH_TIMEOUT and N/100 s),
#              settle max(BENCH_SETTLE_TIMEOUT, N/5000 s). Samples: LOGDIR/scale-TOOL-timeline.csv.
#
# Every cairn run also reads cairn_loop_stall_seconds at its end (a stall table at the end).
#
# For every data set and tool: fresh homes and empty folders, two daemons ("a" sends, "b"
# receives) on 127.0.0.1, started and waited for until connected and idle. Then the data
# is copied into a's folder (a's file watcher picks it up, for both tools) and the clock
# runs from the end of the copy until b's folder has every file with the right size (temp
# files excluded) AND b's daemon says it is in sync. The tools run one after the other,
# never at once. Afterwards b's folder is compared with a's (diff -r).
#
# Tools (BENCH_TOOLS, space-separated, run in that order for each data set; the order
# can move a figure by 15%: in a VM whose balloon hands freed memory back to the host, a
# tool that writes right after another finds pages the host still backs, while the first
# pays the host's faults, so compare both orders): cairn, and
# Syncthing variants named for the binary and the watcher delay:
#   syncthing-1.19     the syncthing on PATH, which must be 1.19.x (Debian bookworm's 1.19.2;
#                      installed with apt-get as root if missing)
#   syncthing-1.29     Debian's 1.29.5 (trixie), fetched once by bench/get_syncthing.sh into
#                      bench/tools/syncthing-1.29.5/ (gitignored; not installed, the system
#                      package stays as it is). Debian builds it with -tags purego, which on
#                      Go 1.24 drops SHA-256 and AES-GCM assembly: ~6x slower hashing.
#   syncthing-1.29-asm the same source and Debian build without purego, built once (~2 min)
#                      by bench/build_syncthing.sh into bench/tools/syncthing-1.29.5-asm/:
#                      the fair 1.29.5 anchor
#   ...-dN             either with fsWatcherDelayS=N (syncthing-1.29-d1: 1 s); without -dN
#                      the version's own default is left in the config (10 s in both)
#   syncthing          the syncthing on PATH, whatever its version, fsWatcherDelayS =
#                      BENCH_ST_WATCH_DELAY (default 10): the script's single tool before
# Default: "cairn syncthing-1.19 syncthing-1.19-d1 syncthing-1.29-asm syncthing-1.29-asm-d1
# syncthing-1.29-d1". The header names each
# variant's binary, version and delay; every table has one row per tool and, per Syncthing
# variant, cairn/variant ratios of time, CPU s (both daemons, utime+stime from /proc) and
# bytes, repeated in a summary table at the end.
#
# Syncthing is configured from here, the same for every variant: listen and GUI on
# 127.0.0.1 only, a known API key, global/local discovery, relays, NAT, usage and crash
# reporting and upgrades off, each device given the other's static address, the folder
# shared by both with the watcher on (fsWatcherDelayS as above) and a 3600 s rescan
# interval. setLowPriority is off (cairn does not renice itself either) and
# reconnectionIntervalS is 5 (only matters if a first dial fails). Both versions take the
# same flags (generate --no-default-folder --skip-port-probing; serve --no-browser
# --no-restart --no-upgrade, STMONITORED=yes so the PID is the syncing process itself).
#
# Other settings: BENCH_TIMEOUT (600 s, every wait for a data set), BENCH_SETTLE_TIMEOUT
# (60 s: after the receiver is done, how long to wait for the sender to say in sync before
# the bytes are counted anyway), BENCH_ONLY (comma list
# of data sets), BENCH_TOOLS (above; one of them to diagnose), BENCH_PORT_BASE (27100, below the kernel's ephemeral range; each pair
# takes the next free ports from there: 2 for cairn, 4 for each Syncthing variant, under 200 in all), BENCH_KEEP=1 (keep homes and folders), BENCH_FS_SETTLE (seconds to wait before each many-file run; 65 on ext4 without a journal, else 0), BENCH_NO_BUILD=1,
# CAIRN_LOG (default warn; daemon logs go to bench/results/sync-DATE-logs/), BENCH_CAIRND (the
# cairnd to run, e.g. a wrapper that starts it under heaptrack; default
# $CARGO_TARGET_DIR/release/cairnd, or target/release/cairnd without CARGO_TARGET_DIR).
#
# Output: one table per data set, printed and written to bench/results/sync-DATE.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench

helper() { python3 "$BENCH/sync_helper.py" "$@"; }
# shellcheck source=bench/sync_lib.sh
source "$BENCH/sync_lib.sh"

TIMEOUT=${BENCH_TIMEOUT:-600}
SETTLE_TIMEOUT=${BENCH_SETTLE_TIMEOUT:-60}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
ST_WATCH_DELAY=${BENCH_ST_WATCH_DELAY:-10}
PORT_BASE=${BENCH_PORT_BASE:-27100}
LATENCY_RUNS=${BENCH_LATENCY_RUNS:-5}
TOOLS=${BENCH_TOOLS:-cairn syncthing-1.19 syncthing-1.19-d1 syncthing-1.29-asm syncthing-1.29-asm-d1 syncthing-1.29-d1}
BENCH_100K=${BENCH_100K:-0}
BENCH_HUGE=${BENCH_HUGE:-0}
ONLY=${BENCH_ONLY:-large,small10k,edit,identical,dirrename,latency}
SCALE_FILES=${BENCH_SCALE_FILES:-100000}
SCALE_EDITS=${BENCH_SCALE_EDITS:-3}
STATUS_INTERVAL=${BENCH_STATUS_INTERVAL:-0.2}
if [ "$BENCH_100K" = 1 ] && [ -z "${BENCH_ONLY:-}" ]; then
  ONLY="$ONLY,small100k"
fi
if [ "$BENCH_HUGE" = 1 ] && [ -z "${BENCH_ONLY:-}" ]; then
  ONLY="$ONLY,huge10g"
fi
export CAIRN_LOG=${CAIRN_LOG:-warn}
# Benchmarks reach only loopback: the daemon refuses any other address (its default
# configuration names the public DHT; the configs written here set no bootstrap peers).
export CAIRN_PRIVATE_NETWORK_ONLY=1
DATA=$BENCH/data/sync
[[ $SCALE_FILES =~ ^[1-9][0-9]*$ ]] || fail "BENCH_SCALE_FILES must be a positive integer, not '$SCALE_FILES'"
[[ $SCALE_EDITS =~ ^[1-9][0-9]*$ ]] || fail "BENCH_SCALE_EDITS must be a positive integer, not '$SCALE_EDITS'"
SCALE_DIR=$DATA/scale-$SCALE_FILES
SCALE_TIMEOUT=${BENCH_SCALE_TIMEOUT:-$((TIMEOUT > SCALE_FILES / 100 ? TIMEOUT : SCALE_FILES / 100))}
SCALE_SETTLE=$((SETTLE_TIMEOUT > SCALE_FILES / 5000 ? SETTLE_TIMEOUT : SCALE_FILES / 5000))
WITH_SCALE=0
case ",$ONLY," in *,scale,*) WITH_SCALE=1 ;; esac

# ---- prerequisites
for c in python3 ss diff cp od awk ps; do
  command -v "$c" >/dev/null || fail "'$c' is required but not installed"
done
# apt_install PACKAGE: the Debian package, as root only (the script's old way for syncthing).
apt_install() {
  [ "$(id -u)" = 0 ] || return 1
  log "installing $1 (Debian package)..."
  { apt-get update -qq && apt-get install -y -qq "$1"; } >/dev/null
}
# Which Syncthing binaries the tools need: the system's (syncthing, syncthing-1.19*) and/or
# 1.29.5 from bench/get_syncthing.sh (syncthing-1.29*).
need_system=0 need_129=0 need_129_asm=0
for tool in $TOOLS; do
  [ "$tool" = cairn ] && continue
  st_variant "$tool" ||
    fail "unknown tool '$tool' in BENCH_TOOLS (cairn, syncthing, syncthing-1.19, syncthing-1.29, syncthing-1.29-asm, each Syncthing one also as ...-dN for fsWatcherDelayS=N)"
  case $tool in
    syncthing-1.29-asm*) need_129_asm=1 ;;
    syncthing-1.29*) need_129=1 ;;
    *) need_system=1 ;;
  esac
done
ST_BIN_SYSTEM="" ST_BIN_129="" ST_BIN_129_ASM=""
if [ "$need_system" = 1 ]; then
  command -v syncthing >/dev/null || apt_install syncthing ||
    fail "syncthing is not installed; run: sudo apt-get install -y syncthing"
  ST_BIN_SYSTEM=$(command -v syncthing)
fi
if [ "$need_129" = 1 ]; then
  ST_BIN_129=$("$BENCH/get_syncthing.sh") || fail "bench/get_syncthing.sh could not fetch Syncthing 1.29.5"
fi
if [ "$need_129_asm" = 1 ]; then
  ST_BIN_129_ASM=$("$BENCH/build_syncthing.sh") ||
    fail "bench/build_syncthing.sh could not build Syncthing 1.29.5 without purego"
fi
# Every variant: its binary runs, is the version its name says, has `syncthing generate`;
# and its default fsWatcherDelayS, from a config it generates (for the header).
TOOL_LINES=""
st_probe=$(mktemp -d)
trap 'rm -rf "$st_probe"' EXIT
for tool in $TOOLS; do
  [ "$tool" = cairn ] && continue
  st_variant "$tool"
  ver=$("$ST_BIN" --version 2>&1 | head -n1) || fail "$ST_BIN --version failed: $ver"
  case $ST_SERIES in
    "") ;;
    *) case $ver in "syncthing v$ST_SERIES."*) ;;
         *) fail "$tool needs Syncthing $ST_SERIES, $ST_BIN is: $ver (BENCH_TOOLS=syncthing runs the installed one)" ;;
       esac ;;
  esac
  "$ST_BIN" generate --help >/dev/null 2>&1 ||
    fail "this script needs Syncthing >= 1.16 ('syncthing generate'); $ST_BIN is: $ver"
  if [ ! -e "$st_probe/$ST_SERIES/config.xml" ]; then
    "$ST_BIN" generate --home="$st_probe/$ST_SERIES" --no-default-folder --skip-port-probing >/dev/null 2>&1 ||
      fail "$ST_BIN generate failed"
  fi
  default_delay=$(helper st-default --home "$st_probe/$ST_SERIES")
  if [ -n "$ST_DELAY" ]; then
    delay_text="fsWatcherDelayS=$ST_DELAY (the version's default: $default_delay)"
  else
    delay_text="fsWatcherDelayS=$default_delay (the version's default, not set here)"
  fi
  # Debian builds Syncthing with -tags purego; from Go 1.24 on that tag also drops the
  # standard library's assembly, so SHA-256 and AES-GCM run in plain Go (about 80% of
  # Debian 1.29.5's CPU in a 1 GiB sync, 6x 1.19.2's, which Go 1.19 still accelerated).
  build_note=""
  go_minor=$(grep -o 'go1\.[0-9]*' <<<"$ver" | head -n1 | cut -d. -f2)
  if [ "${go_minor:-0}" -ge 24 ] && strings "$ST_BIN" | grep '^build.*-tags=.*purego' >/dev/null; then
    build_note="; BUILT WITH -tags purego on go1.$go_minor: no hardware SHA-256/AES, far slower than upstream's binary"
  fi
  TOOL_LINES+="  $tool: ${ST_BIN#"$ROOT"/}, $(cut -d' ' -f2 <<<"$ver"), $delay_text$build_note"$'\n'
done
rm -rf "$st_probe"
# rsync's bytes beside the daemons' for the edit (a change to a file the receiver has).
WITH_RSYNC=0
case ",$ONLY," in *,edit,*) WITH_RSYNC=1 ;; esac
if [ "$WITH_RSYNC" = 1 ] && [ "${BENCH_NO_RSYNC:-0}" = 1 ]; then
  WITH_RSYNC=0
elif [ "$WITH_RSYNC" = 1 ] && ! command -v rsync >/dev/null && ! apt_install rsync; then
  log "rsync is not installed (sudo apt-get install -y rsync): no rsync bytes for the edit"
  WITH_RSYNC=0
fi
# cargo puts the binary under CARGO_TARGET_DIR when it is set (relative: to the repository).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building ${TARGET_DIR#"$ROOT"/}/release/cairnd..."
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet -p cairn-daemon ||
    fail "cargo build --release -p cairn-daemon failed"
fi
CAIRND=${BENCH_CAIRND:-$TARGET_DIR/release/cairnd}
[ -x "$CAIRND" ] || fail "$CAIRND not found (build it: cargo build --release -p cairn-daemon)"

# ---- data (not timed)
if [ "$WITH_SCALE" = 1 ]; then
  # Each small file takes at least one 4 KiB block: the data set, the sender's copy and the
  # receiver's, plus a tenth for directories and the daemons' indexes. Only one pair at a time.
  need_kib=$((SCALE_FILES * 4 * 2 * 11 / 10))
  [ -e "$DATA/.scale-$SCALE_FILES.complete" ] || need_kib=$((need_kib + SCALE_FILES * 4))
  mkdir -p "$DATA"
  avail_kib=$(df -Pk "$DATA" | awk 'NR == 2 {print $4}')
  [ "$avail_kib" -ge "$need_kib" ] ||
    fail "scale with $SCALE_FILES files needs about $((need_kib / 1048576 + 1)) GiB free under $DATA; $((avail_kib / 1048576)) GiB are"
fi
gen_args=("$DATA")
[ "$BENCH_100K" = 1 ] && gen_args+=(--with-100k)
[ "$BENCH_HUGE" = 1 ] && gen_args+=(--with-huge)
[ "$WITH_SCALE" = 1 ] && gen_args+=(--scale "$SCALE_FILES")
helper gen "${gen_args[@]}" || fail "data generation failed"

STAMP=$(date +%Y-%m-%d-%H%M%S)
mkdir -p "$BENCH/results"
OUT=$BENCH/results/sync-$STAMP.txt
LOGDIR=$BENCH/results/sync-$STAMP-logs
mkdir -p "$LOGDIR"
RESULTS=$LOGDIR/results.jsonl
: >"$RESULTS"
# Work on the same file system as the data (the edit is renamed into the folder).
WORK=$(mktemp -d "$BENCH/data/sync-work.XXXXXX")

cleanup() {
  local rc=$?
  trap - EXIT
  stop_all
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept homes and folders in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

header() {
  local cpu rev dirty variants="Syncthing variants: none"
  [ -n "$TOOL_LINES" ] && variants="Syncthing variants (binary, version, watcher delay):"$'\n'"${TOOL_LINES%$'\n'}"
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || true)
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git status --porcelain --untracked-files=no -- core daemon cli 2>/dev/null | head -n1 || true)
  [ -n "$dirty" ] && rev="$rev + uncommitted changes"
  cat <<EOF
cairn vs Syncthing, sync benchmark ($(date -u +%FT%TZ))
machine: $(nproc) cores, ${cpu:-unknown cpu}, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -r)
cairn: $rev (${CAIRND#"$ROOT"/})
tools: $TOOLS
$variants
setup: 2 daemons per tool on 127.0.0.1 TCP, fresh homes and empty folders for every data set,
  tools run one after the other; data copied into the sender's folder, the watcher picks it up;
  each many-file run starts after ${FS_SETTLE} s of letting the file system settle (BENCH_FS_SETTLE).
Syncthing: discovery, relays, NAT, usage/crash reporting, upgrades off; static addresses;
  fsWatcher on, fsWatcherDelayS as above; rescanIntervalS 3600; setLowPriority false.
seconds: end of the copy -> receiver has every file with the right size (stat of each
  expected path; no directory listing or open, which a watcher could see) AND says in sync
  (cairn /v1/status in_sync+idle; Syncthing /rest/db/status idle, need 0, local = global).
copy s: how long the copy into the sender took (not in "seconds"; the tools may start
  during it). CPU s: CPU time both daemons used during "seconds" (utime+stime, /proc).
wire bytes (tool): what each tool counts itself. cairn: chunk bytes + folder metadata bytes
  (/metrics) - payload only, not TLS/Noise/yamux/TCP framing nor chunk requests. Syncthing:
  in+out bytes of the protocol connection (/rest/system/connections), above TLS.
TCP bytes (ss): payload of every TCP socket between the two peers, both directions, from the
  kernel (ss -ti bytes_received), so it includes TLS/Noise/yamux framing; same for both tools.
rsync bytes (edit only): rsync -a --no-whole-file --stats of the edited file onto a copy of
  the original, on this machine, no daemon: its "Total bytes sent" + "Total bytes received"
  (delta transfer forced on as over a network); one figure per data set, shown on every row.
cairn/TOOL: cairn's figure over the other tool's, per data set (time, CPU s, both byte counts).
(files s): when the receiver's files were all there, before the in-sync signal.
check: the receiver's folder compared with the sender's (diff -r) after the run; also notes
  if the sender never reported in sync, or if other processes used CPU during the run.
stall: cairn_loop_stall_seconds (how long each turn of a cairn daemon's event loop took) read
  from /metrics at the end of every cairn run, before the check; p99 and the longest turn are
  bucket bounds (buckets 1, 2, 5, 10, 20, 50, 100, 500, 2000 ms).
EOF
  if [ "$WITH_SCALE" = 1 ]; then
    cat <<EOF
scale ($SCALE_FILES files): a monitor samples every ${STATUS_INTERVAL} s, from the moment the pair is
  connected and idle (before the copy) to the end of the edits: RSS of both daemons, and for
  cairn the time of one GET /v1/status on each daemon (new HTTP connection, whole body read).
  After the first sync, $SCALE_EDITS times: 16 bytes overwritten in place in one existing file on
  the sender, clock from the write's close until the receiver's file has the new content.
EOF
  fi
}

# settle_fs: on ext4 without a journal, creating a file within ~60 s of many deletes
# scans the recently freed inodes (ext4's recently_deleted; one profile run spent 38% of
# the receiver's samples in openat so): the tool that runs right after the previous
# tool's folders were deleted pays for them (fs/ext4/ialloc.c: 60 s, RECENTCY_MIN, or 300
# s while the inode table block is unwritten, which the sync here writes). Before each
# many-file run, flush and wait out that window (BENCH_FS_SETTLE seconds; default 65
# there, 0 elsewhere).
FS_SETTLE=${BENCH_FS_SETTLE:-}
if [ -z "$FS_SETTLE" ]; then
  FS_SETTLE=0
  dev=$(findmnt -no SOURCE -T "$BENCH/data" 2>/dev/null || true)
  dev=${dev##*/}
  if [ -n "$dev" ] && [ -d "/proc/fs/ext4/$dev" ] && ! ls -d /proc/fs/jbd2/"$dev"-* >/dev/null 2>&1; then
    FS_SETTLE=65
  fi
fi
settle_fs() {
  [ "$FS_SETTLE" -gt 0 ] || return 0
  sync
  log "waiting ${FS_SETTLE} s for the file system's recently freed inodes (BENCH_FS_SETTLE)"
  sleep "$FS_SETTLE"
}

# run_one DATASET TOOL: one tool on one data set, result appended to $RESULTS.
run_one() {
  local ds=$1 tool=$2 res="$WORK/$1-$2.json" verify="" rss="" rc=0 mon="" edits="" stall=""
  rm -f "$res"
  log "[$ds] $tool: starting a fresh pair"
  if ! start_pair "$tool" "$ds"; then
    log "[$ds] $tool: the pair did not start (see above)"
    helper record --results "$RESULTS" --dataset "$ds" --tool "$tool" --failed "pair did not start"
    stop_pair
    return 0
  fi
  case $ds in
    edit)
      local init="$WORK/$ds-$tool-initial.json"
      log "[$ds] $tool: first sync of the 256 MiB original"
      helper sync --pair "$PAIR" --copy "$DATA/edit/base" --expect "$DATA/edit/base" \
        --out "$init" --timeout "$TIMEOUT" --settle-timeout "$SETTLE_TIMEOUT" || rc=$?
      helper record --results "$RESULTS" --dataset edit-initial --tool "$tool" --result "$init"
      if [ "$rc" = 0 ]; then
        # The edited version is staged outside the folder, then renamed over the original.
        cp "$DATA/edit/edited/big.bin" "$PAIR_DIR/edited.tmp"
        sync
        log "[$ds] $tool: edit (rename over)"
        helper sync --pair "$PAIR" --replace "$PAIR_DIR/edited.tmp:big.bin" \
          --expect "$DATA/edit/edited" --out "$res" --timeout "$TIMEOUT" --settle-timeout "$SETTLE_TIMEOUT" || rc=$?
      fi
      ;;
    dirrename)
      local init="$WORK/$ds-$tool-initial.json" stage="$WORK/$ds-stage" after="$WORK/$ds-after"
      rm -rf "$stage" "$after"
      mkdir -p "$stage" "$after"
      # Hard links where the data sets and the work directory share a file system (not
      # with bench/fresh_fs.sh), copies otherwise.
      cp -al "$DATA/small10k" "$stage/old" 2>/dev/null || { rm -rf "$stage/old"; cp -a "$DATA/small10k" "$stage/old"; }
      cp -al "$DATA/small10k" "$after/new" 2>/dev/null || { rm -rf "$after/new"; cp -a "$DATA/small10k" "$after/new"; }
      log "[$ds] $tool: first sync of 10,000 files under old/"
      helper sync --pair "$PAIR" --copy "$stage" --expect "$stage" \
        --out "$init" --timeout "$TIMEOUT" --settle-timeout "$SETTLE_TIMEOUT" || rc=$?
      helper record --results "$RESULTS" --dataset dirrename-initial --tool "$tool" --result "$init"
      if [ "$rc" = 0 ]; then
        log "[$ds] $tool: mv old new"
        helper sync --pair "$PAIR" --rename "old:new" --expect "$after" --out "$res" \
          --timeout "$TIMEOUT" --settle-timeout "$SETTLE_TIMEOUT" || rc=$?
      fi
      ;;
    latency)
      helper latency --pair "$PAIR" --runs "$LATENCY_RUNS" --out "$res" --timeout 120 || rc=$?
      ;;
    scale)
      mon="$WORK/$ds-$tool-monitor.json" edits="$WORK/$ds-$tool-edits.json"
      rm -f "$mon" "$edits"
      start_monitor "$mon" "$LOGDIR/$ds-$tool-timeline.csv"
      log "[$ds] $tool: first sync of $SCALE_FILES files"
      helper sync --pair "$PAIR" --copy "$SCALE_DIR" --expect "$SCALE_DIR" --out "$res" \
        --timeout "$SCALE_TIMEOUT" --settle-timeout "$SCALE_SETTLE" || rc=$?
      if [ "$rc" = 0 ]; then
        log "[$ds] $tool: one edited file, $SCALE_EDITS times"
        helper edit-one --pair "$PAIR" --source "$SCALE_DIR" --runs "$SCALE_EDITS" --out "$edits" \
          --timeout 120 --ready-timeout "$SCALE_TIMEOUT" || {
          log "[$ds] $tool: the edits FAILED or timed out"
          tail_logs 40
        }
      fi
      ;;
    *)
      helper sync --pair "$PAIR" --copy "$DATA/$ds" --expect "$DATA/$ds" --out "$res" \
        --timeout "$TIMEOUT" --settle-timeout "$SETTLE_TIMEOUT" || rc=$?
      ;;
  esac
  # Before the check: diff -r opens every file, which a daemon's watcher may see.
  if [ "$tool" = cairn ]; then
    stall="$WORK/$ds-$tool-stall.json"
    helper stall --pair "$PAIR" --out "$stall" || log "[$ds] $tool: could not read /metrics"
  fi
  stop_monitor
  if [ "$rc" != 0 ]; then
    log "[$ds] $tool: FAILED or timed out (exit $rc)"
    tail_logs 40
  elif [ "$ds" != latency ]; then
    verify=$(verify_pair)
  fi
  case $ds in small10k | small100k | huge10g | scale) rss=$(pair_rss) ;; esac
  local extra=()
  [ -n "$verify" ] && extra+=(--verify "$verify")
  [ -n "$rss" ] && extra+=(--rss "$rss")
  [ -n "$mon" ] && extra+=(--monitor "$mon")
  [ -n "$edits" ] && extra+=(--edits "$edits")
  [ -n "$stall" ] && extra+=(--stall "$stall")
  [ "$rc" = 3 ] && extra+=(--failed "daemon exited")
  helper record --results "$RESULTS" --dataset "$ds" --tool "$tool" --result "$res" "${extra[@]}"
  stop_pair
}

# run_rsync DATASET: rsync's bytes for the same change as the data set's measured step, on
# this machine after the tools (not timed against them): the new version onto a copy of
# what the receiver had before it. Only the edit (a change to a file the receiver has).
run_rsync() {
  local ds=$1 old new dest res="$WORK/$1-rsync.json" verify="" rc=0
  case $ds in
    edit) old=$DATA/edit/base new=$DATA/edit/edited ;;
    *) return 0 ;;
  esac
  dest=$WORK/$ds-rsync-dest
  rm -rf "$dest" "$res"
  cp -a "$old" "$dest"  # the receiver's state before the step, mtime included
  sync
  log "[$ds] rsync: the new version onto a copy of the old (local, --no-whole-file)"
  helper rsync --src "$new" --dest "$dest" --out "$res" || rc=$?
  if [ "$rc" = 0 ]; then
    if diff -rq "$new" "$dest" >&2; then verify=ok; else verify=MISMATCH; fi
  fi
  local extra=()
  [ -n "$verify" ] && extra+=(--verify "$verify")
  [ "$rc" != 0 ] && extra+=(--failed "rsync exit $rc")
  helper record --results "$RESULTS" --dataset "$ds" --tool rsync --result "$res" "${extra[@]}"
  rm -rf "$dest"
}

# warm DIR: read a data set once so neither tool gets a colder page cache.
warm() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }

header | tee "$LOGDIR/header.txt"
echo
started=$(date +%s)
IFS=, read -r -a sets <<<"$ONLY"
for ds in "${sets[@]}"; do
  case $ds in
    large | small10k | identical | small100k) warm "$DATA/$ds" ;;
    dirrename) warm "$DATA/small10k" ;;
    edit) warm "$DATA/edit" ;;
    scale) warm "$SCALE_DIR" ;;
    latency | huge10g) ;;
    *) fail "unknown data set '$ds' in BENCH_ONLY (large, small10k, edit, identical, dirrename, latency, small100k, huge10g, scale)" ;;
  esac
  [ "$ds" = small100k ] && [ ! -e "$DATA/.small100k.complete" ] && fail "small100k needs BENCH_100K=1"
  [ "$ds" = huge10g ] && [ ! -e "$DATA/.huge10g.complete" ] && fail "huge10g needs BENCH_HUGE=1"
  for tool in $TOOLS; do
    case $ds in small10k | identical | dirrename | small100k) settle_fs ;; esac
    run_one "$ds" "$tool"
  done
  if [ "$WITH_RSYNC" = 1 ]; then run_rsync "$ds"; fi
done

{
  cat "$LOGDIR/header.txt"
  echo
  helper report --results "$RESULTS"
  echo "total run time: $(($(date +%s) - started)) s; logs: ${LOGDIR#"$ROOT"/}"
} >"$OUT"
echo
helper report --results "$RESULTS"
log "written to ${OUT#"$ROOT"/}"
