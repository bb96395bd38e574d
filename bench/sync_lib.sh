# shellcheck shell=bash
# Functions for bench/sync.sh: start and stop a cairn or Syncthing pair (sender "a",
# receiver "b") in fresh homes and folders, by PID only. Sourced, not run.
#
# Expects from the caller: a helper function (python3 bench/sync_helper.py), BENCH (the bench
# directory), CAIRND, WORK, LOGDIR, PORT_BASE (first port to use), ST_WATCH_DELAY,
# READY_TIMEOUT, STATUS_INTERVAL (seconds between monitor samples); for Syncthing pairs
# ST_BIN_SYSTEM (the syncthing on PATH) and, for syncthing-1.29 variants, ST_BIN_129 (and
# ST_BIN_129_ASM for syncthing-1.29-asm ones).
# Sets for the current pair: PAIR (its JSON description), PAIR_DIR, SENDER_DIR,
# RECEIVER_DIR, SENDER_LOG, RECEIVER_LOG, PAIR_PIDS (sender pid, receiver pid), MON_PID (the
# monitor started by start_monitor, if any).

ALL_PIDS=()
NEXT_PORT=""
MON_PID=""

# take_ports N: the next N free ports (from PORT_BASE on) into PORTS. Every pair gets new
# ones, so no pair meets an earlier pair's sockets and cairn and Syncthing never share one.
take_ports() {
  [ -n "$NEXT_PORT" ] || NEXT_PORT=$PORT_BASE
  read -r -a PORTS <<<"$(helper pick-ports "$NEXT_PORT" "$1")" || return 1
  [ "${#PORTS[@]}" = "$1" ] || return 1
  NEXT_PORT=$((PORTS[${#PORTS[@]} - 1] + 1))
}

log() { printf '%s\n' "$*" >&2; }
fail() { log "sync.sh: error: $*"; exit 1; }

# pid_running PID: true while PID exists and is not a zombie.
pid_running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

# stop_pid PID: SIGTERM, up to 15 s, then SIGKILL; reaps it.
stop_pid() {
  local pid=$1
  if pid_running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      pid_running "$pid" || break
      sleep 0.1
    done
    if pid_running "$pid"; then
      log "  pid $pid did not stop after SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# start_monitor OUT TIMELINE: samples /v1/status latency (cairn) and RSS of both daemons of the
# current pair every STATUS_INTERVAL s in the background until stop_monitor, which makes it
# write its summary to OUT (JSON); every sample goes to TIMELINE (CSV). python3 is started
# directly (not through the helper function) so that MON_PID is the sampler itself.
start_monitor() {
  python3 "$BENCH/sync_helper.py" monitor --pair "$PAIR" --out "$1" --timeline "$2" \
    --interval "$STATUS_INTERVAL" &
  MON_PID=$!
}

# stop_monitor: SIGTERM to the monitor (it writes its summary and exits), reaped.
stop_monitor() {
  [ -n "$MON_PID" ] || return 0
  kill -TERM "$MON_PID" 2>/dev/null || true
  wait "$MON_PID" 2>/dev/null || true
  MON_PID=""
}

# Stops every daemon this script started (EXIT trap).
stop_all() {
  local pid
  stop_monitor
  for pid in "${ALL_PIDS[@]}"; do
    stop_pid "$pid"
  done
  ALL_PIDS=()
}

# vmhwm PID: peak resident set in KiB (0 if unreadable).
vmhwm() {
  awk '/^VmHWM:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}

# tail_logs: the last lines of both daemons' logs, for error reports.
tail_logs() {
  local f
  for f in "$SENDER_LOG" "$RECEIVER_LOG"; do
    log "  --- last lines of $f"
    tail -n "${1:-25}" "$f" >&2 2>/dev/null || true
  done
}

# new_pair_dirs TOOL NAME: fresh homes and folders under $WORK/TOOL-NAME.
new_pair_dirs() {
  PAIR_DIR="$WORK/$1-$2"
  rm -rf "$PAIR_DIR" || return 1
  mkdir -p "$PAIR_DIR/a-home" "$PAIR_DIR/b-home" "$PAIR_DIR/a" "$PAIR_DIR/b" || return 1
  SENDER_DIR="$PAIR_DIR/a"
  RECEIVER_DIR="$PAIR_DIR/b"
  SENDER_LOG="$LOGDIR/$1-$2-a.log"
  RECEIVER_LOG="$LOGDIR/$1-$2-b.log"
  PAIR="$PAIR_DIR/pair.json"
  PAIR_PIDS=()
}

# start_cairn_pair NAME: two cairnd, connected, idle, with empty folders.
start_cairn_pair() {
  local name=$1 pa pb ida idb pid side
  take_ports 2 || return 1
  pa=${PORTS[0]} pb=${PORTS[1]}
  new_pair_dirs cairn "$name" || return 1
  ida=$("$CAIRND" --home "$PAIR_DIR/a-home" --print-id) || { log "cairnd --print-id failed"; return 1; }
  idb=$("$CAIRND" --home "$PAIR_DIR/b-home" --print-id) || { log "cairnd --print-id failed"; return 1; }
  helper cairn-config --home "$PAIR_DIR/a-home" --port "$pa" --peer-id "$idb" --peer-name b \
    --peer-port "$pb" --folder "$SENDER_DIR" || return 1
  helper cairn-config --home "$PAIR_DIR/b-home" --port "$pb" --peer-id "$ida" --peer-name a \
    --peer-port "$pa" --folder "$RECEIVER_DIR" || return 1
  helper pair --out "$PAIR" --tool cairn --ports "$pa" "$pb" \
    --sender-home "$PAIR_DIR/a-home" --sender-dir "$SENDER_DIR" --sender-id "$ida" --sender-log "$SENDER_LOG" \
    --receiver-home "$PAIR_DIR/b-home" --receiver-dir "$RECEIVER_DIR" --receiver-id "$idb" --receiver-log "$RECEIVER_LOG" || return 1
  for side in a b; do
    local logf=$SENDER_LOG
    [ "$side" = b ] && logf=$RECEIVER_LOG
    "$CAIRND" --home "$PAIR_DIR/$side-home" >"$logf" 2>&1 &
    pid=$!
    ALL_PIDS+=("$pid")
    PAIR_PIDS+=("$pid")
    echo "$pid" >"$PAIR_DIR/$side-home/bench.pid"
  done
  if ! helper ready --pair "$PAIR" --timeout "$READY_TIMEOUT"; then
    tail_logs 25
    return 1
  fi
}

# st_variant TOOL: the Syncthing binary and watcher delay a tool name of bench/sync.sh
# stands for, into ST_BIN, ST_DELAY ("" = the version's own default, not written to the
# config) and ST_SERIES (1.19, 1.29 or "" for any). False for a name that is none of:
#   syncthing            the syncthing on PATH, whatever its version, fsWatcherDelayS =
#                        ST_WATCH_DELAY (BENCH_ST_WATCH_DELAY; the script's old single tool)
#   syncthing-1.19       the syncthing on PATH, which must be 1.19.x (Debian bookworm's)
#   syncthing-1.29       ST_BIN_129, Debian's 1.29.5 unpacked by bench/get_syncthing.sh
#                        (built with -tags purego: no SHA-256/AES assembly)
#   syncthing-1.29-asm   ST_BIN_129_ASM, the same source and build built without purego
#                        by bench/build_syncthing.sh (the fair 1.29.5 anchor)
#   ...-dN               any of them with fsWatcherDelayS = N (syncthing-1.29-asm-d1)
st_variant() {
  ST_DELAY="" ST_SERIES="" ST_BIN=""
  case $1 in
    syncthing)
      ST_BIN=${ST_BIN_SYSTEM:-} ST_DELAY=$ST_WATCH_DELAY
      return 0 ;;
  esac
  [[ $1 =~ ^syncthing-(1\.19|1\.29|1\.29-asm)(-d([0-9]+))?$ ]] || return 1
  ST_SERIES=${BASH_REMATCH[1]%-asm} ST_DELAY=${BASH_REMATCH[3]}
  case ${BASH_REMATCH[1]} in
    1.19) ST_BIN=${ST_BIN_SYSTEM:-} ;;
    1.29) ST_BIN=${ST_BIN_129:-} ;;
    1.29-asm) ST_BIN=${ST_BIN_129_ASM:-} ;;
  esac
}

# start_syncthing_pair TOOL NAME: two Syncthing instances of variant TOOL (see st_variant),
# connected, idle, with empty folders.
start_syncthing_pair() {
  local tool=$1 name=$2 pa pb ga gb key ida idb pid side delay=() cfg
  st_variant "$tool" || { log "unknown Syncthing variant '$tool'"; return 1; }
  [ -n "$ST_BIN" ] || { log "$tool: no binary (ST_BIN_SYSTEM, ST_BIN_129 or ST_BIN_129_ASM unset)"; return 1; }
  [ -n "$ST_DELAY" ] && delay=(--watch-delay "$ST_DELAY")
  take_ports 4 || return 1
  pa=${PORTS[0]} pb=${PORTS[1]} ga=${PORTS[2]} gb=${PORTS[3]}
  new_pair_dirs "$tool" "$name" || return 1
  key="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  for side in a b; do
    "$ST_BIN" generate --home="$PAIR_DIR/$side-home" --no-default-folder --skip-port-probing \
      >>"$LOGDIR/syncthing-generate.log" 2>&1 || { log "syncthing generate failed; see $LOGDIR/syncthing-generate.log"; return 1; }
    # Syncthing's folder marker; it refuses to use a folder without it.
    mkdir -p "$PAIR_DIR/$side/.stfolder" || return 1
  done
  ida=$("$ST_BIN" serve --home="$PAIR_DIR/a-home" --device-id) || { log "syncthing --device-id failed"; return 1; }
  idb=$("$ST_BIN" serve --home="$PAIR_DIR/b-home" --device-id) || { log "syncthing --device-id failed"; return 1; }
  # st-config prints the folder's fsWatcherDelayS as written (the version's own without --watch-delay).
  cfg=$(helper st-config --home "$PAIR_DIR/a-home" --name a --apikey "$key" --port "$pa" --gui-port "$ga" \
    --peer-id "$idb" --peer-name b --peer-port "$pb" --folder "$SENDER_DIR" "${delay[@]}") || return 1
  helper st-config --home "$PAIR_DIR/b-home" --name b --apikey "$key" --port "$pb" --gui-port "$gb" \
    --peer-id "$ida" --peer-name a --peer-port "$pa" --folder "$RECEIVER_DIR" "${delay[@]}" >/dev/null || return 1
  log "  $tool: ${ST_BIN#"${ROOT:-}"/}, $cfg"
  helper pair --out "$PAIR" --tool syncthing --name "$tool" --ports "$pa" "$pb" --apikey "$key" \
    --sender-home "$PAIR_DIR/a-home" --sender-dir "$SENDER_DIR" --sender-id "$ida" --sender-log "$SENDER_LOG" \
    --sender-gui "127.0.0.1:$ga" \
    --receiver-home "$PAIR_DIR/b-home" --receiver-dir "$RECEIVER_DIR" --receiver-id "$idb" --receiver-log "$RECEIVER_LOG" \
    --receiver-gui "127.0.0.1:$gb" || return 1
  for side in a b; do
    local logf=$SENDER_LOG
    [ "$side" = b ] && logf=$RECEIVER_LOG
    # STMONITORED=yes: run the syncing process itself, not a monitor that forks it (1.19
    # forks even with --no-restart), so $! is the process that syncs and its VmHWM and CPU
    # time count. Every flag and variable here means the same to 1.19 and 1.29.
    STMONITORED=yes STNODEFAULTFOLDER=1 STNOUPGRADE=1 "$ST_BIN" serve --home="$PAIR_DIR/$side-home" \
      --no-browser --no-restart --no-upgrade --logflags=3 >"$logf" 2>&1 &
    pid=$!
    ALL_PIDS+=("$pid")
    PAIR_PIDS+=("$pid")
    echo "$pid" >"$PAIR_DIR/$side-home/bench.pid"
  done
  if ! helper ready --pair "$PAIR" --timeout "$READY_TIMEOUT"; then
    tail_logs 25
    return 1
  fi
}

# start_pair TOOL NAME: TOOL is cairn or a Syncthing variant (st_variant).
start_pair() {
  sync  # flush the previous run's dirty pages before anything is timed
  case $1 in
    cairn) start_cairn_pair "$2" ;;
    syncthing | syncthing-*) start_syncthing_pair "$1" "$2" ;;
    *) log "unknown tool $1"; return 1 ;;
  esac
}

# pair_rss: "SENDER_KIB,RECEIVER_KIB" peak RSS of the current pair: VmHWM, the kernel's
# high-water mark over each daemon's whole life (read before the pair is stopped).
pair_rss() {
  echo "$(vmhwm "${PAIR_PIDS[0]}"),$(vmhwm "${PAIR_PIDS[1]}")"
}

# stop_pair: stops the current pair and deletes its homes and folders (unless BENCH_KEEP=1).
stop_pair() {
  local pid keep=() p
  stop_monitor
  for pid in "${PAIR_PIDS[@]}"; do
    stop_pid "$pid"
  done
  for p in "${ALL_PIDS[@]}"; do
    case " ${PAIR_PIDS[*]} " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  ALL_PIDS=("${keep[@]}")
  PAIR_PIDS=()
  if [ "${BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$PAIR_DIR"
  fi
}

# verify_pair: "ok" if the receiver's folder equals the sender's (content compared), else
# "MISMATCH" (details on stderr).
verify_pair() {
  local out
  if out=$(diff -rq -x .stfolder -x '.cairn-tmp.*' -x '.syncthing.*.tmp' "$SENDER_DIR" "$RECEIVER_DIR" 2>&1); then
    echo ok
  else
    log "  receiver differs from sender:"
    printf '%s\n' "$out" | head -n 10 >&2
    echo MISMATCH
  fi
}
