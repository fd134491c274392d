"""The steps after training against one FP32 evaluation of the same model on the same test set.

Times, in this one process with the same threads: the FP32 PyTorch evaluation (the baseline), one
post-training scheme (calibration, lowering, and the simulated model's test-set evaluation), `verify`
(the golden and the simulated model, every value of every node compared) and the golden model alone.
The speed issue's targets: PTQ <= 3x, verify <= 2x, golden <= 1.2x the FP32 evaluation.

    python benchmarks/post_training_speed.py --run runs/seed --scheme pot-channel
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from potq.allocator import retain_freed_memory
from potq.data import load_dataset
from potq.golden import IntegerModel
from potq.ir.tensor import normalize
from potq.jobs.verify import compare_models
from potq.quant.pipeline import quantize_graph
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import simulated
from potq.train import evaluate, load_trained, prepare_data


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--scheme", default="pot-channel")
    p.add_argument("--calib", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2, help="best of this many timings of each step")
    a = p.parse_args()
    model, cfg = load_trained(a.run)
    arrays = prepare_data(cfg, load_dataset(cfg.data))
    test_x, test_y = torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"])
    calib_x = normalize(torch.from_numpy(arrays["train_x"][: a.calib]), cfg.mean, cfg.std)
    settings = QuantSettings(a.scheme)
    out: dict = {}

    def ptq():
        _, graph = quantize_graph(model, cfg.in_shape, cfg.mean, cfg.std, calib_x, settings)
        out["graph"] = graph
        out["ptq_accuracy"] = evaluate(simulated(graph), test_x, test_y, cfg.mean, cfg.std)[1]

    def fp32():
        out["fp32_accuracy"] = evaluate(model, test_x, test_y, cfg.mean, cfg.std)[1]

    fp32()  # warm-up of both
    ptq()
    graph = out["graph"]
    golden = IntegerModel(graph)

    def golden_only():
        with torch.no_grad():
            for i in range(0, len(test_x), 500):
                golden.run(test_x[i : i + 500])

    def verify():
        out["verify"] = compare_models(graph, cfg, test_x, test_y)

    t = {
        name: min(seconds(fn) for _ in range(a.repeats))
        for name, fn in [("fp32", fp32), ("ptq", ptq), ("verify", verify), ("golden", golden_only)]
    }
    row = {
        "run": str(a.run),
        "model": cfg.model,
        "scheme": a.scheme,
        "torch_threads": torch.get_num_threads(),
        "test_images": len(test_x),
        **{f"{k}_seconds": round(v, 2) for k, v in t.items()},
        "ptq_over_fp32": round(t["ptq"] / t["fp32"], 2),
        "verify_over_fp32": round(t["verify"] / t["fp32"], 2),
        "golden_over_fp32": round(t["golden"] / t["fp32"], 2),
        "fp32_accuracy": out["fp32_accuracy"],
        "ptq_accuracy": out["ptq_accuracy"],
        "verify_mismatches": out["verify"]["mismatches"],
    }
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
