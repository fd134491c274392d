"""Tensor layout helpers that every interpreter of the graph and the trainer share: the input's
normalization (the INPUT node's lookup table is built from it) and the channels-last layout."""

from __future__ import annotations

import torch


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, zero mean and unit variance per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """A batch of images in the channels-last (NHWC) layout: CPU convolutions run about 25% faster on it
    and max pooling about 6x (benchmarks/RESULTS.md, sections 4 and 8); the layers after it keep it."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
