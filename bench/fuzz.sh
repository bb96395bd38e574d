#!/usr/bin/env bash
# Fuzz cairn-core's decoders with AFL++ on the stable toolchain (issue #12, "hostile peers").
#
#   bench/fuzz.sh MINUTES [TARGET...]   fuzz each target (default: all) for MINUTES
#   bench/fuzz.sh --corpus              rewrite core/fuzz/corpus/ from the seeds
#   bench/fuzz.sh --list                name the targets
#
# The targets are `cairn_core::fuzz_targets` (core/src/fuzz_targets.rs); the harness is
# core/fuzz (not a workspace member). Installs cargo-afl and builds AFL++ if missing, builds
# with `cargo afl build --release` (debug assertions and overflow checks on), runs
# `cargo afl fuzz -V` per target, one after the other, at low priority. Each run starts from
# the committed corpus plus the queue the previous run left in core/fuzz/out/TARGET/, so runs
# add up. Prints per target: executions, executions per second, corpus size, crashes and
# hangs; copies crash inputs to core/fuzz/crashes/TARGET/ (the smoke test
# core/tests/fuzz_smoke.rs replays them: give each a named regression test there) and hangs
# to core/fuzz/hangs/TARGET/. Exits 1 if anything crashed or hung.
#
# Environment: FUZZ_MEMORY_MB (default 1024: a larger allocation is a crash),
# FUZZ_TIMEOUT_MS (default 1000: a slower input is a hang), NICE (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/core/fuzz
BIN=$FUZZ/target/release/cairn-fuzz
NICE=${NICE:-15}

usage() {
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage

ensure_afl() {
    if ! cargo afl --version >/dev/null 2>&1; then
        echo "== installing cargo-afl (crates.io)"
        nice -n "$NICE" cargo install cargo-afl --locked
    fi
    # Builds AFL++ and its runtime for this toolchain once; says so if already built.
    local out
    if ! out=$(nice -n "$NICE" cargo afl config --build 2>&1); then
        if ! grep -q "already built" <<<"$out"; then
            echo "$out" >&2
            echo "fuzz.sh: cargo afl config --build failed" >&2
            exit 1
        fi
    fi
}

build() {
    echo "== cargo afl build --release (core/fuzz)"
    (cd "$FUZZ" && nice -n "$NICE" cargo afl build --release --quiet)
}

all_targets() {
    "$BIN" --list
}

write_corpus() {
    echo "== writing core/fuzz/corpus from the seeds"
    rm -rf "$FUZZ/corpus"
    "$BIN" --corpus "$FUZZ/corpus"
    find "$FUZZ/corpus" -type f | wc -l | xargs echo "   seed files:"
}

case "$1" in
    --list) ensure_afl; build; all_targets; exit 0 ;;
    --corpus) ensure_afl; build; write_corpus; exit 0 ;;
    -h|--help) usage ;;
esac

MINUTES=$1
shift
SECONDS_PER_TARGET=$(awk -v m="$MINUTES" 'BEGIN { s = int(m * 60); if (s < 1) exit 1; print s }') \
    || { echo "fuzz.sh: MINUTES must be a positive number, got '$MINUTES'" >&2; exit 2; }

ensure_afl
build
mapfile -t KNOWN < <(all_targets)
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${KNOWN[@]}")
fi
for t in "${TARGETS[@]}"; do
    printf '%s\n' "${KNOWN[@]}" | grep -qx -- "$t" \
        || { echo "fuzz.sh: no target '$t'; targets: ${KNOWN[*]}" >&2; exit 2; }
done
[ -d "$FUZZ/corpus" ] || write_corpus

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=1
# A run of 1 minute should spend it fuzzing, not on the deterministic stages.
export AFL_FAST_CAL=1

afl_stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }

declare -a REPORT
ROW='%-16s %12s %9s %7s %7s %5s'
FOUND=0
for t in "${TARGETS[@]}"; do
    work=$FUZZ/out/$t
    mkdir -p "$work"
    # Input: the committed corpus plus the last run's queue.
    rm -rf "$work/in"
    mkdir -p "$work/in"
    cp "$FUZZ/corpus/$t"/* "$work/in/"
    if [ -d "$work/afl/default/queue" ]; then
        find "$work/afl/default/queue" -maxdepth 1 -type f -name 'id:*' -print0 \
            | while IFS= read -r -d '' f; do
                cp "$f" "$work/in/queue-$(sha256sum "$f" | cut -c1-16)"
            done
    fi
    rm -rf "$work/afl"
    echo "== $t: ${SECONDS_PER_TARGET}s from $(find "$work/in" -type f | wc -l) inputs"
    nice -n "$NICE" cargo afl fuzz -V "$SECONDS_PER_TARGET" \
        -m "${FUZZ_MEMORY_MB:-1024}" -t "${FUZZ_TIMEOUT_MS:-1000}" \
        -i "$work/in" -o "$work/afl" -- "$BIN" "$t" >"$work/afl.log" 2>&1 || {
        echo "fuzz.sh: afl-fuzz failed on $t; the end of $work/afl.log:" >&2
        tail -n 30 "$work/afl.log" >&2
        exit 1
    }
    stats=$work/afl/default/fuzzer_stats
    execs=$(afl_stat execs_done "$stats")
    start=$(afl_stat start_time "$stats")
    last=$(afl_stat last_update "$stats")
    rate=$(awk -v e="$execs" -v s="$start" -v l="$last" \
        'BEGIN { d = l - s; printf "%.0f", (d > 0 ? e / d : e) }')
    corpus=$(afl_stat corpus_count "$stats")
    crashes=$(afl_stat saved_crashes "$stats")
    hangs=$(afl_stat saved_hangs "$stats")
    for kind in crashes hangs; do
        found=$(find "$work/afl/default/$kind" -maxdepth 1 -type f -name 'id:*' 2>/dev/null \
            || true)
        [ -n "$found" ] || continue
        mkdir -p "$FUZZ/$kind/$t"
        while IFS= read -r f; do
            cp "$f" "$FUZZ/$kind/$t/$(sha256sum "$f" | cut -c1-16)"
        done <<<"$found"
        echo "   $kind of $t copied to core/fuzz/$kind/$t/ (replay: $BIN --replay $t FILE)"
    done
    [ "${crashes:-0}" = 0 ] && [ "${hangs:-0}" = 0 ] || FOUND=1
    REPORT+=("$(printf "$ROW" "$t" "$execs" "$rate" "$corpus" "$crashes" "$hangs")")
done

echo
AFL_VERSION=$(cargo afl --version 2>/dev/null | head -n1)
echo "fuzzed $MINUTES min per target ($(rustc --version), $AFL_VERSION)"
printf "$ROW\n" target execs execs/s corpus crashes hangs
printf '%s\n' "${REPORT[@]}"
exit "$FOUND"
