"""`potq verify`: the integer golden model against the simulated model on the whole test set, every
value of every node, bit for bit.

One GEMM per node where the two are provably the same numbers (`proven_gemms`): at a requantizing MAC
node that both models run exactly in float32 with their output scale folded in, the simulated model
multiplies its input (c - zp) * 2^e_in by its folded weights ws and adds its folded bias bs, the golden
model multiplies c - zp by wg and adds bg. Where ws * 2^e_in == wg and bs == bg element for element (checked
once, in float64), with the same op, attributes and rounding, and where the input's codes matched in this
batch (checked just before), every product and partial sum of the one is the other's exactly (both below
2^24 steps, potq.ir.bounds), so the simulated model takes the golden model's GEMM output and applies its
own rounding, clamp and scaling to it, and its values are compared as before. Anywhere else, or with
share_gemms=False, it computes its own GEMM; tests/test_verify.py holds the two ways to the same counts,
with mismatches planted in the weights and in the values.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from potq.data import load_dataset, test_subset
from potq.errors import UserError
from potq.files import save_record
from potq.golden import IntegerModel
from potq.ir.tensor import normalize
from potq.quant.simulate import simulated
from potq.runs.paths import verify_json
from potq.runs.provenance import derived_inputs
from potq.runs.quantized import read_quantized


def compare_models(
    graph, cfg, images: torch.Tensor, labels: torch.Tensor, batch: int = 500, share_gemms: bool = True
) -> dict:
    """Run the golden model and the simulated model on uint8 images; compare every value of every node,
    bit for bit. Per batch the golden model runs first and keeps its values; the simulated model hands
    each of its values to `check` as soon as its codes exist, which compares it with the golden one and
    drops both (no second record, no pass to convert the simulated values back to codes)."""
    golden = IntegerModel(graph)
    sim = simulated(graph)
    golden.keep_gemms = proven_gemms(golden, sim) if share_gemms else set()
    consumers: dict[str, list[str]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            consumers.setdefault(v, []).append(n.name)
    mismatches: dict[str, int] = {}
    values, golden_correct, sim_correct = 0, 0, 0
    t_golden = t_sim = t_compare = 0.0
    shared = 0  # node-batches where the simulated model took the golden model's GEMM output
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
            for name in consumers.get(v, []):  # different inputs: the consumer's GEMM is the simulated model's own
                golden.kept.pop(name, None)
        values += g.numel()
        t_compare += time.perf_counter() - t0

    with torch.no_grad():
        for i in range(0, len(images), batch):
            x, y = images[i : i + batch], labels[i : i + batch]
            t0 = time.perf_counter()
            g_rec.clear()
            golden.kept.clear()
            g_logits = golden.run(x, g_rec, record_int32=False)
            t1 = time.perf_counter()
            sim.shared_gemms = golden.kept  # the simulated model takes each as it comes to that node
            shared += len(golden.kept)
            s_logits = sim(normalize(x, cfg.mean, cfg.std), check=check)
            shared -= len(golden.kept)  # not taken: recomputed by the simulated model
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
        "shared_gemms": shared,
        "shared_gemm_nodes": sorted(golden.keep_gemms),
        "rounding": golden.rounding.label,
        "accumulators": golden.bounds_table(),
    }


def proven_gemms(golden: IntegerModel, sim) -> set[str]:
    """The requantizing MAC nodes whose folded GEMM gives the same numbers in both models for the same
    input codes (see the module docstring): both on their exact float32 path, the same op and attributes,
    the same rounding left after folding, and ws * 2^e_in == wg, bs == bg on every element."""
    if not sim.all_float32():
        return set()
    s_nodes = {n.name: n for n in sim.graph.nodes}
    proven = set()
    for n in golden.graph.mac_nodes():
        sn = s_nodes.get(n.name)
        if not n.requant or n.name not in golden.float32 or sn is None or not sim.node_float32(sn):
            continue
        if sn.op is not n.op or sn.inputs != n.inputs or sn.attrs != n.attrs:
            continue
        wg, bg, rule_g = golden.folded(n)
        ws, bs, rule_s = sim.folded(sn)
        e_in = golden.graph.q[n.inputs[0]].exponent
        if rule_g is rule_s and torch.equal(ws.double() * 2.0**e_in, wg.double()) and torch.equal(bs, bg):
            proven.add(n.name)
    return proven


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
    graph, cfg, quant_sha256 = read_quantized(run, name)  # fingerprinted as read, not when the result is saved
    ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
    images, labels = (torch.from_numpy(a) for a in test_subset(ds.test_x, ds.test_y, test_limit))
    result = {"label": name, **compare_models(graph, cfg, images, labels, batch)}
    result["inputs"] = derived_inputs(run, name, ds.digest, quant_sha256)  # potq.runs.provenance
    save_record(result, verify_json(run, name))
    return result
