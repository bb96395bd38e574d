#!/usr/bin/env bash
# Issue #15's rewind figures, with two real cairnd on loopback (a and b): a writes
# BENCH_REWIND_FILES files (default 10,000, 1-8 KiB, seeded) under tree/, b syncs them; at a
# moment T, a deletes tree/ (b keeps every file in its history). Then a, which kept none
# of them, rewinds the folder to T. Reports:
#   - the dry run's time and what it lists;
#   - the rewind: the command's time, the time until a's tree/ is back (sha256 of every
#     file) and then b's, and the chunk bytes a received (the files' own size beside it);
#   - the first sync of the same files, for scale.
# Usage: bench/rewind.sh   (BENCH_NO_BUILD=1, BENCH_CAIRND, BENCH_REWIND_FILES)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
FILES=${BENCH_REWIND_FILES:-10000}
KEEPING_NAME=rewind KEEPING_PORT_BASE=27400
# shellcheck source=bench/keeping_pair.sh
. "$BENCH/keeping_pair.sh"

python3 - "$SENDER_DIR" "$RECEIVER_DIR" "$PAIR_DIR/a-home" "$PAIR_DIR/b-home" "$CAIRN" "$FILES" "$OUT" <<'EOF'
import hashlib, os, random, subprocess, sys, time
sender, receiver, ahome, bhome, cairn, files, out = sys.argv[1:8]
files = int(files)
rng = random.Random(1515)
sys.path.insert(0, os.environ["BENCH"])
import keeping
from keeping import Report, metric
report = Report()
say = report.say
def digests(root):
    out = {}
    for d, _, names in os.walk(os.path.join(root, "tree")):
        for n in names:
            p = os.path.join(d, n)
            try:
                with open(p, "rb") as f:
                    out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                pass
    return out
def wait_until(check, what, limit=900):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    sys.exit(f"rewind.sh: {what} not within {limit} s")
def cli(home, *args):
    return keeping.cli(cairn, home, *args)

want = {}
staging = os.path.join(sender, ".rewind-staging")
os.makedirs(staging)
total = 0
for i in range(files):
    rel = f"tree/d{i // 500:03}/f{i:05}.bin"
    data = rng.randbytes(rng.randrange(1024, 8193))
    total += len(data)
    p = os.path.join(staging, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    want[rel] = hashlib.sha256(data).hexdigest()
t0 = time.monotonic()
os.rename(os.path.join(staging, "tree"), os.path.join(sender, "tree"))
os.rmdir(staging)
first = wait_until(lambda: digests(receiver) == want, "the first sync") - t0
say(f"{files} files, {total / 2**20:.1f} MiB: first sync {first:.2f} s")
time.sleep(2)
at = int(time.time())
time.sleep(2)
t = time.monotonic()
subprocess.run(["rm", "-rf", os.path.join(sender, "tree")], check=True)
wait_until(lambda: not os.path.exists(os.path.join(receiver, "tree")), "the delete on b")
say(f"tree/ deleted on a, gone on b after {time.monotonic() - t:.2f} s")
bstaging = os.path.join(bhome, "history")
wait_until(lambda: not os.path.isdir(bstaging) or not os.listdir(bstaging), "b's import")

t = time.monotonic()
dry = cli(ahome, "restore", "--folder", "shared", "--at", f"@{at}", "--dry-run")
dry_s = time.monotonic() - t
acts = {}
for s in dry["steps"]:
    acts[s["action"]] = acts.get(s["action"], 0) + 1
say(f"dry run on a: {dry_s:.2f} s, {acts}, {dry['bytes_to_fetch'] / 2**20:.1f} MiB to fetch, "
    f"every version held by a connected device: {all(s['available'] for s in dry['steps'])}")
got_before = metric(ahome, "cairn_bytes_received_total")
t = time.monotonic()
cli(ahome, "restore", "--folder", "shared", "--at", f"@{at}")
command = time.monotonic() - t
a_back = wait_until(lambda: digests(sender) == want, "a's tree back") - t
fetched = metric(ahome, "cairn_bytes_received_total") - got_before
b_back = wait_until(lambda: digests(receiver) == want, "b's tree back") - t
say(f"rewind on a (which kept none of them): command {command:.2f} s; a's {files} files back "
    f"(sha256 of each) after {a_back:.2f} s, b's after {b_back:.2f} s; a received "
    f"{fetched / 2**20:.1f} MiB of chunks for {total / 2**20:.1f} MiB of files "
    f"(first sync of the same files: {first:.2f} s)")
report.write(out)
EOF
log "results: $OUT"
