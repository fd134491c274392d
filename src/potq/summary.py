"""Layer summary: torchinfo walks the model; the sizes follow the reference report's convention.

The reference report's table (torchsummary style) counts MB as 2**20 bytes of float32, the
forward/backward pass as twice the outputs of every leaf layer, and shows batch size as -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torchinfo
from torch import nn

MB = 2**20
FLOAT_BYTES = 4


@dataclass
class LayerRow:
    name: str  # e.g. "Conv2d"
    output_shape: list[int]  # with -1 for the batch
    params: int


@dataclass
class Summary:
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_mb(self) -> float:
        return self.input_mb + self.forward_backward_mb + self.params_mb

    def to_dict(self) -> dict:
        return {
            "layers": [r.__dict__ for r in self.rows],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "input_mb": self.input_mb,
            "forward_backward_mb": self.forward_backward_mb,
            "params_mb": self.params_mb,
            "total_mb": self.total_mb,
        }


def summarize(model: nn.Module, in_shape: tuple[int, int, int]) -> Summary:
    stats = torchinfo.summary(model, input_size=(1, *in_shape), verbose=0, device="cpu")
    rows = [
        LayerRow(layer.class_name, [-1, *layer.output_size[1:]], layer.num_params)
        for layer in stats.summary_list
        if layer.is_leaf_layer
    ]
    outputs = sum(_numel(r.output_shape) for r in rows)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Summary(
        rows=rows,
        total_params=total,
        trainable_params=trainable,
        input_mb=_numel(in_shape) * FLOAT_BYTES / MB,
        forward_backward_mb=2 * outputs * FLOAT_BYTES / MB,
        params_mb=total * FLOAT_BYTES / MB,
    )


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= abs(d)
    return n


def format_summary(s: Summary) -> str:
    """The reference report's three tables, as Markdown."""
    lines = ["| Layer (type) | Output Shape | Param # |", "|---|---|---:|"]
    lines += [f"| {r.name} | {r.output_shape} | {r.params:,} |" for r in s.rows]
    lines += [
        "",
        "| Metric | Value |",
        "|---|---:|",
        f"| Total params | {s.total_params:,} |",
        f"| Trainable params | {s.trainable_params:,} |",
        f"| Non-trainable params | {s.non_trainable_params:,} |",
        f"| Input size | {s.input_mb:.2f} MB |",
        f"| Forward/backward pass size | {s.forward_backward_mb:.2f} MB |",
        f"| Params size | {s.params_mb:.2f} MB |",
        f"| Estimated Total Size | {s.total_mb:.2f} MB |",
    ]
    return "\n".join(lines)
