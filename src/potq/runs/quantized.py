"""A run's quantized models: saved as their integer graph (potq.ir.io) with the training config and the
SHA-256 of the weights they came from, loaded only when those still match the run (potq.runs.provenance)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from potq.errors import UserError
from potq.files import file_digest, read_json, save_torch
from potq.ir import io
from potq.ir.graph import Graph
from potq.runs.paths import CONFIG, WEIGHTS, quant_paths
from potq.runs.provenance import check_model_file, read_config, same_model
from potq.train import TrainConfig


def weights_digest(run: Path) -> str | None:
    """SHA-256 of a run's trained weights: every quantized model records the weights it came from."""
    return file_digest(Path(run) / WEIGHTS)


def save_quantized(graph: Graph, cfg: TrainConfig, path: Path, weights: str | None) -> None:
    desc, tensors = io.to_dict(graph)
    save_torch({"graph": desc, "tensors": tensors, "config": asdict(cfg), "weights_sha256": weights}, path)


def quantize_command(run: Path, label: str) -> str:
    """The `potq quantize` command that makes quant_<label> again: its flags from the model's record where there
    is one (a label such as pot-channel-w4a4-apot is no --scheme of its own)."""
    _, meta = quant_paths(Path(run), label)
    try:
        r = read_json(meta)
    except (OSError, ValueError, UserError):
        return f"`potq quantize --run {run}` with the settings its label names ({label})"
    flags = [f"--scheme {r.get('scheme')}", f"--rounding {r.get('rounding')}"]
    if r.get("exponent") not in (None, "seed"):
        flags.append(f"--exponent {r['exponent']}")
    for key, flag in (("max_shift", "--max-shift"), ("bits", "--bits"), ("weights", "--weights")):
        if r.get(key) is not None:
            flags.append(f"{flag} {r[key]}")
    flags += ["--bits-all"] * bool(r.get("bits_all")) + ["--precision FILE"] * bool(r.get("precision"))
    flags += [f"--qat {r['qat_epochs']}"] * bool(r.get("qat_epochs"))
    return f"`potq quantize --run {run} {' '.join(flags)}`"


LEGACY_DEFAULT_PART = "-half-even"  # potq 0.4's label part for the rounding that is the default since 0.5


def load_quantized(run: Path, name: str) -> tuple[Graph, TrainConfig]:
    """The integer graph and the training config of a quantized model of a run."""
    path, _ = quant_paths(Path(run), name)
    if not path.exists():
        renamed = name.replace(LEGACY_DEFAULT_PART, "")
        if renamed != name and quant_paths(Path(run), renamed)[0].exists():
            raise UserError(f"--run {run}: half-even is the default rounding since potq 0.5: its label is {renamed}")
        raise UserError(f"--run {run}: no quantized model {path.name}; make it with {quantize_command(run, name)}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        graph = io.from_dict(saved["graph"], saved["tensors"].__getitem__)
        cfg, made_from = TrainConfig(**saved["config"]), saved.get("weights_sha256")
    except Exception as e:
        raise UserError(f"{path}: not a potq quantized model of this version ({type(e).__name__}: {e})") from None
    again = f"quantize this run again with {quantize_command(run, name)}"
    if made_from != weights_digest(run):
        raise UserError(f"{path}: made from other weights than this run's {WEIGHTS} (replaced since?); {again}")
    trained = read_config(Path(run)) if (Path(run) / CONFIG).exists() else cfg
    if not same_model(trained, cfg):
        raise UserError(f"{path}: a model {cfg.model!r}, but {Path(run) / CONFIG} names another (edited?); {again}")
    check_model_file(trained, path)
    return graph, cfg



SOURCE_KEYS = (
    "label", "scheme", "exponent", "rounding", "max_shift", "bits", "weights", "bits_all", "precision",
    "calib_images", "qat_epochs", "qat_lr",
)  # fmt: skip


def quantized_model_record(run: Path, name: str) -> dict:
    """Which quantized model an export holds: its label and settings, and the weights it came from."""
    _, meta_path = quant_paths(run, name)
    meta = read_json(meta_path) if meta_path.exists() else {}
    return {
        "run": str(run.resolve()),
        **{k: meta.get(k) for k in SOURCE_KEYS},
        "label": name,
        "test_accuracy": meta.get("test_accuracy"),
        "weights_sha256": weights_digest(run),
    }
