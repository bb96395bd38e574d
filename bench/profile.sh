#!/usr/bin/env bash
# Where the CPU of a bulk sync goes, on both sides (issue #16): two real cairnd on
# loopback; a writes BENCH_PROFILE_MIB MiB (default 1024) as 4 files, which b pulls, while
# `perf record` samples each daemon (cpu-clock, user and kernel). Reports each side's CPU
# seconds (utime + stime from /proc) and its hottest symbols, then the same grouped by
# kind of work (hashing, encryption, copies, syscalls and kernel, ...), so two builds
# can be compared. Needs perf (apt-get install linux-perf) and root for kernel symbols.
# Usage: bench/profile.sh   (BENCH_NO_BUILD=1, BENCH_CAIRND, BENCH_PROFILE_MIB)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
MIB=${BENCH_PROFILE_MIB:-1024}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
KEEPING_NAME=profile KEEPING_PORT_BASE=27500
# shellcheck source=bench/keeping_pair.sh
. "$BENCH/keeping_pair.sh"
[ "$(id -u)" = 0 ] && echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true

pid_a=${ALL_PIDS[-2]} pid_b=${ALL_PIDS[-1]}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
python3 - "$WORK/src" "$MIB" <<'EOF'
import os, random, sys
out, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
rng = random.Random(16)
for i in range(4):
    with open(os.path.join(out, f"large{i}.bin"), "wb") as f:
        for _ in range(mib // 4):
            f.write(rng.randbytes(1 << 20))
EOF
sync
ca0=$(cpu "$pid_a") cb0=$(cpu "$pid_b")
perf record -q -e cpu-clock -F 499 -p "$pid_a" -o "$WORK/a.data" 2>"$WORK/a.perf.log" &
perf_a=$!
perf record -q -e cpu-clock -F 499 -p "$pid_b" -o "$WORK/b.data" 2>"$WORK/b.perf.log" &
perf_b=$!
sleep 1
t0=$(date +%s.%N)
for f in "$WORK"/src/*.bin; do mv "$f" "$SENDER_DIR/"; done
python3 - "$SENDER_DIR" "$RECEIVER_DIR" <<'EOF'
import os, sys, time
a, b = sys.argv[1:3]
want = {n: os.path.getsize(os.path.join(a, n)) for n in os.listdir(a) if n.endswith(".bin")}
deadline = time.monotonic() + 900
while time.monotonic() < deadline:
    have = {n: os.path.getsize(os.path.join(b, n)) for n in os.listdir(b) if n in want}
    if have == want:
        break
    time.sleep(0.05)
else:
    sys.exit("profile.sh: b did not get every file in 900 s")
EOF
t1=$(date +%s.%N)
sleep 2
kill -INT "$perf_a" "$perf_b"
wait "$perf_a" "$perf_b" || true
ca1=$(cpu "$pid_a") cb1=$(cpu "$pid_b")
{
  echo "cairn: $(git -C "$ROOT" rev-parse --short HEAD) ($CAIRND); ${MIB} MiB in 4 files, a -> b"
  awk -v t0="$t0" -v t1="$t1" -v a="$((ca1 - ca0))" -v b="$((cb1 - cb0))" -v hz="$ticks" 'BEGIN {
    printf "sync %.2f s; CPU a (sender) %.2f s, b (receiver) %.2f s, both %.2f s\n",
      t1 - t0, a / hz, b / hz, (a + b) / hz }'
  for side in a b; do
    echo
    echo "== $side: hottest symbols (share of its samples)"
    perf report -q -i "$WORK/$side.data" --sort dso,sym --percent-limit 0.8 2>/dev/null |
      sed -e 's/[[:space:]]\+$//' | head -n 30
    echo "== $side: by kind of work"
    perf report -q -i "$WORK/$side.data" --sort sym 2>/dev/null | python3 -c '
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
