"""A run's quantized models: saved as their integer graph (potq.ir.io) with the training config and the
SHA-256 of the weights they came from, loaded only when those still match the run (potq.runs.provenance)."""

from __future__ import annotations

import hashlib
import io as bytes_io
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from potq.errors import UserError
from potq.files import file_digest, read_json, read_record, save_bytes
from potq.ir import io
from potq.ir.graph import Graph
from potq.runs.paths import CONFIG, WEIGHTS, quant_paths
from potq.runs.provenance import check_model_file, read_config, same_model
from potq.train import TrainConfig


def weights_digest(run: Path) -> str | None:
    """SHA-256 of a run's trained weights: every quantized model records the weights it came from."""
    return file_digest(Path(run) / WEIGHTS)


def save_quantized(graph: Graph, cfg: TrainConfig, path: Path, weights: str | None) -> str:
    """Write quant_<label>.pt; its SHA-256, of the bytes written (the record's quant_sha256: hashed from what
    this process wrote, not read back from a file another process may have replaced meanwhile)."""
    desc, tensors = io.to_dict(graph)
    buffer = bytes_io.BytesIO()
    torch.save({"graph": desc, "tensors": tensors, "config": asdict(cfg), "weights_sha256": weights}, buffer)
    data = buffer.getvalue()
    save_bytes(data, path)
    return hashlib.sha256(data).hexdigest()


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


class Loaded(NamedTuple):
    """A quantized model as read: its graph, its training config and the SHA-256 of the very bytes it was
    read from (what a result computed from it records: potq.runs.provenance.derived_inputs)."""

    graph: Graph
    cfg: TrainConfig
    sha256: str


def read_quantized(run: Path, name: str) -> Loaded:
    """A run's quantized model, fingerprinted as it is read: the file is read once, hashed, and parsed from
    those bytes, so that a `potq quantize` replacing it meanwhile can't pair its fingerprint with results of
    the model read before (issue 32)."""
    path, _ = quant_paths(Path(run), name)
    if not path.exists():
        renamed = name.replace(LEGACY_DEFAULT_PART, "")
        if renamed != name and quant_paths(Path(run), renamed)[0].exists():
            raise UserError(f"--run {run}: half-even is the default rounding since potq 0.5: its label is {renamed}")
        raise UserError(f"--run {run}: no quantized model {path.name}; make it with {quantize_command(run, name)}")
    try:
        data = path.read_bytes()
        saved = torch.load(bytes_io.BytesIO(data), map_location="cpu", weights_only=True)
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
    return Loaded(graph, cfg, hashlib.sha256(data).hexdigest())


def load_quantized(run: Path, name: str) -> tuple[Graph, TrainConfig]:
    """The integer graph and the training config of a quantized model of a run (read_quantized)."""
    graph, cfg, _ = read_quantized(run, name)
    return graph, cfg


SOURCE_KEYS = (
    "label", "scheme", "exponent", "rounding", "max_shift", "bits", "weights", "bits_all", "precision",
    "calib_images", "qat_epochs", "qat_lr",
)  # fmt: skip


def quantized_model_record(run: Path, name: str, sha256: str | None = None) -> dict:
    """Which quantized model an export holds: its label and settings, and the weights it came from; `sha256`,
    the model as read (read_quantized), which its record must describe (not a model quantized again since)."""
    _, meta_path = quant_paths(run, name)
    meta = read_record(meta_path) if meta_path.exists() else {}  # its figures go into the export: unedited
    if sha256 is not None and meta.get("quant_sha256") not in (None, sha256):
        raise UserError(
            f"{meta_path}: describes another {name} than the one read (quantized again meanwhile?); run it again"
        )
    return {
        "run": str(run.resolve()),
        **{k: meta.get(k) for k in SOURCE_KEYS},
        "label": name,
        "test_accuracy": meta.get("test_accuracy"),
        "weights_sha256": weights_digest(run),
    }
