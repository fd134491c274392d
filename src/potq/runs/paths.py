"""The name of every artifact in a run folder, defined once: the steps, the report and the checks read
them from here."""

from __future__ import annotations

from pathlib import Path

SUMMARY = "summary.json"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"
HISTORY = "history.csv"
CURVES = "curves.png"
METRICS = "metrics.json"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
PRECISION_JSON = "precision.json"  # every quantized model priced (potq.jobs.costs.price_run)
PRECISION_PNG = "precision.png"  # its accuracy against modeled energy
ENERGY_JSON = "energy.json"
ENERGY_PNG = "energy.png"
ACCEL_JSON = "accel.json"
ACCEL_ROOFLINE_PNG = "accel_roofline.png"
ACCEL_ENERGY_PNG = "accel_energy.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
STEPS = "steps.json"
RUN_OPTIONS = "run.json"
PLAN = "plan.json"  # what `potq run --budget` measured and chose (potq.budget)
EXPORT_DIR = "export"
# what the consumers' libraries print themselves while potq checks them (TVM's and onnxruntime's own warnings)
THIRD_PARTY_LOG = "third-party.log"
QUANT_GLOB = "quant_*.json"  # the records of quant_paths
VERIFY_GLOB = "verify_*.json"

# what `potq run --force` may clear: the files potq writes into a run folder (never the user's)
POTQ_FILES = (
    SUMMARY,
    CONFIG,
    CHECKPOINT,
    WEIGHTS,
    HISTORY,
    CURVES,
    METRICS,
    COMPARE_MD,
    COMPARE_PNG,
    PRECISION_JSON,
    PRECISION_PNG,
    ENERGY_JSON,
    ENERGY_PNG,
    ACCEL_JSON,
    ACCEL_ROOFLINE_PNG,
    ACCEL_ENERGY_PNG,
    REPORT_MD,
    REPORT_HTML,
    STEPS,
    RUN_OPTIONS,
    PLAN,
    THIRD_PARTY_LOG,
)
# quant_paths, verify_json, deploy_json, precision_json
PER_MODEL_GLOBS = ("quant_*", "verify_*", "deploy_*", "precision_*")


def quant_paths(run: Path, label: str) -> tuple[Path, Path]:
    """A quantized model (its integer graph) and its record."""
    return Path(run) / f"quant_{label}.pt", Path(run) / f"quant_{label}.json"


def label_of(record: Path) -> str:
    """The quantized model's label in a per-model file's name: quant_<label>.json -> <label>."""
    return Path(record).stem.split("_", 1)[1]


def verify_json(run: Path, label: str) -> Path:
    return Path(run) / f"verify_{label}.json"


def deploy_json(run: Path, label: str) -> Path:
    return Path(run) / f"deploy_{label}.json"


SEARCH_GLOB = "precision_*.json"


def precision_json(run: Path, label: str) -> Path:
    """What `potq mixed` chose: a precision file (`potq quantize --precision` reads it) and its search."""
    return Path(run) / f"precision_{label}.json"
