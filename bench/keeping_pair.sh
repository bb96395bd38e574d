# Sourced by bench/versions.sh, bench/rewind.sh, bench/sqlite.sh and bench/profile.sh (set BENCH, KEEPING_NAME and
# KEEPING_PORT_BASE first): builds the release binaries unless BENCH_NO_BUILD=1, makes
# OUT, LOGDIR and WORK for results named KEEPING_NAME-DATE, and starts two real cairnd on
# loopback sharing one folder, "a" (SENDER_DIR, home PAIR_DIR/a-home) and "b"
# (RECEIVER_DIR, PAIR_DIR/b-home), where b keeps every version (no thinning, no limits),
# and waits until they are connected and idle. Sets CAIRND and CAIRN. The daemons log at
# BENCH_DAEMON_LOG (default info) into LOGDIR; BENCH_PIN=1 puts them on one core each.
ROOT=$(dirname "$BENCH")
export BENCH # the inline scripts import bench/keeping.py from there
helper() { python3 "$BENCH/sync_helper.py" "$@"; }
# shellcheck source=bench/sync_lib.sh
. "$BENCH/sync_lib.sh"

READY_TIMEOUT=${BENCH_READY_TIMEOUT:-120}
PORT_BASE=${BENCH_PORT_BASE:-$KEEPING_PORT_BASE}
STATUS_INTERVAL=0.2
ST_WATCH_DELAY=10
export CAIRN_LOG=${CAIRN_LOG:-warn}
export CAIRN_PRIVATE_NETWORK_ONLY=1
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building ${TARGET_DIR#"$ROOT"/}/release/cairnd and cairn..."
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet -p cairn-daemon -p cairn-cli ||
    fail "cargo build --release failed"
fi
CAIRND=${BENCH_CAIRND:-$TARGET_DIR/release/cairnd}
CAIRN=${BENCH_CAIRN:-$(dirname "$CAIRND")/cairn}
[ -x "$CAIRND" ] && [ -x "$CAIRN" ] || fail "$CAIRND or $CAIRN not found"

STAMP=$(date +%Y-%m-%d-%H%M%S)
mkdir -p "$BENCH/results" "$BENCH/data"
OUT=$BENCH/results/$KEEPING_NAME-$STAMP.txt
LOGDIR=$BENCH/results/$KEEPING_NAME-$STAMP-logs
mkdir -p "$LOGDIR"
WORK=$(mktemp -d "$BENCH/data/$KEEPING_NAME-work.XXXXXX")
trap 'stop_all; rm -rf "$WORK"' EXIT

# Like start_cairn_pair, but b keeps every version (no thinning) so all of them count.
take_ports 2 || fail "no free ports"
pa=${PORTS[0]} pb=${PORTS[1]}
new_pair_dirs cairn "$KEEPING_NAME" || fail "dirs"
ida=$("$CAIRND" --home "$PAIR_DIR/a-home" --print-id)
idb=$("$CAIRND" --home "$PAIR_DIR/b-home" --print-id)
helper cairn-config --home "$PAIR_DIR/a-home" --port "$pa" --peer-id "$idb" --peer-name b \
  --peer-port "$pb" --folder "$SENDER_DIR"
helper cairn-config --home "$PAIR_DIR/b-home" --port "$pb" --peer-id "$ida" --peer-name a \
  --peer-port "$pa" --folder "$RECEIVER_DIR"
# BENCH_TRANSPORT=quic: the pair listens and dials over QUIC instead of TCP (Noise, Yamux).
if [ "${BENCH_TRANSPORT:-tcp}" = quic ]; then
  for side in a b; do
    sed -i -E 's#/ip4/127\.0\.0\.1/tcp/([0-9]+)#/ip4/127.0.0.1/udp/\1/quic-v1#g' "$PAIR_DIR/$side-home/config.toml"
  done
fi
printf '\n[folders.versions]\nstaggered = false\nmax_age_days = 0\nmax_size_mib = 0\n' \
  >>"$PAIR_DIR/b-home/config.toml"
helper pair --out "$PAIR" --tool cairn --ports "$pa" "$pb" \
  --sender-home "$PAIR_DIR/a-home" --sender-dir "$SENDER_DIR" --sender-id "$ida" --sender-log "$SENDER_LOG" \
  --receiver-home "$PAIR_DIR/b-home" --receiver-dir "$RECEIVER_DIR" --receiver-id "$idb" --receiver-log "$RECEIVER_LOG"
# BENCH_PIN=1 gives each daemon one core of its own (a on CPU 0, b on CPU 1), as two
# devices would have: without it, work both devices do at once (a restore writes the
# file on both) competes for the same two cores, which a real pair never does.
pin=()
for side in a b; do
  logf=$SENDER_LOG
  [ "$side" = b ] && logf=$RECEIVER_LOG
  if [ "${BENCH_PIN:-0}" = 1 ]; then
    pin=(taskset -c "$([ "$side" = a ] && echo 0 || echo 1)")
  fi
  CAIRN_LOG=${BENCH_DAEMON_LOG:-info} "${pin[@]}" "$CAIRND" --home "$PAIR_DIR/$side-home" >"$logf" 2>&1 &
  ALL_PIDS+=("$!")
done
helper ready --pair "$PAIR" --timeout "$READY_TIMEOUT" || { tail_logs 25; fail "daemons not ready"; }
