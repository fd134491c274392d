"""Verilator simulation time of potq's RTL: one image of a zoo net through every node on an R x C array.

The model is the zoo net with untrained weights (BatchNorm randomized as training would leave it), quantized
by potq.quantize on random uint8 images: the RTL's cycles and its simulation time do not depend on the
weights' values. The build (once per array size, then cached) is timed apart from the simulation; the
simulation's time is the Verilator model's own run (memory loads, every descriptor, the checker), not the
Python side.

    python benchmarks/rtl_speed.py --model resnet20 --array 16x16 --images 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

import potq
from potq.deploy.rtl_check import check_rtl, parse_array
from potq.models import build_model


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics and affine parameters as training would leave them (fresh ones make some layers'
    outputs vanish on random images), in eval mode."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--array", default="16x16")
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--rounding", default="half-even")
    a = p.parse_args()
    rows, cols = parse_array(a.array)
    torch.manual_seed(0)
    calib = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    graph = potq.quantize(trained_like(build_model(a.model)), calib, rounding=a.rounding).graph
    images = torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8).numpy()
    os.environ.setdefault("POTQ_RTL_CACHE", tempfile.mkdtemp(prefix="potq-rtl-bench-"))  # a cold build
    t0 = time.perf_counter()
    r = check_rtl(graph, images, rows, cols)
    total = time.perf_counter() - t0
    macs = sum(
        int(n.tensors["weight"].numel())
        * (graph.shapes[n.output][1] * graph.shapes[n.output][2] if len(graph.shapes[n.output]) == 3 else 1)
        for n in graph.mac_nodes()
    )
    print(
        json.dumps(
            {
                "model": a.model,
                "array": r["array"],
                "images": r["images"],
                "mismatches": r["mismatches"],
                "compared_values": r["compared_values"],
                "cycles_per_image": r["cycles_per_image"],
                "predicted_cycles_per_image": r["predicted_cycles_per_image"],
                "macs_per_image": macs,
                "pe_utilization": round(macs / (r["cycles_per_image"] * rows * cols), 4),
                "build_seconds": round(r["build_seconds"], 1),
                "simulation_seconds": round(r["simulation_seconds"], 2),
                "simulated_cycles_per_second": round(r["cycles_per_image"] * r["images"] / r["simulation_seconds"]),
                "total_seconds": round(total, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
