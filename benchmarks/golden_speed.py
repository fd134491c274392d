"""Speed of the integer golden model against the FP32 PyTorch model, on the same test images.

python benchmarks/golden_speed.py --run runs/seed --scheme pot-channel
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from potq.allocator import retain_freed_memory
from potq.data import load_dataset
from potq.golden import IntegerModel
from potq.ir.tensor import nhwc, normalize
from potq.runs.quantized import load_quantized
from potq.train import load_trained


def timed(fn, images: torch.Tensor, batch: int) -> tuple[float, torch.Tensor]:
    fn(images[:batch])  # warm-up
    start = time.perf_counter()
    preds = torch.cat([fn(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return time.perf_counter() - start, preds


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--scheme", default="pot-channel")
    p.add_argument("--batch", type=int, default=500)
    a = p.parse_args()
    run = Path(a.run)
    model, cfg = load_trained(run)
    graph, _ = load_quantized(run, a.scheme)
    golden = IntegerModel(graph)
    ds = load_dataset(cfg.data)
    images, labels = torch.from_numpy(np.array(ds.test_x)), torch.from_numpy(np.array(ds.test_y))
    with torch.no_grad():
        # potq's FP32 evaluation (potq.train.evaluate): channels-last batches, as the golden model runs
        t_fp32, p_fp32 = timed(lambda x: model(nhwc(normalize(x, cfg.mean, cfg.std))), images, a.batch)
        t_int, p_int = timed(golden.run, images, a.batch)
    print(f"{len(images)} test images, batch {a.batch}, torch threads {torch.get_num_threads()}")
    print(f"FP32 PyTorch model: {t_fp32:.2f} s, accuracy {(p_fp32 == labels).float().mean():.4f}")
    print(f"integer golden model ({a.scheme}): {t_int:.2f} s, accuracy {(p_int == labels).float().mean():.4f}")
    print("exact GEMM per node: " + ", ".join(f"{name} {golden.gemm_name(name)}" for name in golden.gemms))
    print(f"ratio golden / FP32: {t_int / t_fp32:.2f}x")


if __name__ == "__main__":
    main()
