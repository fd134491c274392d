"""potq from Python (a notebook), without a run folder; the CLI is a thin layer over the same calls.

import potq
q = potq.quantize(model, calib_images)     # uint8 images (N, C, H, W); scheme="pot-channel" by default
logits = q.golden().run(test_images)       # int32 logits of the integer-only golden model
sim = q.simulated()                        # the fake-quantized nn.Module (takes normalized images)
table = q.energy()                         # op counts and energy per node, FP32 against INT8
acc = q.accel("systolic-16")               # cycles, traffic, energy per node on an accelerator (docs/accel.md)
q.export("export/", test_images[:10])      # model.json, weights, C header, hex files, test vectors
q.export("deploy/", test_images[:10], formats=("c", "onnx"))  # the C99 runtime and QDQ ONNX
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from potq.accel.arch import DEFAULT_ARCH
from potq.data import channel_stats
from potq.errors import UserError
from potq.ir.graph import Graph
from potq.ir.tensor import normalize
from potq.quant.scheme import QuantSettings
from potq.workflow import RunOptions


@dataclass
class Quantized:
    graph: Graph  # the integer graph: every stage interprets it
    float_graph: Graph  # the captured float graph (BatchNorm folded, ReLU fused)
    settings: QuantSettings
    mean: list[float]
    std: list[float]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.mean, self.std)

    def simulated(self) -> nn.Module:
        from potq.quant.simulate import simulated

        return simulated(self.graph)

    def golden(self):
        from potq.golden import IntegerModel

        return IntegerModel(self.graph)

    def energy(self, table: Path | None = None, memory: str = RunOptions.memory) -> dict:
        from potq import energy

        return energy.report(energy.graph_costs(self.graph), energy.load_table(table), memory)

    def accel(
        self,
        arch: str | Path = DEFAULT_ARCH,
        dataflow: str | None = None,
        batch: int = 1,
        objective: str = "latency",
        overlap: str | None = None,
    ) -> dict:
        """Cycles, traffic and energy per node on an accelerator (a preset name or a JSON file); see
        potq.accel.model.format_table for the per-layer table and docs/accel.md for the model. overlap:
        "none" or "double-buffered" in place of the architecture's own."""
        from potq.accel.arch import load_arch
        from potq.accel.model import accel_report

        return accel_report(self.graph, load_arch(arch), dataflow, batch=batch, objective=objective, overlap=overlap)

    def export(
        self,
        out: Path,
        images: torch.Tensor,
        labels=None,
        classes: list[str] | None = None,
        formats: tuple[str, ...] = ("hw",),
    ) -> dict:
        from potq.deploy.export import write_export

        images = np.asarray(images.numpy() if isinstance(images, torch.Tensor) else images, dtype=np.uint8)
        labels = np.zeros(len(images), dtype=np.int64) if labels is None else np.asarray(labels)
        n_out = self.graph.shapes[self.graph.output][0]
        classes = classes or [str(i) for i in range(n_out)]
        return write_export(self.graph, Path(out), images, labels, classes, formats=formats)


def network_costs(model: nn.Module, in_shape: tuple[int, int, int], act_zero_point: int | None = None) -> list:
    """Energy costs of a float model (potq.energy.LayerCost per node), from its captured graph at potq's
    zero-point policy (act_zero_point=128: the reference report's convention)."""
    from potq import energy
    from potq.jobs.costs import model_graph

    return energy.graph_costs(*model_graph(model, in_shape, act_zero_point))


def quantize(
    model: nn.Module,
    calib_images: torch.Tensor,
    scheme: str = QuantSettings.scheme,
    *,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    exponent: str = QuantSettings.exponent,
    rounding: str = QuantSettings.rounding.label,
    max_shift: int | None = None,
) -> Quantized:
    """Capture, calibrate on uint8 images (N, C, H, W) and lower `model`; mean and std (per channel, on
    the 0..1 scale, as the model was trained with) default to the calibration images' own."""
    from potq.quant.pipeline import quantize_graph

    if not isinstance(calib_images, torch.Tensor) or calib_images.dtype != torch.uint8 or calib_images.dim() != 4:
        raise UserError("calib_images must be a uint8 tensor of images (N, C, H, W)")
    if mean is None or std is None:
        mean, std = channel_stats(calib_images.numpy())
    settings = QuantSettings.parse(scheme, exponent, rounding, max_shift)
    fgraph, graph = quantize_graph(
        model, tuple(calib_images.shape[1:]), mean, std, normalize(calib_images, mean, std), settings
    )
    return Quantized(graph, fgraph, settings, list(mean), list(std))
