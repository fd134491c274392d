"""Post-training quantization sweep on a trained run: exponent rule, rounding rule and shifter width.

Evaluates each setting on the whole test set (calibration: the first 1,000 training images) without
writing anything into the run; prints a Markdown table. This is how potq's defaults were chosen.

    python benchmarks/quant_sweep.py --run runs/seed
"""

from __future__ import annotations

import argparse
import time

import torch

from potq.data import load_dataset
from potq.ir.tensor import normalize
from potq.quant.pipeline import layer_table, quantize_graph
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import simulated
from potq.train import evaluate, load_trained, prepare_data

SETTINGS = [
    *(QuantSettings(s, e) for s in ("pot-tensor", "pot-channel") for e in ("ceil", "round", "mse")),
    QuantSettings("pot-seed"),
    *(QuantSettings.parse("pot-channel", "mse", r) for r in ("half-even", "floor")),
    *(QuantSettings.parse("pot-channel", "mse", "half-up", k) for k in (8, 6, 4)),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--calib", type=int, default=1000)
    a = p.parse_args()
    model, cfg = load_trained(a.run)
    arrays = prepare_data(cfg, load_dataset(cfg.data))
    calib = normalize(torch.from_numpy(arrays["train_x"][: a.calib]), cfg.mean, cfg.std)
    x, y = torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"])
    _, fp_acc = evaluate(model, x, y, cfg.mean, cfg.std)
    print(f"FP32 test accuracy {fp_acc:.4f}\n")
    print("| Scheme | Exponent | Rounding | Max shift | Test accuracy | Drop (points) | Shifts used | Seconds |")
    print("|---|---|---|---:|---:|---:|---|---:|")
    for s in SETTINGS:
        t0 = time.perf_counter()
        _, graph = quantize_graph(model, cfg.in_shape, cfg.mean, cfg.std, calib, s)
        _, acc = evaluate(simulated(graph), x, y, cfg.mean, cfg.std)
        shifts = [v for r in layer_table(graph) if r["shift"] for v in r["shift"]]
        exponent = s.exponent if s.scheme != "pot-seed" else "seed rule"
        print(
            f"| {s.scheme} | {exponent} | {s.rounding.label} | {s.max_shift or '-'} | {acc:.4f} | "
            f"{100 * (fp_acc - acc):+.2f} | {min(shifts)}..{max(shifts)} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
