#!/usr/bin/env bash
# Rate-limited link benchmark (issue #14): bench/sync.sh run inside a network namespace of
# its own whose loopback is shaped to BENCH_LINK_RATE (default 50mbit) with tbf, so every
# byte between the two daemons of each tool (cairn, then Syncthing, never at once) crosses
# a link of that rate. This kernel has no netem, so there is no added delay. Run by hand,
# as root; not in CI.
#
#   bench/link.sh                          1 GiB, 10,000 small files, the edited 256 MiB file
#   BENCH_ONLY=edit bench/link.sh          one data set
#   BENCH_LINK_RATE=20mbit bench/link.sh   another rate
#
# Everything else is bench/sync.sh's (BENCH_TOOLS, BENCH_NO_BUILD, CARGO_TARGET_DIR, ...;
# BENCH_TIMEOUT defaults to 1800 s here, a 1 GiB copy at 50 Mbit/s alone takes ~3 min).
# Loopback's MTU in the namespace is set to 1500 (a real link's), and tbf's burst to
# 32 KiB. The shaper's own count of bytes and drops is printed at the end (tc -s).
# Output: bench/sync.sh's tables (bench/results/sync-DATE.txt); this
# script prints the rate first so the file can be told from a loopback run.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${BENCH_LINK_RATE:-50mbit}
NS=cairn-link-$$
if ! ip netns add "$NS" 2>/dev/null; then
  echo "bench/link.sh needs root (ip netns add)" >&2
  exit 1
fi
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
# The namespace reaches nothing outside: Syncthing 1.29.5 (in bench/sync.sh's default
# tools) is fetched from deb.debian.org before, if a tool needs it and it is not there yet.
case " ${BENCH_TOOLS:-syncthing-1.29} " in
  *" syncthing-1.29"*) bench/get_syncthing.sh >/dev/null ;;
esac
ip -n "$NS" link set lo mtu 1500
ip -n "$NS" link set lo up
ip netns exec "$NS" tc qdisc add dev lo root tbf rate "$RATE" burst 32kb latency 100ms
echo "link: loopback of namespace $NS shaped to $RATE (tbf, burst 32 KiB, MTU 1500)"
ip netns exec "$NS" env \
  BENCH_ONLY="${BENCH_ONLY:-large,small10k,edit}" \
  BENCH_TIMEOUT="${BENCH_TIMEOUT:-1800}" \
  bench/sync.sh
echo "link: what the shaper passed and dropped:"
ip netns exec "$NS" tc -s qdisc show dev lo
