#!/usr/bin/env bash
# Folder document scale: 100,000 and 1,000,000 entries (issue: folder model).
#
#   bench/folder_scale.sh [SHARDS]     (default: the folder default, 256)
#
# For each size: build the document (committing every 1,000 entries, as a scan does),
# save it, load it, fully sync it to an empty replica (rounds, bytes, time), apply 1,000
# changes made on a third replica that loaded the same save, and derive the tree.
# Memory: one_replica_rss_mib is the process RSS when only one replica is alive (an upper
# bound: the allocator keeps some freed memory); process_peak_rss_mib covers three replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${1:-256}
cargo build --release --quiet -p cairn-core --example folder_scale
for n in 100000 1000000; do
  ./target/release/examples/folder_scale "$n" "$SHARDS"
done
