"""Calibration statistics (potq.quant.lower.collect_stats): the finite-batch fast path against the masked
path it replaced (every batch copied through a finite-value mask), in the same process, on the same graph
and images. Claim: the same statistics (checked here), in less time; the ratio is what RESULTS.md records.

    python benchmarks/calib_stats.py --model resnet20 --images 1000
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from potq.ir.capture import capture
from potq.models import build_model
from potq.quant import lower


def masked_add(self, x, what, g):  # the path before issue 22: a mask and a copy on every batch
    if torch.isnan(x).any():
        raise ValueError(what)
    finite = x[torch.isfinite(x)].flatten()
    if finite.numel():
        self.min, self.max = min(self.min, float(finite.min())), max(self.max, float(finite.max()))
        idx = torch.randint(0, finite.numel(), (min(self.keep, finite.numel()),), generator=g)
        self.parts.append(finite[idx].double())


def timed(graph, x, repeats: int) -> tuple[float, dict]:
    best, stats = float("inf"), {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        stats = lower.collect_stats(graph, x)
        best = min(best, time.perf_counter() - t0)
    return best, stats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet20")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    graph = capture(build_model(a.model).eval(), (3, 32, 32), [0.0] * 3, [1.0] * 3)
    x = torch.randn(a.images, 3, 32, 32)
    fast_s, fast = timed(graph, x, a.repeats)
    real = lower.Stats.add
    lower.Stats.add = masked_add
    try:
        base_s, base = timed(graph, x, a.repeats)
    finally:
        lower.Stats.add = real
    same = all(torch.equal(fast[v].sample(), base[v].sample()) and fast[v].max == base[v].max for v in fast)
    print(f"cpu {platform.processor() or platform.machine()}  model {a.model}  images {a.images}")
    print(
        f"collect_stats: masked {base_s:.2f} s, fast path {fast_s:.2f} s, ratio {base_s / fast_s:.2f}x, "
        f"same statistics: {same}"
    )


if __name__ == "__main__":
    main()
