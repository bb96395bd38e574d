#!/usr/bin/env python3
"""Generate the scan benchmark data sets (random bytes, so no chunk dedups by accident).

  large/   4 files x 256 MiB = 1 GiB
  small/   20,000 files of 1-64 KiB in 100 directories
Existing data sets with the right shape are kept.
"""
import os
import random
import sys

def gen_large(root, count=4, size=256 << 20):
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        path = os.path.join(root, f"large-{i}.bin")
        if os.path.exists(path) and os.path.getsize(path) == size:
            continue
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n

def gen_small(root, count=20_000, dirs=100):
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return
    rng = random.Random(42)
    for i in range(count):
        d = os.path.join(root, f"dir{i % dirs:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file{i:05}.dat"), "wb") as f:
            f.write(os.urandom(rng.randint(1024, 64 * 1024)))
    open(marker, "w").close()

if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "bench/data"
    gen_large(os.path.join(base, "large"))
    gen_small(os.path.join(base, "small"))
