"""Provenance: what each artifact of a run was computed from, and whether it still is.

The records (every fingerprint a SHA-256):
- config.json (TrainConfig): `data_digest`, the data's content (potq.data.Dataset.digest, never its path), and
  `model_digest`, the user's model file (None for a zoo model); metrics.json: `weights_sha256`, the weights.pt
  its figures are of, and `config_sha256`, config.json's fields that change a result (config_digest);
- quant_<label>.json: `inputs` {weights, data} and `quant_sha256`, its quant_<label>.pt's own fingerprint (the
  .pt itself keeps the training config and `weights_sha256`);
- verify_/deploy_<label>.json, energy.json, accel.json and export/model.json's `quantized_model`: `inputs`
  {quantized model, data (where it reads images)}, made by `derived_inputs`; summary.json: {data, model file}.

Who checks: `potq run` calls a step done only when its artifacts are there and their inputs are what is there
now (a stale step is redone; a stale training, the user's work, is refused with one line naming what changed);
every command that reads a trained or quantized model refuses one whose inputs changed (load_trained,
load_quantized, and potq.data.load_dataset for the data). Evidence: tests/test_provenance.py, one test per
kind of change, each failing on potq 0.3 (issue 21) or 0.4 (issue 32).

When (issue 32): each fingerprint is taken as its input is read: the quantized model's from the bytes parsed
(potq.runs.quantized.read_quantized), the data's from the arrays loaded (a cache entry's checked against the
fingerprint recorded beside it, potq.data). The result records carry their own fingerprint too
(potq.files.save_record): one edited by hand is redone here, and refused where it is shown (the report,
`compare`); an edited metrics.json, the training's, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from potq.errors import UserError
from potq.files import file_digest, read_json, record_edited
from potq.models import source_digest, source_file
from potq.recipes import TrainConfig
from potq.runs.paths import CONFIG, METRICS, WEIGHTS, quant_paths

# the inputs by the names that the messages give them
WEIGHTS_INPUT, DATA_INPUT, QUANT_INPUT, MODEL_INPUT = "weights", "data", "quantized model", "model file"


def first_change(recorded: dict | None, current: dict) -> str | None:
    """The first input whose fingerprint differs from the record, in words; a record without inputs (an
    older potq's) counts as changed: redoing a derived step costs only time."""
    if not isinstance(recorded, dict):
        return "it records no inputs (an older potq wrote it)"
    for name, value in current.items():
        if recorded.get(name) != value:
            return f"the {name} changed since it was made"
    return None


def check_model_file(cfg: TrainConfig, where: Path) -> None:
    """The user's model file is the one the weights were trained with (a zoo model records nothing)."""
    if cfg.model_digest and source_digest(cfg.model) != cfg.model_digest:
        raise UserError(
            f"{where}: trained with another version of the model file {source_file(cfg.model)} (edited since, "
            "or a module of yours that it imports); "
            "train anew, or restore the file"
        )


def same_model(a: TrainConfig, b: TrainConfig) -> bool:
    """The same zoo model, or the same factory of the same model file (by content: a moved file is the same)."""
    if a.model == b.model:
        return True
    factory = a.model.rpartition(":")[2] == b.model.rpartition(":")[2]
    return factory and a.model_digest is not None and a.model_digest == b.model_digest


# config.json's fields that name a place, not a result: the data's content and the model file's are
# fingerprinted on their own (data_digest, model_digest), so a run moved with its data still answers
PLACE_FIELDS = ("data", "model")


def config_digest(cfg: TrainConfig) -> str:
    """SHA-256 of every config.json field that changes a result (the normalization's mean and std, the class
    order, val_size, the seed, the recipe, ...: all but PLACE_FIELDS); metrics.json records it at training."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in PLACE_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def config_change(run: Path, cfg: TrainConfig) -> str | None:
    """Why config.json is not the one its training recorded (an edit), or None (a run of potq 0.4 or older
    recorded none: nothing to compare)."""
    metrics = Path(run) / METRICS
    recorded = read_json(metrics).get("config_sha256") if metrics.exists() else None
    if recorded is not None and config_digest(cfg) != recorded:
        return f"{CONFIG} was edited after training (a field that changes results, e.g. mean, std or the classes)"
    return None


def read_config(run: Path, checked: bool = True) -> TrainConfig:
    """A run's training config; `checked`: refused where it was edited after training (config_change)."""
    try:
        cfg = TrainConfig(**read_json(run / CONFIG))
    except TypeError as e:
        raise UserError(f"{run / CONFIG}: not a potq training config ({e})") from None
    reason = config_change(run, cfg) if checked else None
    if reason:
        raise UserError(f"--run {run}: {reason}; restore it, or train anew")
    return cfg


def training_change(run: Path, model: str, data_digest: str) -> str | None:
    """What changed since `run` was trained, in words, or None: config.json naming another model, a
    replaced or missing weights.pt, other data at the same path, an edited model file."""
    cfg = read_config(run, checked=False)
    if cfg.model != model:
        return f"{CONFIG} names model {cfg.model!r}, but the run is of {model!r} (edited?)"
    edited = config_change(run, cfg)
    if edited:
        return edited
    weights = file_digest(run / WEIGHTS)
    if weights is None:
        return f"{WEIGHTS} is missing"
    metrics = read_json(run / METRICS)
    if metrics.get("weights_sha256") not in (None, weights):
        return f"{WEIGHTS} is not the file that training wrote (replaced?)"
    if record_edited(metrics):
        return f"{METRICS} was edited after training wrote it (its figures are not training's)"
    if cfg.data_digest not in (None, data_digest):
        return f"the data at {cfg.data} is not what it was trained on (its content changed)"
    if cfg.model_digest not in (None, source_digest(model)):
        return f"the model file {source_file(model)} changed since (or a module of yours that it imports)"
    return None


def quantized_inputs(run: Path, data_digest: str | None) -> dict:
    """What a quantized model is made from: the trained weights and the data (calibration, the splits); the
    data left out where it is not known (`compare` on a run of potq 0.3, whose config.json records none)."""
    weights = {WEIGHTS_INPUT: file_digest(Path(run) / WEIGHTS)}
    return weights if data_digest is None else {**weights, DATA_INPUT: data_digest}


def quantized_change(run: Path, label: str, data_digest: str | None, options: dict | None = None) -> str | None:
    """Why quant_<label> is not today's (missing, replaced, made from other weights or data, or with other
    `options`: {flag: (its key in the record, the value wanted)}), or None."""
    model, record = quant_paths(run, label)
    for p in (model, record):
        if not p.exists():
            return f"{p.name} is missing"
    try:
        saved = read_json(record)
    except UserError:
        return f"{record.name} is unreadable"
    if "quant_sha256" not in saved:
        return first_change(None, {})  # a record of potq 0.3: made again, its inputs recorded this time
    if saved.get("quant_sha256") != file_digest(model):
        return f"{model.name} is not the file that {record.name} describes (replaced?)"
    for flag, (key, wanted) in (options or {}).items():
        if saved.get(key) != wanted:
            return f"{record.name} was made with {flag} {saved.get(key)}, not {wanted}"
    changed = first_change(saved.get("inputs"), quantized_inputs(run, data_digest))
    return changed or (f"{record.name} was edited after potq wrote it" if record_edited(saved) else None)


def summary_inputs(model: str, data_digest: str) -> dict:
    """What summary.json is made from: the model (its file, for a user's) and the data (its image shape)."""
    return {DATA_INPUT: data_digest, MODEL_INPUT: source_digest(model)}


def derived_inputs(run: Path, label: str, data_digest: str | None = None, quant_sha256: str | None = None) -> dict:
    """What a result of quant_<label> is made from: the quantized model (`quant_sha256`, the bytes the result
    was computed from, potq.runs.quantized.read_quantized; else the file as it is now, for a check), and the
    data where the result reads images (verify, export, deploy; not energy and accel)."""
    inputs = {QUANT_INPUT: quant_sha256 or file_digest(quant_paths(run, label)[0])}
    return inputs if data_digest is None else {**inputs, DATA_INPUT: data_digest}


def derived_change(path: Path, current: dict, key: tuple[str, ...] = ()) -> str | None:
    """Why the result at `path` (its inputs under `key` in the JSON) is not today's, or None."""
    if not path.exists():
        return f"{path.name} is missing"
    try:
        record: object = read_json(path)
    except UserError:
        return f"{path.name} is unreadable"
    whole = record
    for k in key:
        record = record.get(k) if isinstance(record, dict) else None
    changed = first_change(record.get("inputs") if isinstance(record, dict) else None, current)
    return changed or (f"{path.name} was edited after potq wrote it" if record_edited(whole) else None)
