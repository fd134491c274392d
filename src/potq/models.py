"""The model zoo: plain sequential CNNs that potq can quantize and run on integers.

Every model is a `ConvNet`: `features` (Conv2d, BatchNorm2d, ReLU, MaxPool2d) then a flatten in
`forward` (no Flatten module, so the layer table matches the reference report) then `classifier`
(Linear and ReLU). That shape is what the quantizer, the golden model and the energy model walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from potq.errors import UserError


@dataclass(frozen=True)
class Design:
    channels: tuple[int, ...]  # output channels of each conv block
    pools: tuple[int, ...]  # indices of the conv blocks followed by a 2x2 max pool
    hidden: tuple[int, ...]  # hidden widths of the classifier
    note: str


ZOO: dict[str, Design] = {
    "seed": Design(
        (32, 64, 128, 128, 128),
        (0, 1, 4),
        (128, 64),
        "the reference lab's net: 5 conv blocks, FC 2048-128-64-10, 660,554 params on CIFAR-10",
    ),
    "seed-wide": Design(
        (64, 128, 256, 256, 256),
        (0, 1, 4),
        (256,),
        "seed with doubled channels and one hidden FC layer: more accuracy for about 4x the params",
    ),
    "seed-slim": Design(
        (16, 32, 64, 64, 64),
        (0, 1, 4),
        (64,),
        "seed at half width: about a quarter of the params, for small accelerators",
    ),
    "tiny": Design((8, 16), (0, 1), (16,), "a two-block net for tests and smoke runs"),
}


class ConvNet(nn.Module):
    def __init__(self, design: Design, in_shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for i, out in enumerate(design.channels):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if i in design.pools:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        if h < 1 or w < 1:
            raise UserError(f"input {in_shape} is too small for {len(design.pools)} max pools")
        self.features = nn.Sequential(*layers)
        fc: list[nn.Module] = []
        width = c * h * w
        for hidden in design.hidden:
            fc += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        fc.append(nn.Linear(width, classes))
        self.classifier = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build_model(name: str, in_shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10) -> ConvNet:
    if name not in ZOO:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(ZOO)}")
    if classes < 2:
        raise UserError(f"--classes must be at least 2, got {classes}")
    return ConvNet(ZOO[name], in_shape, classes)


def parse_shape(text: str) -> tuple[int, int, int]:
    """'3,32,32' -> (3, 32, 32), for --input."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--input must be three positive integers C,H,W, got {text!r}")
    return shape  # type: ignore[return-value]
