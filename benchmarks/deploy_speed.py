"""Images per second on one core: the C99 runtime (gcc -O2) and onnxruntime against the golden model.

The golden model (torch, one thread) is the baseline run in this same script; each consumer's figure is
also given as a ratio to it. All three run the same quantized graph on the same images, and the C and
ONNX checks report their mismatches against the golden model beside the speed.

    python benchmarks/deploy_speed.py --run runs/seed --scheme pot-channel --images 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from potq.allocator import retain_freed_memory
from potq.data import load_dataset
from potq.deploy.consumers import check_c, check_onnx
from potq.golden import IntegerModel
from potq.runs.quantized import load_quantized


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--scheme", default="pot-channel")
    p.add_argument("--images", type=int, default=200, help="test images each consumer runs")
    p.add_argument("--repeats", type=int, default=3, help="passes of the C runtime over the images")
    a = p.parse_args()
    torch.set_num_threads(1)
    graph, cfg = load_quantized(a.run, a.scheme)
    ds = load_dataset(cfg.data)
    images, labels = np.array(ds.test_x[: a.images]), np.array(ds.test_y[: a.images])

    golden = IntegerModel(graph)
    golden.run(torch.from_numpy(images[:8]))  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(images), 100):
        golden.run(torch.from_numpy(images[i : i + 100]))
    golden_ips = len(images) / (time.perf_counter() - t0)

    c = check_c(graph, images, repeats=a.repeats)
    o = check_onnx(graph, images, labels, batch=100, threads=1)
    onnx_ips = len(images) / o["consumer_seconds"]
    row = {
        "run": str(a.run),
        "scheme": a.scheme,
        "nodes": len(graph.nodes),
        "images": len(images),
        "golden_images_per_second": round(golden_ips, 1),
        "c_images_per_second": c["images_per_second"],
        "c_over_golden": round(c["images_per_second"] / golden_ips, 3),
        "c_logit_mismatches": c["logit_mismatches"],
        "onnxruntime_images_per_second": round(onnx_ips, 1),
        "onnxruntime_over_golden": round(onnx_ips / golden_ips, 3),
        "onnxruntime_mismatches": o["mismatches"],
        "rounding": graph.rounding.label,
    }
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
