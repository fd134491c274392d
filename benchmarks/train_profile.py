"""Where a training step's time goes: data (batch gather, normalization, augmentation), forward, backward,
optimizer. The same operations as potq's trainer (potq.train.train_epoch), timed phase by phase.

    python benchmarks/train_profile.py --data ../shared/data/cifar10-jpeg.tar.gz --model seed --recipe fast
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from potq.allocator import retain_freed_memory
from potq.data import augment, channel_stats, load_dataset
from potq.ir.tensor import normalize
from potq.models import build_model
from potq.recipes import RECIPES
from potq.train import make_optimizer, place


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="seed")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    recipe = RECIPES[a.recipe]
    ds = load_dataset(a.data)
    x, y = torch.from_numpy(np.array(ds.train_x[:20000])), torch.from_numpy(np.array(ds.train_y[:20000]))
    mean, std = channel_stats(ds.train_x[:20000])
    model = place(build_model(a.model, ds.shape, len(ds.classes)), torch.device("cpu")).train()
    opt, _ = make_optimizer(model.parameters(), recipe, 100)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    g = torch.Generator().manual_seed(0)
    phases = dict(data=0.0, forward=0.0, backward=0.0, optimizer=0.0)
    bs = recipe.batch_size
    for step in range(a.steps + 3):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (bs,), generator=g)
        xb = augment(normalize(x[idx], mean, std), recipe.crop_pad, recipe.flip, g).contiguous(
            memory_format=torch.channels_last
        )
        yb = y[idx]
        t1 = time.perf_counter()
        loss = loss_fn(model(xb), yb)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= 3:  # after warm-up
            for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[k] += dt
    total = sum(phases.values())
    print(f"{a.model}, recipe {a.recipe}, batch {bs}, {a.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"{a.steps * bs / total:.0f} images/s")
    for k, v in phases.items():
        print(f"{k:10s} {1000 * v / a.steps:7.1f} ms/step  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
