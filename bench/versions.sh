#!/usr/bin/env bash
# Issue #15's version-store figures, with two real cairnd on loopback (sender a, receiver b):
# a writes a 256 MiB file, then edits it BENCH_VERSIONS times (default 100), each edit a few
# small in-place writes (3 x 64 bytes at seeded offsets); every edit reaches b, which keeps
# the version it replaces. Reports:
#   - the first sync of the file (s) and each edit's sync (median, max): keeping a version
#     is on b's pull path, so this is what keeping costs the user;
#   - the staged copies' peak on b (whole files until imported), sampled every 0.5 s;
#   - the store's disk use once every staged version is imported (HOME/versions plus
#     HOME/history), against the file's size (target < 1.2x; whole copies would be
#     BENCH_VERSIONS x) and how long the import took after the last edit;
#   - restores on a, which made every edit itself and so kept no version: the first
#     version after a deleted the file (every byte comes from b's store), then the second
#     while a has the first (only what differs travels): from the command until a has it
#     (s; every "until" here is the instant a stat saw the complete file in place, its
#     sha256 checked afterwards), the chunk bytes a received, beside the first sync
#     (target: at least its speed);
#     the CPU seconds each daemon used during the first sync and the first restore (b
#     both serves a and writes its own copy of the restored file);
#   - a restore on b of the third version from b's own store (s);
#   - BENCH_RESTORE_ROUNDS (default 5) paired rounds, each a first sync of a fresh file of
#     the same size beside a restore of the oldest version on a from b, and their ratios'
#     median (the target's figure: each pair is run seconds apart).
# BENCH_PERF=1 samples both daemons with perf during the first restore
# (LOGDIR/restore-{a,b}.perf.data; `perf report -i ...`).
# Usage: bench/versions.sh   (BENCH_NO_BUILD=1, BENCH_CAIRND, BENCH_VERSIONS, BENCH_SIZE_MIB,
#   BENCH_PERF, BENCH_RESTORE_ROUNDS)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
VERSIONS=${BENCH_VERSIONS:-100}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
KEEPING_NAME=versions KEEPING_PORT_BASE=27300
# shellcheck source=bench/keeping_pair.sh
. "$BENCH/keeping_pair.sh"

LOGDIR=$LOGDIR python3 - "$SENDER_DIR" "$RECEIVER_DIR" "$PAIR_DIR/b-home" "$CAIRN" "$VERSIONS" "$SIZE_MIB" "$OUT" "$PAIR_DIR/a-home" "${ALL_PIDS[-2]}" "${ALL_PIDS[-1]}" <<'EOF'
import hashlib, os, random, statistics, sys, time
sender, receiver, bhome, cairn, versions, size_mib, out, ahome, apid, bpid = sys.argv[1:11]
versions, size = int(versions), int(size_mib) << 20
rng = random.Random(15)
sys.path.insert(0, os.environ["BENCH"])
import keeping
from keeping import Report, cpu_s, digest, du, metric
def cpu():
    """CPU seconds a and b have used so far."""
    return cpu_s(apid), cpu_s(bpid)
def cpu_since(before):
    (a0, b0), (a1, b1) = before, cpu()
    return f"CPU s a {a1 - a0:.2f}, b {b1 - b0:.2f}"
report = Report()
say = report.say
def wait_for(path, want, limit=600):
    """When `path` got the content `want`: the instant a stat (every 5 ms) first saw the
    file that has it in place (the pull renames a complete file in), its sha256 checked
    afterwards, so the ~0.35 s the check takes is not counted."""
    start, seen = time.monotonic(), None
    while time.monotonic() - start < limit:
        try:
            st = os.stat(path)
            at = time.monotonic()
        except OSError:
            st = None
        if st is not None and st.st_size == size:
            ident = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            if ident != seen:
                seen = ident
                if digest(path) == want:
                    return at
        time.sleep(0.005)
    sys.exit(f"versions.sh: {path} did not reach the expected content within {limit} s")
def cli(*args, home=None):
    return keeping.cli(cairn, home or bhome, *args)

data = bytearray(b"".join(rng.randbytes(1 << 20) for _ in range(size >> 20)))
first_digest = hashlib.sha256(data).hexdigest()
src, dst = os.path.join(sender, "big.bin"), os.path.join(receiver, "big.bin")
tmp = os.path.join(sender, ".big.tmp")
with open(tmp, "wb") as f:
    f.write(data)
c0 = cpu()
os.rename(tmp, src)
t0 = time.monotonic()
first = wait_for(dst, hashlib.sha256(data).hexdigest()) - t0
say(f"first sync of {size_mib} MiB: {first:.2f} s ({cpu_since(c0)})")

def replaced(path, inode, limit=600):
    """When the pull renamed a new file over `path` (its inode changed)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            if os.stat(path).st_ino != inode:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.005)
    sys.exit(f"versions.sh: {path} was not replaced within {limit} s")

# The staged copies' peak (a staged version is a whole file until imported), sampled.
import threading
peak = [0]
sampling = threading.Event()
def sample_staging():
    while not sampling.is_set():
        peak[0] = max(peak[0], du(os.path.join(bhome, "history")))
        time.sleep(0.5)
sampler = threading.Thread(target=sample_staging, daemon=True)
sampler.start()
edits = []
for i in range(versions):
    patches = [(rng.randrange(0, size - 64), rng.randbytes(64)) for _ in range(3)]
    for at, patch in patches:
        data[at:at + 64] = patch
    want = hashlib.sha256(data).hexdigest()
    inode = os.stat(dst).st_ino
    # Timed from the edit to the new file's rename into place on b; checked afterwards.
    with open(src, "r+b") as f:
        for at, patch in patches:
            f.seek(at)
            f.write(patch)
    t = time.monotonic()
    edits.append(replaced(dst, inode) - t)
    if digest(dst) != want:
        wait_for(dst, want, 60)
say(f"{versions} edits (3 x 64 bytes each): sync median {statistics.median(edits):.3f} s, "
    f"max {max(edits):.3f} s")

staging, store = os.path.join(bhome, "history"), os.path.join(bhome, "versions")
t = time.monotonic()
while time.monotonic() - t < 600:
    if not os.path.isdir(staging) or not os.listdir(staging):
        break
    time.sleep(0.1)
imported = time.monotonic() - t
sampling.set()
sampler.join()
say(f"staged copies on b at their peak: {peak[0] / 2**20:.1f} MiB ({peak[0] / size:.2f}x the file)")
hist = cli("history", "big.bin")
rows = hist if isinstance(hist, list) else hist.get("versions", [])
used = du(store, staging)
say(f"kept versions listed on b: {len(rows)}; staged left: "
    f"{len(os.listdir(staging)) if os.path.isdir(staging) else 0} "
    f"(import finished {imported:.1f} s after the last edit arrived)")
say(f"store on disk: {used / 2**20:.1f} MiB = {used / size:.3f}x the file "
    f"(target < 1.2x; whole copies: {len(rows)}x)")

rows = sorted((r for r in rows if r.get("available")), key=lambda v: v.get("made_ns", 0))
oldest, second, third = rows[0]["content"], rows[1]["content"], rows[2]["content"]
a_file = os.path.join(sender, "big.bin")
def restore_on_a(version, want_digest, what):
    listed = {r["content"]: r for r in cli("history", "big.bin", home=ahome)}
    held = listed.get(version, {})
    before = metric(ahome, "cairn_bytes_received_total")
    # BENCH_PERF=1: perf samples both daemons during the restore (reports in LOGDIR).
    perf = []
    if os.environ.get("BENCH_PERF") == "1":
        import signal, subprocess
        for side, pid in (("a", apid), ("b", bpid)):
            data = os.path.join(os.environ["LOGDIR"], f"restore-{side}.perf.data")
            perf.append((data, subprocess.Popen(
                ["perf", "record", "-q", "-F", "1999", "-p", pid, "-o", data],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        time.sleep(0.5)
    c0 = cpu()
    t = time.monotonic()
    cli("restore", "big.bin", "--version", version, home=ahome)
    wait_for(a_file, want_digest)
    took = time.monotonic() - t
    used = cpu_since(c0)
    for data, p in perf:
        p.send_signal(signal.SIGINT)
        p.wait()
    got = metric(ahome, "cairn_bytes_received_total") - before
    holders = ", ".join(h["name"] for h in held.get("holders", []))
    say(f"restore on a from b ({what}; held by: {holders}; a holds it: "
        f"{held.get('available')}): {took:.2f} s ({used}; b also writes its own copy), "
        f"{got / 2**20:.1f} MiB of chunks received "
        f"(first sync of the same file: {first:.2f} s; ratio {took / first:.2f})")
# From a peer, every byte: a deletes the file (a keeps nothing of its own changes; b keeps
# the last version), then restores the first version, which only b holds.
os.remove(a_file)
start = time.monotonic()
while os.path.exists(dst) and time.monotonic() - start < 120:
    time.sleep(0.05)
restore_on_a(oldest, first_digest, "no chunk of it on a")
# Paired rounds: a first sync of a fresh file of the same size (new bytes, written on a),
# then a restore on a of the oldest version, which only b holds (a deletes the file first),
# one right after the other, so each ratio compares two runs seconds apart on this noisy
# machine rather than the one first sync at the start. They run before a keeps any
# version of its own (a restores every byte from b, checked), and each starts once b has
# its own copy of the last restore, so no round's work spills into the next.
rounds = int(os.environ.get("BENCH_RESTORE_ROUNDS", "5"))
paired = []
for r in range(rounds):
    wait_for(dst, first_digest)
    fresh = b"".join(rng.randbytes(1 << 20) for _ in range(size >> 20))
    want = hashlib.sha256(fresh).hexdigest()
    name = f"fresh-{r}.bin"
    tmp = os.path.join(sender, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(fresh)
    del fresh
    c0 = cpu()
    os.rename(tmp, os.path.join(sender, name))
    t = time.monotonic()
    synced = wait_for(os.path.join(receiver, name), want) - t
    sync_cpu = cpu_since(c0)
    os.remove(a_file)
    start = time.monotonic()
    while os.path.exists(dst) and time.monotonic() - start < 120:
        time.sleep(0.05)
    time.sleep(0.5)  # b's pull that removed it ends (it keeps the version) before the clock
    c0 = cpu()
    before = metric(ahome, "cairn_bytes_received_total")
    t = time.monotonic()
    cli("restore", "big.bin", "--version", oldest, home=ahome)
    restored = wait_for(a_file, first_digest) - t
    restore_cpu = cpu_since(c0)
    got = metric(ahome, "cairn_bytes_received_total") - before
    if got < size * 0.99:
        sys.exit(f"versions.sh: round {r + 1}'s restore received only {got} bytes from b")
    wait_for(dst, first_digest)
    paired.append((synced, restored))
    say(f"round {r + 1}: first sync of a fresh {size_mib} MiB file {synced:.2f} s "
        f"({sync_cpu}); restore on a from b {restored:.2f} s ({restore_cpu}, "
        f"{got / 2**20:.1f} MiB received); "
        f"ratio {restored / synced:.2f}")
if paired:
    ratios = sorted(b / a for a, b in paired)
    say(f"paired rounds: {rounds}; restore / first sync median {statistics.median(ratios):.2f} "
        f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}; target <= 1)")
# From a peer, what differs: the second version, while a has the first (they share all
# but a few chunks).
wait_for(dst, first_digest)
before = metric(ahome, "cairn_bytes_received_total")
deltas = metric(ahome, "cairn_delta_chunks_total")
inode = os.stat(a_file).st_ino
t = time.monotonic()
cli("restore", "big.bin", "--version", second, home=ahome)
took = replaced(a_file, inode) - t
if digest(a_file) == first_digest:
    sys.exit("versions.sh: the second version's restore left the first in place")
got = metric(ahome, "cairn_bytes_received_total") - before
deltas = metric(ahome, "cairn_delta_chunks_total") - deltas
say(f"restore on a from b (the second version while a has the first): {took:.2f} s, "
    f"{got / 2**20:.1f} MiB of whole chunks and {deltas:.0f} chunks as deltas received")
# From the device's own store: b restores the third.
start = time.monotonic()
while digest(dst) != digest(a_file) and time.monotonic() - start < 600:
    time.sleep(0.05)
t = time.monotonic()
cli("restore", "big.bin", "--version", third)
restore = time.monotonic() - t
say(f"restore of the third version on b (its own store): {restore:.2f} s "
    f"(first sync of the same file: {first:.2f} s)")
report.write(out)
EOF
log "results: $OUT"
