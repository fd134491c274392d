"""What each ingredient of the `fast` recipe buys: train `seed` under variants of it, one change each.

Every variant trains the same model on the same split for the same number of epochs; the figure is plain
single-view test accuracy (no test-time augmentation), so it compares with the FP32 column of a run.
Each result is appended as one JSON line to --log (a crash loses nothing done so far).

    OMP_NUM_THREADS=1 python benchmarks/recipe_ablation.py --data ../shared/data/cifar10-jpeg.tar.gz \\
        --out runs/ablation --variants fast reference --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from potq.allocator import retain_freed_memory
from potq.recipes import RECIPES
from potq.train import TrainConfig, train

FAST = RECIPES["fast"]
# one change each against `fast`; "reference" is the reference report's recipe cut to the same epochs
VARIANTS = {
    "fast": FAST,
    "reference": replace(RECIPES["seed"], epochs=FAST.epochs),
    "cosine-per-epoch": replace(FAST, schedule="cosine", warmup=0.0),
    "no-label-smoothing": replace(FAST, label_smoothing=0.0),
    "no-nesterov": replace(FAST, nesterov=False),
    "translate-4": replace(FAST, crop_pad=4),
    "batch-128": replace(FAST, batch_size=128, lr=FAST.lr / 2),
    "ema": replace(FAST, ema_decay=0.99),
    "lr-0.4": replace(FAST, lr=0.4),
    "lr-0.1": replace(FAST, lr=0.1),
    "no-norm-decay": replace(FAST, decay_norm_and_bias=False),
    "whiten": replace(FAST, whiten_first_conv=True),
    "no-translate": replace(FAST, crop_pad=0),
    "fp32": replace(FAST, precision="fp32"),
    "batch-64": replace(FAST, batch_size=64, lr=FAST.lr / 4),
    "label-smoothing-0.1": replace(FAST, label_smoothing=0.1),
}


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True, help="one run folder per variant and seed goes here")
    p.add_argument("--model", default="seed")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--val-size", type=int, default=5000, help="0 trains on all 50,000 training images")
    p.add_argument("--epochs", type=int, help="default: each variant's (10)")
    p.add_argument("--train-limit", type=int, help="train on the first N training images only")
    p.add_argument("--log", type=Path, help="JSON lines of results (default: OUT/results.jsonl)")
    a = p.parse_args()
    log = a.log or a.out / "results.jsonl"
    a.out.mkdir(parents=True, exist_ok=True)
    for seed in a.seeds:
        for name in a.variants:
            recipe_name = f"ablation-{name}"
            RECIPES[recipe_name] = VARIANTS[name]  # train() reads recipes by name
            tag = f"-e{a.epochs}-n{a.train_limit}" if a.epochs or a.train_limit else ""
            run = (
                a.out / f"{a.model}-{name}{tag}-s{seed}" if a.val_size else a.out / f"{a.model}-{name}{tag}-all-s{seed}"
            )
            t0 = time.perf_counter()
            cfg = TrainConfig(
                model=a.model,
                data=a.data,
                recipe=recipe_name,
                seed=seed,
                val_size=a.val_size,
                epochs=a.epochs,
                train_limit=a.train_limit,
            )
            m = train(cfg, run)
            row = {
                "model": a.model,
                "variant": name,
                "seed": seed,
                "test_accuracy": m["test_accuracy"],
                "train_images": m["train_images"],
                "epochs": m["epochs"],
                "best_val": max(h["val_acc"] for h in _history(run)) if a.val_size else None,
                "seconds": time.perf_counter() - t0,
                "recipe": asdict(VARIANTS[name]),
            }
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def _history(run: Path) -> list[dict]:
    import csv

    with (run / "history.csv").open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


if __name__ == "__main__":
    main()
