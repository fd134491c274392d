"""`potq verify` against one FP32 evaluation of the same model on the same test set (issue 22: <= 2x).

In one process, alternately: potq's FP32 evaluation (potq.train.evaluate, the baseline) and verify's
comparison (potq.jobs.verify.compare_models: the golden and the simulated model, every value of every node
compared), each timed `--repeats` times; the best wall time and the best process CPU time of each, and
their ratios. On a shared machine the CPU time is the steadier figure (another worker's load stretches
the wall time of many short parallel passes more than that of a few long convolutions). `--no-share`
times verify with every GEMM computed by both models. Prints the CPU's model name and its AVX2,
AVX-512 VNNI and AMX flags; ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 in the environment
approximates an AVX2-only CPU (and is printed too).

    python benchmarks/verify_speed.py --run runs/seed --scheme pot-channel --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from potq.allocator import retain_freed_memory
from potq.data import load_dataset
from potq.jobs.verify import compare_models
from potq.machine import cpu_facts
from potq.runs.quantized import load_quantized
from potq.train import evaluate, load_trained


def cpu_name() -> dict:
    """model name and the flags that decide the kernels, from /proc/cpuinfo."""
    facts = cpu_facts()
    model, flags = facts["model"], set(facts["flags"])
    isa = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    return {"cpu": model, "flags": {f: f in flags for f in ("avx2", "avx512_vnni", "amx_tile")}, "isa_limits": isa}


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--scheme", default="pot-channel")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=0, help="the first N test images (default: all)")
    p.add_argument("--batch", type=int, default=500, help="verify's images per batch (potq verify: 500)")
    p.add_argument("--no-share", action="store_true", help="both models compute every GEMM")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg = load_trained(a.run)
    graph, _ = load_quantized(a.run, a.scheme)
    ds = load_dataset(cfg.data)
    x, y = torch.from_numpy(np.array(ds.test_x)), torch.from_numpy(np.array(ds.test_y))
    if a.images:
        x, y = x[: a.images], y[: a.images]
    out: dict = {}
    with torch.no_grad():
        evaluate(model, x[:500], y[:500], cfg.mean, cfg.std)  # warm-up of both
        compare_models(graph, cfg, x[:500], y[:500], a.batch, share_gemms=not a.no_share)
        fp32, ver = [], []
        for _ in range(a.repeats):
            fp32.append(timed(lambda: evaluate(model, x, y, cfg.mean, cfg.std)))
            ver.append(timed(lambda: out.update(compare_models(graph, cfg, x, y, a.batch, share_gemms=not a.no_share))))
    best = {k: (min(w for w, _ in t), min(c for _, c in t)) for k, t in (("fp32", fp32), ("verify", ver))}
    row = {
        **cpu_name(),
        "run": str(a.run),
        "model": cfg.model,
        "scheme": a.scheme,
        "torch_threads": a.threads,
        "test_images": len(x),
        "shared_gemms": not a.no_share,
        "verify_batch": a.batch,
        "fp32_wall_s": round(best["fp32"][0], 2),
        "verify_wall_s": round(best["verify"][0], 2),
        "verify_over_fp32_wall": round(best["verify"][0] / best["fp32"][0], 2),
        "fp32_cpu_s": round(best["fp32"][1], 2),
        "verify_cpu_s": round(best["verify"][1], 2),
        "verify_over_fp32_cpu": round(best["verify"][1] / best["fp32"][1], 2),
        "compared_values": out["compared_values"],
        "mismatches": out["mismatches"],
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
