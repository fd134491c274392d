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
from potq.runs.provenance import derived_inputs
from potq.runs.quantize import load_quantized


def compare_models(graph, cfg, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> dict:
    """Run the golden model and the simulated model on uint8 images; compare every value of every node,
    bit for bit."""
    golden = IntegerModel(graph)
    sim = simulated(graph)
    mismatches: dict[str, int] = {}
    values, golden_correct, sim_correct = 0, 0, 0
    t_golden = t_sim = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x, y = images[i : i + batch], labels[i : i + batch]
            t0 = time.perf_counter()
            g_rec: dict = {}
            g_logits = golden.run(x, g_rec, record_int32=False)
            t1 = time.perf_counter()
            s_rec: dict = {}
            s_logits = sim(normalize(x, cfg.mean, cfg.std), s_rec)
            t_sim += time.perf_counter() - t1
            t_golden += t1 - t0
            if g_rec.keys() != s_rec.keys():
                raise UserError(f"verify: the golden and simulated models record different values ({graph.scheme})")
            for v, g in g_rec.items():
                bad = count_mismatches(g, s_rec[v])
                if bad:
                    mismatches[v] = mismatches.get(v, 0) + bad
                values += g.numel()
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
        "simulated_seconds": t_sim,
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


def verify_run(
    run, name: str, data: str | None = None, cache=None, batch: int = 500, test_limit: int | None = None
) -> dict:
    """`potq verify`: compare_models on the whole test set (or `test_limit` images drawn across its classes), saved as
    verify_<label>.json."""
    run = Path(run)
    graph, cfg = load_quantized(run, name)
    ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
    from potq.export import test_subset

    images, labels = (torch.from_numpy(a) for a in test_subset(ds.test_x, ds.test_y, test_limit))
    result = {"label": name, **compare_models(graph, cfg, images, labels, batch)}
    result["inputs"] = derived_inputs(run, name, ds.digest)  # potq.runs.provenance
    save_json(result, verify_json(run, name))
    return result
