"""Training recipes: one dataclass of hyperparameters, the named recipes (no torch: --help lists them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    eta_min: float = 1e-6
    label_smoothing: float = 0.0
    crop_pad: int = 4
    flip: bool = True


RECIPES: dict[str, Recipe] = {
    # the reference report: SGD(0.1, 0.9, 5e-4), CosineAnnealingLR(T_max=epochs, eta_min=1e-6), 50 epochs
    "seed": Recipe(),
    # the same optimizer with Nesterov momentum and label smoothing, for shorter runs
    "seed-ls": Recipe(nesterov=True, label_smoothing=0.1),
}
