#!/usr/bin/env bash
# Where the CPU of a bulk sync goes, on both sides (issue #16): two real cairnd on
# loopback; a writes BENCH_PROFILE_MIB MiB (default 1024) as 4 files (or, with
# BENCH_PROFILE_SMALL=N, N files of 1-64 KiB in 100 directories, as sync.sh's small10k),
# which b pulls, while
# `perf record` samples each daemon (cpu-clock, user and kernel). Reports each side's CPU
# seconds (utime + stime from /proc) and its hottest symbols, then the same grouped by
# kind of work (hashing, encryption, copies, syscalls and kernel, ...), so two builds
# can be compared. Needs perf (apt-get install linux-perf) and root for kernel symbols.
# Usage: bench/profile.sh   (BENCH_NO_BUILD=1, BENCH_CAIRND, BENCH_PROFILE_MIB,
#   BENCH_PROFILE_SMALL)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
MIB=${BENCH_PROFILE_MIB:-1024}
SMALL=${BENCH_PROFILE_SMALL:-0}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
KEEPING_NAME=profile KEEPING_PORT_BASE=27500
# shellcheck source=bench/keeping_pair.sh
. "$BENCH/keeping_pair.sh"
[ "$(id -u)" = 0 ] && echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true

pid_a=${ALL_PIDS[-2]} pid_b=${ALL_PIDS[-1]}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks per thread name of process $1 (threads of one kind summed): name ticks.
threads() {
  for t in /proc/"$1"/task/*; do
    sed -e 's/^[0-9]* (\(.*\)) [A-Za-z] /\1\t/' "$t/stat" 2>/dev/null |
      awk -F'\t' '{split($2, f, " "); print $1 "\t" f[11] + f[12]}'
  done | awk -F'\t' '{sub(/[-_ ]?[0-9]+$/, "", $1); t[$1] += $2} END {for (n in t) print n "\t" t[n]}'
}
ticks=$(getconf CLK_TCK)
python3 - "$WORK/src" "$MIB" "$SMALL" <<'EOF'
import os, random, sys
out, mib, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out)
rng = random.Random(16)
if small:
    for i in range(small):
        d = os.path.join(out, f"small-{i % 100:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1 << 10, 64 << 10)))
else:
    for i in range(4):
        with open(os.path.join(out, f"large{i}.bin"), "wb") as f:
            for _ in range(mib // 4):
                f.write(rng.randbytes(1 << 20))
EOF
what=$([ "$SMALL" -gt 0 ] && echo "$SMALL files of 1-64 KiB" || echo "${MIB} MiB in 4 files")
sync
ca0=$(cpu "$pid_a") cb0=$(cpu "$pid_b")
threads "$pid_a" >"$WORK/a.threads0"; threads "$pid_b" >"$WORK/b.threads0"
# BENCH_PROFILE_GRAPH=1 records kernel call chains too (-g; cairnd has no frame pointers,
# so its own frames stop at the first Rust function); the data is kept in LOGDIR.
# BENCH_PROFILE_GRAPH=dwarf unwinds cairnd's own frames too (from .eh_frame; large data,
# so best with a smaller BENCH_PROFILE_MIB) and reports who calls the copies and memsets.
graph=()
[ "${BENCH_PROFILE_GRAPH:-0}" = 1 ] && graph=(-g)
[ "${BENCH_PROFILE_GRAPH:-0}" = dwarf ] && graph=(--call-graph dwarf,32768)
perf record -q -e cpu-clock "${graph[@]}" -F 499 -p "$pid_a" -o "$LOGDIR/a.data" 2>"$WORK/a.perf.log" &
perf_a=$!
perf record -q -e cpu-clock "${graph[@]}" -F 499 -p "$pid_b" -o "$LOGDIR/b.data" 2>"$WORK/b.perf.log" &
perf_b=$!
sleep 1
t0=$(date +%s.%N)
for f in "$WORK"/src/*; do mv "$f" "$SENDER_DIR/"; done
python3 - "$SENDER_DIR" "$RECEIVER_DIR" <<'EOF'
import os, sys, time
a, b = sys.argv[1:3]
def sizes(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".bin"):
                p = os.path.join(d, n)
                try:
                    out[os.path.relpath(p, root)] = os.path.getsize(p)
                except OSError:
                    pass
    return out
want = sizes(a)
deadline = time.monotonic() + 900
while time.monotonic() < deadline:
    if sizes(b) == want:
        break
    time.sleep(0.1)
else:
    sys.exit("profile.sh: b did not get every file in 900 s")
EOF
t1=$(date +%s.%N)
sleep 2
kill -INT "$perf_a" "$perf_b"
wait "$perf_a" "$perf_b" || true
ca1=$(cpu "$pid_a") cb1=$(cpu "$pid_b")
threads "$pid_a" >"$WORK/a.threads1"; threads "$pid_b" >"$WORK/b.threads1"
{
  echo "cairn: $(git -C "$ROOT" rev-parse --short HEAD) ($CAIRND); $what, a -> b"
  awk -v t0="$t0" -v t1="$t1" -v a="$((ca1 - ca0))" -v b="$((cb1 - cb0))" -v hz="$ticks" 'BEGIN {
    printf "sync %.2f s; CPU a (sender) %.2f s, b (receiver) %.2f s, both %.2f s\n",
      t1 - t0, a / hz, b / hz, (a + b) / hz }'
  for side in a b; do
    echo
    echo "== $side: hottest symbols (share of its samples)"
    perf report -q -i "$LOGDIR/$side.data" --no-children -g none --sort dso,sym --percent-limit 0.8 2>/dev/null |
      sed -e 's/[[:space:]]\+$//' | head -n 30
    if [ "${#graph[@]}" -gt 0 ]; then
      echo "== $side: system calls, with what the kernel did for them (share of its samples)"
      perf report -q -i "$LOGDIR/$side.data" --children -g none --sort sym 2>/dev/null |
        grep -E '__x64_sys_|ksys_' | head -n 12 || true
    fi
    if [ "${BENCH_PROFILE_GRAPH:-0}" = dwarf ]; then
      echo "== $side: callers of copies, memsets and page faults (share of its samples)"
      perf report -q -i "$LOGDIR/$side.data" --no-children -G --sort sym \
        --symbol-filter=memmove --percent-limit 0.5 2>/dev/null | head -n 60 || true
      perf report -q -i "$LOGDIR/$side.data" --no-children -G --sort sym \
        --symbol-filter=memset --percent-limit 0.5 2>/dev/null | head -n 40 || true
    fi
    echo "== $side: CPU seconds by thread (threads of one name summed; threads that ended"
    echo "   during the run are missing)"
    awk -F'\t' -v hz="$ticks" 'NR == FNR {t0[$1] = $2; next} {d = ($2 - t0[$1]) / hz; if (d > 0.005) printf "  %6.2f  %s\n", d, $1}' \
      "$WORK/$side.threads0" "$WORK/$side.threads1" | sort -rn | head -n 12
    echo "== $side: by kind of work"
    perf report -q -i "$LOGDIR/$side.data" --no-children -g none --sort sym 2>/dev/null | python3 -c '
import re, sys
kinds = [("hashing (blake3)", r"blake3"), ("encryption (chacha/poly/aes/ring)", r"chacha|poly1305|aes|gcm|ring_core|cipher"),
         ("delta (md4/rsync)", r"md4|rsync|rolling"), ("memcpy/memmove", r"memcpy|memmove|memset"),
         ("kernel", r"\[k\]"), ("allocation", r"malloc|free|realloc|alloc::"),
         ("redb/automerge", r"redb|automerge"), ("yamux/noise/quic framing", r"yamux|noise|quinn|snow")]
tot = {k: 0.0 for k, _ in kinds}; other = 0.0
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
    if not m: continue
    pct, sym = float(m.group(1)), m.group(2)
    for k, rx in kinds:
        if re.search(rx, sym, re.I):
            tot[k] += pct; break
    else:
        other += pct
for k, _ in kinds:
    print(f"  {k:36} {tot[k]:5.1f}%")
print("  %-36s %5.1f%%" % ("other", other))'
  done
} | tee "$OUT"
log "results: $OUT"
