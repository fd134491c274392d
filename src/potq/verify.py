"""`potq verify`: the integer golden model against the simulated model on the whole test set, every
value of every node, bit for bit."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from potq.data import load_dataset
from potq.errors import UserError
from potq.files import save_json
from potq.golden import IntegerModel
from potq.ir.tensor import normalize
from potq.quant.simulate import simulated
from potq.runs.paths import verify_json
from potq.runs.quantize import load_quantized


def compare_models(graph, cfg, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> dict:
    """Run the golden model and the simulated model on uint8 images; compare every value of every node,
    bit for bit. Per batch the golden model runs first and keeps its values; the simulated model hands
    each of its values to `check` as soon as its codes exist, which compares it with the golden one and
    drops both (no second record, no pass to convert the simulated values back to codes)."""
    golden = IntegerModel(graph)
    sim = simulated(graph)
    mismatches: dict[str, int] = {}
    values, golden_correct, sim_correct = 0, 0, 0
    t_golden = t_sim = t_compare = 0.0
    g_rec: dict[str, torch.Tensor] = {}

    def check(v: str, codes: torch.Tensor) -> None:
        nonlocal values, t_compare
        t0 = time.perf_counter()
        g = g_rec.pop(v, None)
        if g is None:
            raise UserError(f"verify: the simulated model computes {v}, the golden model does not ({graph.scheme})")
        bad = count_mismatches(g, codes)
        if bad:
            mismatches[v] = mismatches.get(v, 0) + bad
        values += g.numel()
        t_compare += time.perf_counter() - t0

    with torch.no_grad():
        for i in range(0, len(images), batch):
            x, y = images[i : i + batch], labels[i : i + batch]
            t0 = time.perf_counter()
            g_rec.clear()
            g_logits = golden.run(x, g_rec, record_int32=False)
            t1 = time.perf_counter()
            s_logits = sim(normalize(x, cfg.mean, cfg.std), check=check)
            t_sim += time.perf_counter() - t1
            t_golden += t1 - t0
            if g_rec:
                raise UserError(f"verify: the golden model computes {sorted(g_rec)}, the simulated model does not")
            golden_correct += int((g_logits.argmax(1) == y).sum())
            sim_correct += int((s_logits.argmax(1) == y).sum())
    return {
        "images": len(images),
        "compared_values": values,
        "values_per_image": values // max(1, len(images)),
        "nodes": len(graph.nodes),
        "mismatches": sum(mismatches.values()),
        "mismatches_by_value": mismatches,
        "golden_accuracy": golden_correct / len(images),
        "simulated_accuracy": sim_correct / len(images),
        "golden_seconds": t_golden,
        "simulated_seconds": t_sim - t_compare,
        "compare_seconds": t_compare,
        "rounding": golden.rounding.label,
        "accumulators": golden.bounds_table(),
    }


def count_mismatches(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many of two tensors' integer values differ. Both sides usually carry 8-bit codes as float32
    and agree: numpy's array_equal then decides in one pass (about 3x faster than torch.equal here).
    Otherwise count in float64, exact for any int32 or float32 integer (an int32 against a float32 would
    round to float32)."""
    if a.dtype == b.dtype and np.array_equal(a.numpy(), b.numpy()):
        return 0
    return int(torch.ne(a.double(), b.double()).sum())


def verify_run(run, name: str, data: str | None = None, cache=None, batch: int = 500) -> dict:
    """`potq verify`: compare_models on the whole test set, saved as verify_<label>.json."""
    run = Path(run)
    graph, cfg = load_quantized(run, name)
    ds = load_dataset(data or cfg.data, cache, cfg.classes)
    images, labels = torch.from_numpy(np.array(ds.test_x)), torch.from_numpy(np.array(ds.test_y))
    result = {"label": name, **compare_models(graph, cfg, images, labels, batch)}
    save_json(result, verify_json(run, name))
    return result
