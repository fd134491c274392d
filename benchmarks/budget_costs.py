"""The cost model of potq.budget, measured: each step's seconds per image against one FP32 evaluation image,
on a trained run, in one process (the ratios are the figures to read on a shared machine).

    PYTHONPATH=src python benchmarks/budget_costs.py --run runs/quick --images 2000 --calib 256

Prints the ratios beside potq.budget's constants: the simulated model (a power-of-two and a float-scale
scheme), calibration, verify (golden + simulated, every value compared), onnxruntime with the golden model.
The run needs quant_pot-channel.pt; float-channel is quantized here when missing (into the run folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from potq import budget
from potq.allocator import retain_freed_memory
from potq.data import load_dataset, test_subset
from potq.ir.capture import capture
from potq.ir.tensor import normalize
from potq.jobs.quantize import quantize_run
from potq.jobs.verify import verify_run
from potq.quant.lower import collect_stats
from potq.quant.rules import QuantSettings
from potq.quant.simulate import simulated
from potq.runs.paths import quant_paths
from potq.runs.quantized import load_quantized
from potq.train import evaluate, load_trained, prepare_data


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--images", type=int, default=2000, help="test images (drawn across the classes)")
    p.add_argument("--calib", type=int, default=256)
    a = p.parse_args()
    retain_freed_memory()
    model, cfg = load_trained(a.run)
    arrays = prepare_data(cfg, load_dataset(cfg.data))
    x, y = (torch.from_numpy(v) for v in test_subset(arrays["test_x"], arrays["test_y"], a.images))
    evaluate(model, x[:200], y[:200], cfg.mean, cfg.std)  # warm-up
    e = timed(lambda: evaluate(model, x, y, cfg.mean, cfg.std)) / len(x)
    rows = [("FP32 evaluation", 1.0, 1.0, f"{1 / e:.0f} images/s")]
    if not quant_paths(a.run, "float-channel")[0].exists():
        quantize_run(a.run, QuantSettings("float-channel"), a.calib, test_limit=200)
    for name, kind in (("pot-channel", "pot"), ("float-channel", "float")):
        sim = simulated(load_quantized(a.run, name)[0])
        cost = timed(lambda s=sim: evaluate(s, x, y, cfg.mean, cfg.std)) / len(x) / e
        rows.append((f"simulated {name}", cost, budget.SIMULATED_COST[kind], ""))
    fgraph = capture(model, cfg.in_shape, cfg.mean, cfg.std)
    cx = normalize(torch.from_numpy(np.asarray(arrays["train_x"][: a.calib])), cfg.mean, cfg.std)
    rows.append(("calibration", timed(lambda: collect_stats(fgraph, cx)) / a.calib / e, budget.CALIB_COST, ""))
    v = timed(lambda: verify_run(a.run, "pot-channel", test_limit=a.images)) / len(x) / e
    rows.append(("verify pot-channel", v, budget.VERIFY_COST, ""))
    try:
        from potq.deploy.consumers import check_onnx

        graph = load_quantized(a.run, "pot-channel")[0]
        o = timed(lambda: check_onnx(graph, x.numpy(), y.numpy())) / len(x) / e
        rows.append(("onnxruntime + golden", o, budget.ONNX_COST, ""))
    except ImportError:
        rows.append(("onnxruntime + golden", float("nan"), budget.ONNX_COST, "onnxruntime not installed"))
    print(f"run {a.run} ({cfg.model}), {len(x)} test images, {a.calib} calibration images")
    print("| Per image, in FP32 evaluation images | measured | potq.budget |  |")
    print("|---|---:|---:|---|")
    for name, got, constant, note in rows:
        print(f"| {name} | {got:.2f} | {constant:.2f} | {note} |")


if __name__ == "__main__":
    main()
