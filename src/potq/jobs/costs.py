"""What a model costs, made once: the graph that `potq energy` and `potq accel` cost and its zero points (a run's
quantized graph with its own zero points and shifts, or a float model's captured graph at potq's zero-point
policy, or the reference report's 128 everywhere; the API's network_costs reads the same), and the price of
every quantized model of a run at its own precision (`price_run`: precision.json and precision.png, which the
report's Precision section reads)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from potq import energy
from potq.accel.arch import COST_ARCH, COST_DATAFLOW, load_arch
from potq.accel.model import accel_report
from potq.files import read_json, record_edited, save_record
from potq.ir.capture import capture
from potq.ir.graph import Graph
from potq.plots import plot_fronts
from potq.quant.rules import SCHEMES
from potq.quant.scheme import policy_zero_points
from potq.runs.paths import PRECISION_JSON, PRECISION_PNG, QUANT_GLOB, label_of
from potq.runs.quantized import load_quantized, read_quantized


def model_graph(model: nn.Module, in_shape: tuple[int, ...], act_zero_point: int | None = None):
    """A float model's captured graph (no normalization: costs read no values) and its policy zero points."""
    graph = capture(model, in_shape, [0.0] * in_shape[0], [1.0] * in_shape[0])  # capture evaluates, then restores
    return graph, policy_zero_points(graph, act_zero_point)


def run_graph(run: Path, scheme: str, act_zero_point: int | None = None) -> tuple[Graph, dict[str, int] | None]:
    """A run's quantized graph; its own zero points (None) unless act_zero_point asks for the policy's."""
    graph = load_quantized(run, scheme)[0]
    return graph, policy_zero_points(graph, act_zero_point)


def model_costs(graph: Graph) -> dict:
    """A quantized model's compute energy (potq.energy: its own formats, the 45 nm table) and its energy with
    data movement on COST_ARCH (potq.accel: every level's bytes at the values' bits), per image."""
    table = energy.load_table(None)
    compute = sum(c.compute_pj(energy.Arith.INT8_POT, table) for c in energy.graph_costs(graph))
    accel = accel_report(graph, load_arch(COST_ARCH), COST_DATAFLOW)["total"]
    return {
        "compute_pj": compute,
        "energy_pj": accel["energy"]["total"],
        "cycles": accel["cycles"]["latency"],
        "dram_bytes": sum(accel["bytes"]["dram"].values()),
        "arch": f"{COST_ARCH} ({COST_DATAFLOW})",
    }


RECORD_KEYS = ("test_accuracy", "bits", "weights", "precision", "packed_weights_mb", "quant_sha256")


def precision_words(priced: dict) -> tuple[str, str]:
    """(bits, weights) as a table words a priced model: '4/4', 'apot'; 'mixed', 'per node' for a precision file's."""
    if priced.get("precision"):
        return "mixed", "per node"
    return priced.get("bits") or "8/8", priced.get("weights") or "int"


def _pot_records(run: Path) -> dict[str, dict]:
    """The records of a run's power-of-two quantized models, by label (float scales have no datapath to price)."""
    records = {label_of(p): read_json(p) for p in sorted(Path(run).glob(QUANT_GLOB))}
    return {k: r for k, r in records.items() if SCHEMES[r["scheme"]].pot}


def priced_change(run: Path) -> str | None:
    """Why precision.json is not what price_run would write now (a model missing, or quantized again), or None."""
    saved = read_json(Path(run) / PRECISION_JSON) if (Path(run) / PRECISION_JSON).exists() else {}
    if record_edited(saved):
        return f"{PRECISION_JSON} was edited after potq wrote it"
    for label, record in _pot_records(run).items():
        entry = saved.get(label, {})
        latency = isinstance(entry.get("cycles"), int)  # priced since potq 0.5
        if entry.get("quant_sha256") != record.get("quant_sha256") or not latency:
            return f"{PRECISION_JSON} does not price today's {label}"
    return None


def price_run(run: Path) -> dict[str, dict]:
    """Every power-of-two quantized model of a run, priced at its own precision: precision.json (each entry with
    the quant_sha256 of the model it priced, so a model quantized again since is told apart) and precision.png
    (accuracy against energy with data movement). `potq run`'s energy step and `potq compare` call it."""
    run = Path(run)
    priced = {}
    for label, record in _pot_records(run).items():
        graph, _, sha256 = read_quantized(run, label)  # the model priced, as read: a later one is told apart
        priced[label] = {**{k: record.get(k) for k in RECORD_KEYS}, **model_costs(graph), "quant_sha256": sha256}
    if priced:
        save_record(priced, run / PRECISION_JSON)
        arch = next(iter(priced.values()))["arch"]
        points = {k: (p["energy_pj"] / 1e6, p["cycles"], 100 * p["test_accuracy"]) for k, p in priced.items()}
        xlabels = [f"energy per image with data movement (uJ, {arch})", f"latency per image (cycles, {arch})"]
        fronts = [front(priced, "energy_pj"), front(priced, "cycles")]
        plot_fronts(points, xlabels, "test accuracy (%)", fronts, run / PRECISION_PNG)
    return priced


def front(priced: dict[str, dict], cost: str) -> list[str]:
    """The models on the front of accuracy against `cost` (a key of their prices): none of the others is at
    most as costly and at least as accurate, and better in one."""

    def point(p: dict) -> tuple[float, float]:
        return p[cost], -p["test_accuracy"]

    def dominated(p: dict) -> bool:
        return any(
            all(a <= b for a, b in zip(point(q), point(p), strict=True)) and point(q) != point(p)
            for q in priced.values()
        )

    return [k for k, p in priced.items() if not dominated(p)]


def compare_and_price(run: Path) -> str:
    """`potq compare`: the accuracy table of every quantized model (potq.jobs.quantize.compare), then each
    power-of-two model priced at its own precision (price_run), one line each."""
    from potq.jobs.quantize import compare  # it loads the trainer; the report imports this module: not at the top

    lines = [compare(Path(run))]
    for label, p in price_run(run).items():
        lines.append(
            f"{label}: {' '.join(precision_words(p))}, accuracy {p['test_accuracy']:.4f}, compute "
            f"{p['compute_pj'] / 1e6:.3f} uJ, with data movement {p['energy_pj'] / 1e6:.3f} uJ ({p['arch']})"
        )
    return "\n".join(lines)
