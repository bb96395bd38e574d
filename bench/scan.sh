#!/usr/bin/env bash
# Scan benchmark: cairn's first scan and unchanged rescan against b3sum, side by side.
#
#   bench/scan.sh [DATA_DIR]        (default bench/data; needs ~1.7 GB free)
#
# b3sum --num-threads 2 is the hashing ceiling of this 2-core machine: it reads and hashes
# every byte with BLAKE3 and nothing else. cairn must also cut chunks, build manifests and
# write its index. Each figure is the median of RUNS runs with a warm page cache; wall time
# and peak RSS come from /usr/bin/time. If the page cache can be dropped (root), a cold-cache
# first scan is measured as well.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench/data}
RUNS=${RUNS:-3}
OUT=bench/results
mkdir -p "$OUT"

command -v b3sum >/dev/null || cargo install b3sum --locked --quiet
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --quiet -p cairn-cli
CAIRN=$PWD/target/release/cairn

python3 bench/gen_data.py "$DATA"
# The same 1 GiB as one file: a single large file must use both cores too.
if [ ! -f "$DATA/one/one.bin" ]; then
  mkdir -p "$DATA/one"
  cat $(find "$DATA/large" -type f | sort) > "$DATA/one/one.bin"
fi
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT

# measure NAME CMD...: runs CMD RUNS times, prints "median_seconds max_rss_mib".
measure() {
  local times=() rss=0
  for _ in $(seq "$RUNS"); do
    [ -n "${BEFORE:-}" ] && eval "$BEFORE"
    /usr/bin/time -f "%e %M" -o "$STATE/time" "$@" >/dev/null
    read -r t m <"$STATE/time"
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  local med
  med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  echo "$med $((rss / 1024))"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; }

large_files=$(find "$DATA/large" -type f | sort)
small_list="$STATE/small.list"
find "$DATA/small" -type f -name '*.dat' | sort > "$small_list"

# Warm the page cache.
cat $large_files "$DATA/one/one.bin" > /dev/null
xargs -a "$small_list" cat > /dev/null

report() { printf '%-44s %8s s %8s MiB\n' "$1" "$2" "$3"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date: $(date -u +%FT%TZ)  cairn: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo

read -r b3_large _ < <(measure b3sum --num-threads 2 $large_files)
read -r cairn_large rss_large < <(BEFORE="rm -rf $STATE/home-large" measure env CAIRN_HOME="$STATE/home-large" "$CAIRN" scan --json "$DATA/large")
report "b3sum --num-threads 2, 1 GiB (4 files)" "$b3_large" "-"
report "cairn scan, first, 1 GiB (4 files)" "$cairn_large" "$rss_large"
echo "  ratio to b3sum: $(echo "scale=2; $cairn_large / $b3_large" | bc)x (target <= 1.5x)"

read -r b3_one _ < <(measure b3sum --num-threads 2 "$DATA/one/one.bin")
read -r cairn_one rss_one < <(BEFORE="rm -rf $STATE/home-one" measure env CAIRN_HOME="$STATE/home-one" "$CAIRN" scan --json "$DATA/one")
report "b3sum --num-threads 2, 1 GiB (1 file)" "$b3_one" "-"
report "cairn scan, first, 1 GiB (1 file)" "$cairn_one" "$rss_one"
echo "  ratio to b3sum: $(echo "scale=2; $cairn_one / $b3_one" | bc)x"

read -r b3_small _ < <(measure xargs -a "$small_list" b3sum --num-threads 2)
read -r cairn_small rss_small < <(BEFORE="rm -rf $STATE/home-small" measure env CAIRN_HOME="$STATE/home-small" "$CAIRN" scan --json "$DATA/small")
report "b3sum --num-threads 2, 20,000 files" "$b3_small" "-"
report "cairn scan, first, 20,000 files" "$cairn_small" "$rss_small"
echo "  ratio to b3sum: $(echo "scale=2; $cairn_small / $b3_small" | bc)x"

read -r rescan rss_rescan < <(measure env CAIRN_HOME="$STATE/home-small" "$CAIRN" scan --json "$DATA/small")
report "cairn scan, unchanged rescan, 20,000 files" "$rescan" "$rss_rescan"
echo "  target: < 0.3 s"

if drop_caches && [ "$(id -u)" = 0 ]; then
  read -r b3_cold _ < <(BEFORE=drop_caches measure b3sum --num-threads 2 $large_files)
  read -r cairn_cold rss_cold < <(BEFORE="rm -rf $STATE/home-cold; drop_caches" measure env CAIRN_HOME="$STATE/home-cold" "$CAIRN" scan --json "$DATA/large")
  report "b3sum, cold cache, 1 GiB" "$b3_cold" "-"
  report "cairn scan, first, cold cache, 1 GiB" "$cairn_cold" "$rss_cold"
  echo "  ratio to b3sum: $(echo "scale=2; $cairn_cold / $b3_cold" | bc)x"
fi
echo
echo "peak memory of any scan: $(printf '%s\n' "$rss_large" "$rss_one" "$rss_small" "$rss_rescan" | sort -n | tail -1) MiB (target < 100 MiB)"

# The floor under a first scan: what one core needs to cut and hash each byte (FastCDC, then
# BLAKE3 per chunk), beside BLAKE3 over whole buffers as b3sum does it. Set BENCH_FLOOR=0 to skip.
if [ "${BENCH_FLOOR:-1}" = 1 ]; then
  echo
  echo "per-core cost (cargo bench -p cairn-core --bench chunking):"
  cargo bench --quiet -p cairn-core --bench chunking 2>/dev/null \
    | awk '/^one core/ {name=$0} /thrpt:/ && name != "" {print "  " name ": " $4 " " $5; name=""}'
fi
