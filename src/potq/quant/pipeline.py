"""`potq quantize` and `potq compare`: calibrate (PTQ), optionally fine-tune (QAT), evaluate, record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from potq.data import load_dataset, normalize
from potq.errors import UserError
from potq.files import save_json, save_text, save_torch
from potq.plots import plot_bars
from potq.quant.arith import exponent
from potq.quant.qnet import SCHEMES, QuantNet, QuantSettings, build_quantnet, calibrate, export_state, import_state
from potq.train import (
    Recipe,
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
    return settings.scheme + ("-qat" if qat_epochs else "")


def qat(net: QuantNet, arrays: dict, cfg: TrainConfig, epochs: int, lr: float | None = None) -> None:
    """Fine-tune with fake quantization: straight-through rounding, weight scales tracked each step,
    activation scales fixed from calibration. BatchNorm is already folded, so nothing to freeze."""
    d = setup_dist()
    recipe = Recipe(**{**asdict(QAT_RECIPE), "epochs": epochs, "lr": lr or QAT_RECIPE.lr})
    x, y = torch.from_numpy(arrays["train_x"]).to(d.device), torch.from_numpy(arrays["train_y"]).to(d.device)
    net.to(d.device)
    opt, sched = make_optimizer(net.parameters(), recipe)
    for layer in net.layers:
        layer.track_weights = net.settings
    qcfg = TrainConfig(**{**asdict(cfg), "seed": cfg.seed + 7919})  # fresh shuffles, same data
    for epoch in range(1, epochs + 1):
        loss, acc = train_epoch(net, opt, nn.CrossEntropyLoss(), x, y, qcfg, recipe, epoch, d)
        sched.step()
        print(f"qat epoch {epoch}/{epochs}  train loss {loss:.4f} acc {acc:.4f}")
    with torch.no_grad():
        net(normalize(x[:2], cfg.mean, cfg.std))  # settle the final weight scales
    for layer in net.layers:
        layer.track_weights = None
    net.cpu().eval()


def layer_table(net: QuantNet) -> list[dict]:
    rows = []
    for layer in net.layers:
        w_exps = [exponent(float(s)) for s in layer.w_scale]
        in_e, out_e = exponent(float(layer.in_scale)), exponent(float(layer.out_scale))
        pot = None not in w_exps and in_e is not None and out_e is not None
        shifts = [out_e - in_e - we for we in w_exps] if pot and not layer.last else None
        rows.append(
            {
                "name": layer.name,
                "type": layer.kind,
                "relu": layer.relu,
                "weight_scale": [float(s) for s in layer.w_scale] if not pot else None,
                "weight_exponent": w_exps if pot else None,
                "input_exponent": in_e,
                "input_zero_point": layer.in_zp,
                "output_exponent": None if layer.last else out_e,
                "output_zero_point": None if layer.last else layer.out_zp,
                "shift": shifts,
                "shift_min": min(shifts) if shifts else None,
                "shift_max": max(shifts) if shifts else None,
                "output": "int32 logits" if layer.last else f"uint8, clamp [{layer.out_lo}, {layer.out_hi}]",
            }
        )
    return rows


def quant_paths(run: Path, name: str) -> tuple[Path, Path]:
    return run / f"quant_{name}.pt", run / f"quant_{name}.json"


def load_quantized(run: Path, name: str) -> tuple[dict, TrainConfig]:
    """The saved integer state (see qnet.export_state) and the training config of a quantized model;
    `import_state` turns the state into the simulated model, `IntegerModel.from_state` into the golden one."""
    path, _ = quant_paths(Path(run), name)
    if not path.exists():
        raise UserError(f"--run {run}: no quantized model {path.name}; run `potq quantize --scheme {name}` first")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        import_state(saved["state"])  # a file that does not rebuild is not a potq model
        return saved["state"], TrainConfig(**saved["config"])
    except Exception as e:
        raise UserError(f"{path}: not a potq quantized model ({type(e).__name__})") from None


def quantize_run(
    run: Path,
    settings: QuantSettings,
    calib: int = 1000,
    qat_epochs: int = 0,
    qat_lr: float | None = None,
    data: str | None = None,
    cache: Path | None = None,
) -> dict:
    """Quantize the trained model in `run` and write quant_<label>.pt and quant_<label>.json."""
    settings.check()
    if calib < 1:
        raise UserError(f"--calib must be at least 1, got {calib}")
    if qat_epochs < 0:
        raise UserError(f"--qat must be >= 0, got {qat_epochs}")
    if qat_lr is not None and not qat_lr > 0:
        raise UserError(f"--qat-lr must be positive, got {qat_lr}")
    t0 = time.perf_counter()
    model, cfg = load_trained(run)
    arrays = prepare_data(cfg, load_dataset(data or cfg.data, cache))
    if calib > len(arrays["train_x"]):
        raise UserError(f"--calib {calib} is more than the {len(arrays['train_x'])} training images of this run")
    net = build_quantnet(model, settings)
    calib_x = normalize(torch.from_numpy(arrays["train_x"][:calib]), cfg.mean, cfg.std)
    calibrate(net, calib_x)
    if qat_epochs:
        qat(net, arrays, cfg, qat_epochs, qat_lr)
    test_x, test_y = torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"])
    fp_loss, fp_acc = evaluate(model, test_x, test_y, cfg.mean, cfg.std)
    q_loss, q_acc = evaluate(net, test_x, test_y, cfg.mean, cfg.std)
    name = label(settings, qat_epochs)
    model_path, json_path = quant_paths(run, name)
    save_torch({"config": asdict(cfg), "state": export_state(net)}, model_path)
    result = {
        "scheme": settings.scheme,
        "label": name,
        "exponent": settings.exponent,
        "rounding": settings.rounding,
        "max_shift": settings.max_shift,
        "calib_images": calib,
        "qat_epochs": qat_epochs,
        "qat_lr": (qat_lr or QAT_RECIPE.lr) if qat_epochs else None,
        "test_accuracy": q_acc,
        "test_loss": q_loss,
        "fp32_test_accuracy": fp_acc,
        "fp32_test_loss": fp_loss,
        "accuracy_drop": 100 * (fp_acc - q_acc),
        "model_size_mb": model_path.stat().st_size / 1e6,
        "input_exponent": exponent(float(net.in_scale)),
        "input_zero_point": net.in_zp,
        "layers": layer_table(net),
        "seconds": time.perf_counter() - t0,
    }
    save_json(result, json_path)
    return result


def _exponent_rule(result: dict) -> str:
    spec = SCHEMES.get(result["scheme"])
    if spec is None or not spec.pot:
        return "float scale"
    return "seed rule" if spec.seed else result["exponent"]


def compare(run: Path) -> str:
    """The table of every quantized model in `run` against FP32; writes compare.md and compare.png."""
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        raise UserError(f"--run {run}: no metrics.json; train a model there first")
    fp = json.loads(metrics_path.read_text())
    results = [json.loads(p.read_text()) for p in sorted(run.glob("quant_*.json"))]
    if not results:
        raise UserError(f"--run {run}: no quantized models yet; run `potq quantize` first")
    lines = [
        "| Model | Test accuracy | Drop (points) | Test loss | Size (MB) | Rounding | Exponent |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| FP32 | {fp['test_accuracy']:.4f} | - | {fp['test_loss']:.4f} | {fp['model_size_mb']:.6f} | - | - |",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['test_accuracy']:.4f} | {r['accuracy_drop']:+.2f} | {r['test_loss']:.4f} | "
            f"{r['model_size_mb']:.6f} | {r['rounding']} | {_exponent_rule(r)} |"
        )
    table = "\n".join(lines)
    save_text(table + "\n", run / "compare.md")
    accs = [100 * fp["test_accuracy"]] + [100 * r["test_accuracy"] for r in results]
    plot_bars(
        ["FP32"] + [r["label"] for r in results],
        {"test accuracy (%)": accs},
        "test accuracy (%)",
        "FP32 against INT8 schemes",
        run / "compare.png",
        ylim=(max(0, min(accs) - 3), min(100, max(accs) + 1)),
    )
    return table
