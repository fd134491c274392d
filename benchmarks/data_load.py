"""Decoding a dataset once, then loading it again from potq's .npy cache.

python benchmarks/data_load.py --data ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from potq.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        first = load_dataset(a.data, cache)
        t1 = time.perf_counter()
        second = load_dataset(a.data, cache)
        train = np.asarray(second.train_x).sum()  # touch every byte, not just the memory map
        t2 = time.perf_counter()
    n = len(first.train_x) + len(first.test_x)
    print(f"{n:,} images {first.shape}, {len(first.classes)} classes (checksum {train})")
    print(f"first load (decode + write cache): {t1 - t0:.2f} s")
    print(f"second load (from the cache, every byte read): {t2 - t1:.3f} s")


if __name__ == "__main__":
    main()
