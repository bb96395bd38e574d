#!/usr/bin/env bash
# A fresh ext4 file system for the benchmark's data and work directories.
#
#   sudo bench/fresh_fs.sh mount [SIZE_GIB]   # default 24; bench/data/sync on a new file system
#   sudo bench/fresh_fs.sh umount             # back to the directory underneath
#
# Why: a file system that has created and deleted millions of bench files slows inode
# allocation (perf put 13-18 % of the daemons' CPU in ext4's `recently_deleted` during a
# 100,000-file first sync), so runs months apart are not comparable. The image is a
# sparse file beside bench/data (BENCH_FS_IMAGE to put it elsewhere) with one inode per
# 4 KiB, enough for the 1,000,000-file data set, its sender's and its receiver's copies.
# Data sets are generated again inside it by bench/sync.sh on first use.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
MNT=$BENCH/data/sync
IMG=${BENCH_FS_IMAGE:-$BENCH/data/fresh-fs.img}
case "${1:-}" in
  mount)
    size=${2:-24}
    [[ $size =~ ^[1-9][0-9]*$ ]] || { echo "size must be a whole number of GiB" >&2; exit 2; }
    mountpoint -q "$MNT" && { echo "$MNT is already a mount point" >&2; exit 1; }
    mkdir -p "$MNT"
    rm -f "$IMG"
    truncate -s "${size}G" "$IMG"
    mkfs.ext4 -q -F -i 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
    mount -o loop,noatime "$IMG" "$MNT"
    echo "fresh ext4 of ${size} GiB at $MNT (image $IMG)"
    ;;
  umount)
    mountpoint -q "$MNT" || { echo "$MNT is not a mount point" >&2; exit 1; }
    umount "$MNT"
    rm -f "$IMG"
    echo "unmounted $MNT and removed $IMG"
    ;;
  *)
    echo "usage: $0 mount [SIZE_GIB] | umount" >&2
    exit 2
    ;;
esac
