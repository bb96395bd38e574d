#!/usr/bin/env bash
# Issue #16's database figure, with two real cairnd on loopback (sender a, receiver b): a
# seeded SQLite database of about BENCH_DB_MIB MiB (default 100; 4 KiB pages, an indexed
# table, rollback journal) reaches b; then BENCH_ROUNDS times (default 3) one transaction
# of 1,000 inserts and 200 updates is committed to a's copy in place, as an application
# would, and reaches b. For each round it reports, side by side:
#   - cairn's bytes on the wire: TCP payload of the pair's connections both ways (ss), and
#     what cairn counted (chunks and deltas received, signatures sent, folder metadata);
#   - rsync's bytes for the same change (`rsync --no-whole-file --stats`, sent + received,
#     from the new database to a copy of the old one, locally);
#   - the bytes of the 4 KiB pages that differ between the old and the new database;
#   - the time from the commit until b's copy is identical (sha256).
# Targets: cairn's TCP bytes <= rsync's, and <= 2x the changed pages.
# Usage: bench/sqlite.sh   (BENCH_NO_BUILD=1, BENCH_CAIRND, BENCH_DB_MIB, BENCH_ROUNDS,
#                           BENCH_SEED)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
DB_MIB=${BENCH_DB_MIB:-100}
ROUNDS=${BENCH_ROUNDS:-3}
SEED=${BENCH_SEED:-16}
command -v rsync >/dev/null || { echo "sqlite.sh: needs rsync (apt-get install rsync)" >&2; exit 1; }
KEEPING_NAME=sqlite KEEPING_PORT_BASE=27400
# shellcheck source=bench/keeping_pair.sh
. "$BENCH/keeping_pair.sh"

python3 - "$SENDER_DIR" "$RECEIVER_DIR" "$PAIR_DIR/a-home" "$PAIR_DIR/b-home" "$WORK" \
  "$DB_MIB" "$ROUNDS" "$SEED" "$OUT" "$pa" "$pb" <<'EOF'
import os, random, shutil, sqlite3, subprocess, sys, time
sender, receiver, ahome, bhome, work, db_mib, rounds, seed, out, pa, pb = sys.argv[1:12]
db_mib, rounds, seed = int(db_mib), int(rounds), int(seed)
PAGE = 4096
sys.path.insert(0, os.environ["BENCH"])
from keeping import Report, digest, metrics
from sync_helper import rsync_stat, tcp_snapshot
report = Report()
say = report.say
def wait_same(src, dst, limit=600):
    want = digest(src)
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if digest(dst) == want:
            return time.monotonic()
        time.sleep(0.05)
    sys.exit(f"sqlite.sh: {dst} did not become {src} within {limit} s")
def tcp_bytes():
    """Payload bytes both ways between the two daemons so far (sync_helper.tcp_snapshot:
    every established socket with an end on a's or b's port)."""
    return sum(tcp_snapshot([pa, pb]).values())
def counted():
    b, a = metrics(bhome), metrics(ahome)
    return {"chunks+deltas": b.get("cairn_bytes_received_total", 0),
            "signatures": b.get("cairn_delta_signature_bytes_total", 0),
            "metadata": a.get("cairn_meta_bytes_sent_total", 0)
            + b.get("cairn_meta_bytes_sent_total", 0),
            "deltas": b.get("cairn_delta_chunks_total", 0)}
def rsync_bytes(old, new):
    dst = os.path.join(work, "rsync")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    shutil.copyfile(old, os.path.join(dst, "app.db"))
    r = subprocess.run(["rsync", "-a", "--no-whole-file", "--stats", new,
                        os.path.join(dst, "app.db")], capture_output=True, text=True, check=True)
    return rsync_stat(r.stdout, "Total bytes sent") + rsync_stat(r.stdout, "Total bytes received")
def changed_pages(old, new):
    n = 0
    with open(old, "rb") as f, open(new, "rb") as g:
        while True:
            x, y = f.read(PAGE), g.read(PAGE)
            if not x and not y:
                return n
            n += x != y

rng = random.Random(seed)
gen = os.path.join(work, "gen.db")
con = sqlite3.connect(gen)
con.execute("PRAGMA page_size = 4096")
con.execute("PRAGMA journal_mode = DELETE")
con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, owner INTEGER, "
            "updated INTEGER, body BLOB)")
con.execute("CREATE INDEX items_name ON items(name)")
con.execute("CREATE INDEX items_owner ON items(owner, updated)")
def row():
    return (f"item-{rng.getrandbits(48):012x}", rng.randrange(10_000), rng.getrandbits(40),
            rng.randbytes(rng.randrange(100, 300)))
rows = 0
while os.path.getsize(gen) < db_mib << 20:
    con.executemany("INSERT INTO items (name, owner, updated, body) VALUES (?, ?, ?, ?)",
                    [row() for _ in range(10_000)])
    con.commit()
    rows += 10_000
con.close()
src, dst = os.path.join(sender, "app.db"), os.path.join(receiver, "app.db")
t0 = time.monotonic()
os.rename(gen, src)
first = wait_same(src, dst) - t0
size = os.path.getsize(src)
say(f"database: {size / 2**20:.1f} MiB, {rows:,} rows, seed {seed}; first sync {first:.2f} s")
old = os.path.join(work, "old.db")
ratios = []
for r in range(rounds):
    time.sleep(2)  # let both sides settle
    shutil.copyfile(src, old)
    before_tcp, before = tcp_bytes(), counted()
    con = sqlite3.connect(src)
    ids = [i for (i,) in con.execute("SELECT id FROM items")]
    t = time.monotonic()
    with con:
        con.executemany("INSERT INTO items (name, owner, updated, body) VALUES (?, ?, ?, ?)",
                        [row() for _ in range(1000)])
        for i in rng.sample(ids, 200):
            con.execute("UPDATE items SET updated = ?, body = ? WHERE id = ?",
                        (rng.getrandbits(40), rng.randbytes(rng.randrange(100, 300)), i))
    con.close()
    took = wait_same(src, dst) - t
    time.sleep(2)  # answers in flight are counted too
    tcp, after = tcp_bytes() - before_tcp, counted()
    tool = {k: after[k] - before[k] for k in after}
    pages = changed_pages(old, src) * PAGE
    rs = rsync_bytes(old, src)
    ratios.append((tcp / rs, tcp / pages))
    say(f"round {r + 1}: 1,000 inserts + 200 updates in one transaction: reached b in "
        f"{took:.2f} s")
    say(f"  changed pages {pages:,} B ({pages // PAGE} pages); rsync {rs:,} B; "
        f"cairn TCP {tcp:,} B = {tcp / rs:.2f}x rsync, {tcp / pages:.2f}x the pages")
    say("  cairn counted: " + ", ".join(f"{k} {v:,.0f}" for k, v in tool.items()))
worst = (max(r[0] for r in ratios), max(r[1] for r in ratios))
say(f"worst round: cairn/rsync {worst[0]:.2f} (target <= 1: "
    f"{'PASS' if worst[0] <= 1 else 'FAIL'}), cairn/pages {worst[1]:.2f} (target <= 2: "
    f"{'PASS' if worst[1] <= 2 else 'FAIL'})")
report.write(out)
EOF
log "results: $OUT"
