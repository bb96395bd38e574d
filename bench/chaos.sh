#!/usr/bin/env bash
# Chaos soak: the randomized three-device test (tests/tests/chaos.rs: edits of every kind,
# kill -9 and restarts, dropped connections) run for many seeds and longer change phases.
# Run by hand, not in CI.
#
#   bench/chaos.sh SEEDS MINUTES      seeds 1..SEEDS, each with MINUTES of changes
#   bench/chaos.sh 20 5               e.g. 20 seeds x 5 minutes (about 2 hours)
#   CHAOS_FIRST_SEED=11 bench/chaos.sh 10 3    seeds 11..20
#
# Builds the test once (debug, as CI runs it), then runs it once per seed with
# CHAOS_SEED=<seed> CHAOS_SECS=<MINUTES*60>, one after the other. Every other CHAOS_*
# setting (CHAOS_OPS_PER_SEC, CHAOS_KILLS_PER_MIN, CHAOS_CONVERGE_SECS, CHAOS_VERBOSE) is
# passed through. Each seed's whole output goes to bench/results/chaos-DATE/seed-<n>.log;
# its summary line (`chaos seed=... converge_s=...`) is printed as it finishes, and a
# totals line at the end: seeds run, seeds failed, total lost, torn and temp files left,
# median and worst seconds to converge. A failing seed is printed with how to rerun it.
# Exit status: 1 if any seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ $# -ne 2 ] || ! [[ $1 =~ ^[0-9]+$ ]] || ! [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "usage: bench/chaos.sh SEEDS MINUTES" >&2
  exit 2
fi
SEEDS=$1
MINUTES=$2
SECS=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
[ "$SECS" -ge 1 ] || { echo "MINUTES must be > 0" >&2; exit 2; }
CONVERGE=${CHAOS_CONVERGE_SECS:-30}
# Startup, the converge wait and the checks come on top of the change phase.
PER_SEED_TIMEOUT=$((SECS + CONVERGE + 300))

OUT=$ROOT/bench/results/chaos-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

# Build once: the test binary and the daemons it runs.
BUILD_LOG=$OUT/build.log
if ! cargo test -p cairn-tests --test chaos --no-run >"$BUILD_LOG" 2>&1; then
  tail -30 "$BUILD_LOG" >&2
  exit 1
fi
cargo build --quiet --bins -p cairn-cli -p cairn-daemon -p cairn-desktop >>"$BUILD_LOG" 2>&1
TEST_BIN=$(sed -n 's/.*Executable tests\/chaos\.rs (\(.*\))$/\1/p' "$BUILD_LOG" | tail -1)
case $TEST_BIN in /*) ;; ?*) TEST_BIN=$ROOT/$TEST_BIN ;; esac
if [ -z "$TEST_BIN" ] || [ ! -x "$TEST_BIN" ]; then
  echo "cannot find the chaos test binary in $BUILD_LOG" >&2
  exit 1
fi

echo "chaos: $SEEDS seeds x ${SECS}s of changes; logs in ${OUT#"$ROOT"/}"
run=0
failed=0
lost=0
torn=0
temp=0
converge_list=()
failing=()
FIRST=${CHAOS_FIRST_SEED:-1}
for seed in $(seq "$FIRST" $((FIRST + SEEDS - 1))); do
  log=$OUT/seed-$seed.log
  status=0
  # cargo runs test binaries from the package directory; so do we.
  (cd "$ROOT/tests" && CHAOS_SEED=$seed CHAOS_SECS=$SECS CHAOS_CONVERGE_SECS=$CONVERGE \
    timeout --kill-after=10 "$PER_SEED_TIMEOUT" "$TEST_BIN" --exact \
    chaos_nothing_lost_nothing_torn_no_temp_files_and_converged --nocapture) \
    >"$log" 2>&1 || status=$?
  run=$((run + 1))
  line=$(grep -E '^chaos seed=[0-9]+ secs=' "$log" | tail -1 || true)
  if [ -z "$line" ]; then
    line="chaos seed=$seed (no summary line; exit status $status)"
  fi
  echo "$line"
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  lost=$((lost + $(field lost | grep -E '^[0-9]+$' || echo 0)))
  torn=$((torn + $(field torn | grep -E '^[0-9]+$' || echo 0)))
  temp=$((temp + $(field temp_left | grep -E '^[0-9]+$' || echo 0)))
  cs=$(field converge_s)
  [ -n "$cs" ] && converge_list+=("$cs")
  if [ "$status" -ne 0 ]; then
    failed=$((failed + 1))
    failing+=("$seed")
    echo "  FAILED (exit $status), log: ${log#"$ROOT"/}"
    echo "  rerun: CHAOS_SEED=$seed CHAOS_SECS=$SECS cargo test -p cairn-tests --test chaos -- --nocapture"
  fi
done

median=-
worst=-
if [ ${#converge_list[@]} -gt 0 ]; then
  sorted=$(printf '%s\n' "${converge_list[@]}" | sort -g)
  median=$(awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$sorted")
  worst=$(tail -1 <<<"$sorted")
fi
echo "chaos totals: seeds=$run failed=$failed lost=$lost torn=$torn temp_left=$temp converge_median_s=$median converge_worst_s=$worst${failing:+ failing_seeds=$(IFS=,; echo "${failing[*]}")}" \
  | tee "$OUT/totals.txt"
[ "$failed" -eq 0 ]
