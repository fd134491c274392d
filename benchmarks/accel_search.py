"""Row-stationary mapping search: the vectorized search against the scalar reference, same process.

taskset -c 0 python benchmarks/accel_search.py --model resnet20 --arch eyeriss

Every convolution of the model (the captured graph at 8 bits), the whole lab mapping space of each
(potq.accel.row_stationary.space), best by --objective. Prints per layer the space, the legal count and
the best mapping of each search (they must agree), then the mappings decided per second of each and the
ratio. The vectorized search is timed as the best of --repeat runs; the scalar one runs once.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, as the claim says
    os.environ.setdefault(_var, "1")

from potq.accel.arch import load_arch  # noqa: E402
from potq.accel.row_stationary import space  # noqa: E402
from potq.accel.search import search, search_scalar  # noqa: E402
from potq.accel.workload import workloads  # noqa: E402
from potq.ir.capture import capture  # noqa: E402
from potq.models import build_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--arch", default="eyeriss")
    p.add_argument("--objective", default="latency", choices=["latency", "energy", "edp"])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-scalar", action="store_true", help="time the vectorized search only")
    a = p.parse_args()
    arch = load_arch(a.arch)
    graph = capture(build_model(a.model), (3, 32, 32), [0.0] * 3, [1.0] * 3)
    layers = [w for w in workloads(graph) if w.op == "conv"]

    best_t, vec = float("inf"), []
    for _ in range(a.repeat):
        start = time.perf_counter()
        vec = [search(w, arch, a.objective) for w in layers]
        best_t = min(best_t, time.perf_counter() - start)
    size = sum(m["space"] for _, m in vec)
    legal = sum(m["legal"] for _, m in vec)
    cells = sum(m["space"] // len(space(w, arch)["t"]) for w, (_, m) in zip(layers, vec, strict=True))
    print(
        f"{a.model} on {arch.name}, objective {a.objective}: {len(layers)} convolutions, {size:,} mappings "
        f"in the lab's space, {legal:,} legal"
    )
    print(
        f"vectorized: {best_t:.3f} s (best of {a.repeat}), {size / best_t:,.0f} mappings/s "
        f"(a grid of {cells:,} (m, n, e, p, q, r) cells, t solved from r*t = PE sets)"
    )
    if a.no_scalar:
        return
    start = time.perf_counter()
    ref = [search_scalar(w, arch, a.objective) for w in layers]
    scalar_t = time.perf_counter() - start
    print(f"scalar:     {scalar_t:.1f} s, {size / scalar_t:,.0f} mappings/s; ratio {scalar_t / best_t:,.0f}x")
    same = 0
    for w, (b, m), (bs, ms) in zip(layers, vec, ref, strict=True):
        agree = b == bs and m == ms
        same += agree
        print(
            f"  {w.node:22s} space {m['space']:>9,} legal {m['legal']:>5,} best {b}  {a.objective} "
            f"{m[{'latency': 'latency', 'energy': 'energy_total', 'edp': 'edp'}[a.objective]]:.6g}  "
            f"{'same' if agree else 'DIFFERENT: ' + str(bs)}"
        )
    print(f"same best mapping and metrics on {same} of {len(layers)} layers")


if __name__ == "__main__":
    main()
