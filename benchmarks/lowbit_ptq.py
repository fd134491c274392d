"""Below eight bits, post-training: accuracy of every weight format on one trained run, with and without the
bias correction of the low-bit layers, and golden against simulated on the same test images (issue 27).

For each format (--formats, W/A:code), potq's PTQ as `potq quantize` runs it (capture, calibration on the first
--calib training images, mse exponents below 8 bits, lowering), once with the bias correction
(potq.quant.lower.bias_correction, what `potq quantize` does) and once without; each integer graph evaluated
on the first --test test images of the run's data, and the golden model compared with the simulated model on
every value of every node there. Prints one markdown table, with the CPU.

    python benchmarks/lowbit_ptq.py --run runs/resnet20 --calib 1000 --test 10000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from potq.data import load_dataset
from potq.ir.capture import capture
from potq.ir.codes import packed_bytes
from potq.ir.tensor import normalize
from potq.jobs.verify import compare_models
from potq.quant.lower import calibrate, input_means, lower
from potq.quant.scheme import QuantSettings
from potq.train import load_trained, prepare_data
from ptq_vs_brevitas import cpu_name  # this folder: one home for the CPU line

FORMATS = ("8/8:int", "4/8:pot", "4/4:int", "4/4:apot", "3/8:pot", "2/8:int")


def packed_kb(graph) -> float:
    return sum(packed_bytes(n.tensors["weight"].numel(), n.weight_bits) for n in graph.mac_nodes()) / 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--calib", type=int, default=1000, help="calibration images (first of the training split)")
    p.add_argument("--test", type=int, default=10000, help="test images (the first of the test split)")
    p.add_argument("--formats", default=",".join(FORMATS), help="W/A:code, comma-separated")
    p.add_argument("--rounding", default="half-even")
    a = p.parse_args()
    model, cfg = load_trained(a.run)
    arrays = prepare_data(cfg, load_dataset(cfg.data))
    calib_x = normalize(torch.from_numpy(arrays["train_x"][: a.calib]), cfg.mean, cfg.std)
    images = torch.from_numpy(arrays["test_x"][: a.test])
    labels = torch.from_numpy(arrays["test_y"][: a.test])
    print(f"run {a.run} ({cfg.model}), {a.calib} calibration and {len(images)} test images (JPEG copy of CIFAR-10)")
    print(f"CPU: {cpu_name()}\n")
    print("| Format | Bias correction | Test accuracy | Golden vs simulated mismatches | Packed weights (kB) | s |")
    print("|---|---|---:|---:|---:|---:|")
    for fmt in a.formats.split(","):
        bits, code = fmt.split(":")
        settings = QuantSettings.parse("pot-channel", "ceil", a.rounding, None, bits, code)
        fgraph = capture(model, tuple(cfg.in_shape), cfg.mean, cfg.std)
        q = calibrate(fgraph, calib_x, settings)
        corrections = (True, False) if settings.low_bit else (False,)
        for corrected in corrections:
            t0 = time.perf_counter()
            graph = lower(fgraph, q, settings, input_means(fgraph, calib_x) if corrected else None)
            r = compare_models(graph, cfg, images, labels)
            print(
                f"| w{bits.replace('/', 'a')} {code} | {'yes' if corrected else 'no'} | {r['golden_accuracy']:.4f} | "
                f"{r['mismatches']:,} of {r['compared_values']:,} | {packed_kb(graph):.1f} | "
                f"{time.perf_counter() - t0:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
