"""Training images per second: potq's trainer against a plain per-sample Dataset + DataLoader baseline.

Both train the same model on the same images with the same augmentation (random crop with padding 4,
horizontal flip), in this one process; the ratio is what to compare across machines. The trainer runs
twice: in fp32 (the baseline's arithmetic) and with --precision auto (bf16 autocast where the CPU has
AMX tiles, as `--recipe fast` trains).

    python benchmarks/train_throughput.py --data ../shared/data/cifar10-jpeg.tar.gz --steps 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from potq.allocator import retain_freed_memory
from potq.data import channel_stats, load_dataset
from potq.models import build_model
from potq.train import Dist, Recipe, TrainConfig, autocast_bf16, place, train_epoch


class PerSampleDataset(TorchDataset):
    """How such labs are usually written: PIL crop and flip one image at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std):
        self.x, self.y = x.transpose(0, 2, 3, 1), y  # HWC for PIL
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.x[i])
        padded = Image.new(img.mode, (40, 40))
        padded.paste(img, (4, 4))
        dx, dy = np.random.randint(0, 9, 2)
        img = padded.crop((dx, dy, dx + 32, dy + 32))
        if np.random.rand() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
        return (t - self.mean) / self.std, int(self.y[i])


def baseline(model, x, y, mean, std, steps, batch, workers) -> float:
    loader = DataLoader(
        PerSampleDataset(x, y, mean, std), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for i, (xb, yb) in enumerate(loader):
        if i == 2:  # warm-up excluded
            start, seen = time.perf_counter(), 0
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(xb)
        if i == steps + 1:
            break
    return seen / (time.perf_counter() - start)


def potq_trainer(model, x, y, mean, std, steps, batch, precision: str = "fp32") -> float:
    cfg = TrainConfig(mean=mean, std=std)
    recipe = Recipe(batch_size=batch, lr=0.05, precision=precision)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    train_epoch(model, opt, nn.CrossEntropyLoss(), xt[: 2 * batch], yt[: 2 * batch], cfg, recipe, 0, Dist())  # warm-up
    n = steps * batch
    start = time.perf_counter()
    train_epoch(model, opt, nn.CrossEntropyLoss(), xt[:n], yt[:n], cfg, recipe, 1, Dist())
    return n / (time.perf_counter() - start)


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="seed")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    a = p.parse_args()
    ds = load_dataset(a.data)
    n = (a.steps + 4) * a.batch
    x, y = np.array(ds.train_x[:n]), np.array(ds.train_y[:n])
    mean, std = channel_stats(x)
    torch.manual_seed(0)
    base = baseline(build_model(a.model), x, y, mean, std, a.steps, a.batch, a.workers)
    print(f"model {a.model}, batch {a.batch}, {a.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"baseline (per-sample PIL + DataLoader, {a.workers} workers): {base:.0f} images/s")
    # fp32: the same arithmetic as the baseline; auto: what --recipe fast trains with on this machine
    for precision in ("fp32", "auto"):
        torch.manual_seed(0)
        model = place(build_model(a.model), torch.device("cpu"))
        ours = potq_trainer(model, x, y, mean, std, a.steps, a.batch, precision)
        arithmetic = "bf16 autocast" if autocast_bf16(precision, torch.device("cpu")) else "fp32"
        print(f"potq trainer, --precision {precision} ({arithmetic}): {ours:.0f} images/s, {ours / base:.2f}x baseline")


if __name__ == "__main__":
    main()
