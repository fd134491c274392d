"""`potq quantize` and `potq compare` on a run folder: quantize its trained model (potq.quant.pipeline),
optionally fine-tune (QAT, with the trainer), evaluate, record (potq.runs.quantized saves the integer graph)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from potq.data import load_dataset, test_subset
from potq.errors import UserError
from potq.files import read_record, save_record, save_text
from potq.ir.codes import weight_bytes
from potq.ir.graph import Graph
from potq.ir.tensor import normalize
from potq.plots import plot_bars
from potq.quant.lower import lower, min_weight_exponents, weight_scales_of
from potq.quant.pipeline import layer_table, quantize_graph
from potq.quant.rules import CALIB_IMAGES
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import SimNet, simulated
from potq.recipes import Recipe
from potq.runs.paths import COMPARE_MD, COMPARE_PNG, METRICS, QUANT_GLOB, quant_paths
from potq.runs.provenance import quantized_change, quantized_inputs, read_config
from potq.runs.quantized import quantize_command, save_quantized, weights_digest
from potq.train import (
    TrainConfig,
    evaluate,
    load_trained,
    make_optimizer,
    prepare_data,
    setup_dist,
    train_epoch,
)

# fine-tuning a converged model: a small learning rate, cosine-annealed (see benchmarks/RESULTS.md)
QAT_RECIPE = Recipe(lr=5e-4, weight_decay=5e-4, nesterov=True, eta_min=1e-6)


def label(settings: QuantSettings, qat_epochs: int) -> str:
    return settings.label(qat=bool(qat_epochs))


def qat(
    fgraph: Graph,
    qgraph: Graph,
    settings: QuantSettings,
    arrays: dict,
    cfg: TrainConfig,
    epochs: int,
    lr: float | None = None,
) -> Graph:
    """Fine-tune with fake quantization: straight-through rounding, weight scales tracked each step,
    activation scales fixed from calibration, BatchNorm already folded. Returns the graph lowered again."""
    d = setup_dist()
    recipe = Recipe(**{**asdict(QAT_RECIPE), "epochs": epochs, "lr": lr or QAT_RECIPE.lr})
    x, y = torch.from_numpy(arrays["train_x"]).to(d.device), torch.from_numpy(arrays["train_y"]).to(d.device)
    net = SimNet(fgraph, settings, qgraph.q, weight_scales_of(qgraph)).to(d.device)
    net.track_weights, net.min_exponent = True, min_weight_exponents(qgraph, settings)
    opt, sched = make_optimizer(net.parameters(), recipe)
    qcfg = TrainConfig(**{**asdict(cfg), "seed": cfg.seed + 7919})  # fresh shuffles, same data
    for epoch in range(1, epochs + 1):
        loss, acc = train_epoch(net, opt, nn.CrossEntropyLoss(), x, y, qcfg, recipe, epoch, d)
        sched.step()
        print(f"qat epoch {epoch}/{epochs}  train loss {loss:.4f} acc {acc:.4f}")
    net.cpu().eval()
    activations = {v: q for v, q in qgraph.q.items() if not q.accumulator}
    return lower(net.float_graph(), activations, settings)


def fp32_metrics(
    run: Path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> tuple[float, float]:
    """The FP32 model's (test loss, test accuracy): training measured them on the same test set."""
    try:
        m = json.loads((Path(run) / METRICS).read_text())
        if m.get("test_images") == len(x) and m.get("weights_sha256") in (None, weights_digest(run)):
            return float(m["test_loss"]), float(m["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return evaluate(model, x, y, cfg.mean, cfg.std)


def quantize_run(
    run: Path,
    settings: QuantSettings,
    calib: int = CALIB_IMAGES,
    qat_epochs: int = 0,
    qat_lr: float | None = None,
    data: str | None = None,
    cache: Path | None = None,
    stats_cache: dict | None = None,
    test_limit: int | None = None,
) -> dict:
    """Quantize the trained model in `run` and write quant_<label>.pt and quant_<label>.json;
    stats_cache: see quantize_graph (`potq run` shares one across its schemes); test_limit: evaluate on N
    test images drawn across the classes only (potq.data.test_subset; the FP32 model on the same ones)."""
    settings.check()
    if calib < 1:
        raise UserError(f"--calib must be at least 1, got {calib}")
    if qat_epochs < 0:
        raise UserError(f"--qat must be >= 0, got {qat_epochs}")
    if qat_lr is not None and not qat_lr > 0:
        raise UserError(f"--qat-lr must be positive, got {qat_lr}")
    t0 = time.perf_counter()
    model, cfg = load_trained(run)
    arrays = prepare_data(cfg, load_dataset(data or cfg.data, cache))  # the data the run was trained on
    if calib > len(arrays["train_x"]):
        raise UserError(f"--calib {calib} is more than the {len(arrays['train_x'])} training images of this run")
    calib_x = normalize(torch.from_numpy(arrays["train_x"][:calib]), cfg.mean, cfg.std)
    fgraph, graph = quantize_graph(model, cfg.in_shape, cfg.mean, cfg.std, calib_x, settings, stats_cache)
    if qat_epochs:
        graph = qat(fgraph, graph, settings, arrays, cfg, qat_epochs, qat_lr)
    test_x, test_y = (torch.from_numpy(a) for a in test_subset(arrays["test_x"], arrays["test_y"], test_limit))
    fp_loss, fp_acc = fp32_metrics(run, model, test_x, test_y, cfg)
    q_loss, q_acc = evaluate(simulated(graph), test_x, test_y, cfg.mean, cfg.std)
    name = label(settings, qat_epochs)
    model_path, json_path = quant_paths(run, name)
    quant_sha256 = save_quantized(graph, cfg, model_path, weights_digest(run))
    q_in = graph.q[graph.nodes[0].output]
    result = {
        "label": name,
        **settings_record(settings),
        "calib_images": calib,
        "qat_epochs": qat_epochs,
        "qat_lr": (qat_lr or QAT_RECIPE.lr) if qat_epochs else None,
        "test_accuracy": q_acc,
        "test_loss": q_loss,
        "test_images": len(test_x),
        "fp32_test_accuracy": fp_acc,
        "fp32_test_loss": fp_loss,
        "accuracy_drop": 100 * (fp_acc - q_acc),
        "model_size_mb": model_path.stat().st_size / 1e6,
        "packed_weights_mb": packed_weights_mb(graph),
        "input_exponent": q_in.exponent,
        "input_zero_point": q_in.zero_point,
        "nodes": len(graph.nodes),
        "layers": layer_table(graph),
        "seconds": time.perf_counter() - t0,
        "inputs": quantized_inputs(run, cfg.data_digest),  # potq.runs.provenance
        "quant_sha256": quant_sha256,
    }
    save_record(result, json_path)
    return result


def settings_record(settings: QuantSettings) -> dict:
    """The settings a quantized model was made with, as its record keeps them (SOURCE_KEYS reads them back)."""
    return {
        "scheme": settings.scheme,
        "exponent": settings.exponent_rule,
        "rounding": settings.rounding.label,
        "max_shift": settings.max_shift,
        "bits": f"{settings.w_bits}/{settings.a_bits}",
        "weights": settings.weights.value,
        "bits_all": settings.bits_all,
        "precision": [list(e) for e in settings.precision],
    }


def packed_weights_mb(graph: Graph) -> float:
    """What a weight memory holds: every weight at its bits (potq.ir.codes.weight_bytes), int32 biases."""
    return (
        sum(
            weight_bytes(n.tensors["weight"].numel(), n.weight_bits) + 4 * n.tensors["bias"].numel()
            for n in graph.mac_nodes()
        )
        / 1e6
    )


def change(drop: float) -> str:
    """An accuracy change that reads the right way round: '-0.21 (drop)', '+0.09 (gain)'."""
    if round(drop, 2) == 0:
        return "0.00"
    return f"{-drop:+.2f} ({'gain' if drop < 0 else 'drop'})"


def _exponent_rule(result: dict) -> str:
    """The record's exponent rule (QuantSettings.exponent_rule: None for float scales, "seed" for pot-seed)
    as the comparison table words it."""
    rule = {None: "float scale", "seed": "seed rule"}.get(result["exponent"], result["exponent"])
    low_bit = result.get("bits", "8/8") != "8/8" or result.get("weights", "int") != "int" or result.get("precision")
    return f"{rule}, mse below 8 bits" if low_bit and result["exponent"] not in (None, "seed", "mse") else rule


def compare_table(fp: dict, results: list[dict]) -> str:
    """The comparison of quantized models against FP32 (metrics.json's figures and each quant_<label>.json's),
    as compare.md and the report show it: made from the records, never read back from compare.md."""
    lines = [
        "| Model | Test accuracy | Change vs FP32 (points) | Test loss | File (MB) | Packed weights (MB) | Rounding "
        "| Exponent |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        f"| FP32 | {fp['test_accuracy']:.4f} | - | {fp['test_loss']:.4f} | {fp['model_size_mb']:.6f} | - | - | - |",
    ]
    for r in results:
        packed = f"{r['packed_weights_mb']:.6f}" if "packed_weights_mb" in r else "-"  # records before potq 0.5
        lines.append(
            f"| {r['label']} | {r['test_accuracy']:.4f} | {change(r['accuracy_drop'])} | {r['test_loss']:.4f} | "
            f"{r['model_size_mb']:.6f} | {packed} | {r['rounding']} | {_exponent_rule(r)} |"
        )
    return "\n".join(lines)


def compare(run: Path) -> str:
    """The table of every quantized model in `run` against FP32; writes compare.md and compare.png."""
    metrics_path = run / METRICS
    if not metrics_path.exists():
        raise UserError(f"--run {run}: no metrics.json; train a model there first")
    fp = read_record(metrics_path)  # the table shows their figures: an edited record is refused, not shown
    results = [read_record(p) for p in sorted(run.glob(QUANT_GLOB))]
    if not results:
        raise UserError(f"--run {run}: no quantized models yet; run `potq quantize` first")
    data_digest = read_config(run).data_digest  # what quantize checked the data against
    for r in results:
        stale = quantized_change(run, r["label"], data_digest)
        if stale:
            raise UserError(f"--run {run}: {r['label']}: {stale}; run {quantize_command(run, r['label'])} again")
    table = compare_table(fp, results)
    save_text(table + "\n", run / COMPARE_MD)
    accs = [100 * fp["test_accuracy"]] + [100 * r["test_accuracy"] for r in results]
    plot_bars(
        ["FP32"] + [r["label"] for r in results],
        {"test accuracy (%)": accs},
        "test accuracy (%)",
        "FP32 against INT8 schemes",
        run / COMPARE_PNG,
        ylim=(0, 100),  # from zero: a 0.1-point difference looks like one
    )
    return table
