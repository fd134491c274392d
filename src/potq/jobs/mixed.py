"""`potq mixed` on a run folder: each node's weight format chosen under a budget (potq.quant.mixed) for the run's
trained model, on the first calibration images of its training split (their labels: hawq's loss); writes
precision_<label>.json, the precision file `potq quantize --precision` reads, with the search beside it."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from potq.accel.arch import COST_ARCH, COST_DATAFLOW, load_arch
from potq.accel.model import check_dataflow
from potq.data import load_dataset
from potq.errors import UserError
from potq.files import save_json
from potq.ir.capture import capture
from potq.ir.codes import WeightCode
from potq.ir.tensor import normalize
from potq.quant.mixed import (
    ACCEL_OBJECTIVES,
    base_settings,
    check_search,
    default_act_menu,
    search_precision,
    search_record,
    sqnr_db,
)
from potq.quant.rules import MIXED_CALIB, MIXED_METHODS, QuantSettings
from potq.runs.paths import precision_json
from potq.runs.provenance import quantized_inputs
from potq.train import load_trained, prepare_data


def label(method: str, objective: str, budget: float, options: dict | None = None) -> str:
    """mixed-energy-0.5 (potq's method), hawq-bops-0.5: what precision_<label>.json was searched with; options
    (scheme, architecture, menu, ...) that differ from the defaults add a short fingerprint, so that no two
    searches share a file."""
    name = f"{'mixed' if method == MIXED_METHODS[0] else method}-{objective}-{budget:g}"
    if options:
        name += "-" + hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()[:8]
    return name


@dataclass(frozen=True)
class Search:
    """One `potq mixed` question, every argument checked (check): what the label and the search read."""

    settings: QuantSettings
    objective: str | None
    budget: float
    arch: str = COST_ARCH
    dataflow: str | None = None
    menu: tuple[int, ...] | None = None
    codes: tuple[WeightCode, ...] | None = None
    method: str = MIXED_METHODS[0]
    act_menu: tuple[int, ...] | None = None
    raise_to_cheapest: bool = False  # a budget below the cheapest assignment: search at that, not refuse

    def check(self) -> Search:
        """The search with its defaults resolved (objective None: the method's own; dataflow None: COST_DATAFLOW
        where the architecture runs it, else its first); one UserError line naming a bad argument."""
        m = self
        _, objective, act_menu = check_search(m.method, m.objective, m.budget, m.menu, m.codes, m.act_menu)
        base_settings(self.settings)
        target = load_arch(self.arch)
        dataflow = check_dataflow(target, self.dataflow or _own_dataflow(target))
        return replace(self, objective=objective, act_menu=act_menu, dataflow=dataflow)

    def label(self) -> str:
        """label() of this checked search: the options that differ from the defaults fingerprinted (not --calib,
        as quantize's labels)."""
        chosen = {"scheme": self.settings.scheme, "bits_all": self.settings.bits_all, "arch": self.arch}
        chosen.update(dataflow=self.dataflow, menu=self.menu, codes=self.codes and tuple(c.value for c in self.codes))
        chosen["act_menu"] = self.act_menu
        defaults = {"scheme": QuantSettings.scheme, "bits_all": False, "arch": COST_ARCH, "menu": None, "codes": None}
        defaults["act_menu"] = default_act_menu(self.method)
        chosen["raise_to_cheapest"], defaults["raise_to_cheapest"] = self.raise_to_cheapest, False
        defaults.update(dataflow=_own_dataflow(load_arch(self.arch)))
        return label(self.method, self.objective, self.budget, {k: v for k, v in chosen.items() if v != defaults[k]})


def _own_dataflow(target) -> str:
    """The dataflow models are priced at: COST_DATAFLOW where the architecture runs it, else its first."""
    return COST_DATAFLOW if COST_DATAFLOW in target.dataflows else target.dataflows[0]


def mixed_run(run: Path, search: Search, calib: int = MIXED_CALIB, data: str | None = None, cache=None) -> dict:
    """Search the run's model and write precision_<label>.json; every argument is checked before the run loads,
    and nothing is written unless the search ends."""
    t0 = time.perf_counter()
    q = search.check()
    if calib < 1:
        raise UserError(f"--calib must be at least 1, got {calib}")
    model, cfg = load_trained(run)
    arrays = prepare_data(cfg, load_dataset(data or cfg.data, cache))
    if calib > len(arrays["train_x"]):
        raise UserError(f"--calib {calib} is more than the {len(arrays['train_x'])} training images of this run")
    x = normalize(torch.from_numpy(arrays["train_x"][:calib]), cfg.mean, cfg.std)
    labels = torch.from_numpy(arrays["train_y"][:calib]).long()
    fgraph = capture(model, tuple(cfg.in_shape), cfg.mean, cfg.std)
    options = {"method": q.method, "objective": q.objective, "menu": q.menu, "codes": q.codes}
    options.update(act_menu=q.act_menu, labels=labels, raise_to_cheapest=q.raise_to_cheapest)
    target = load_arch(q.arch)
    r = search_precision(fgraph, x, q.settings, q.budget, target, q.dataflow, **options)
    name = q.label()
    record = {
        "label": name,
        **search_record(r),
        "scheme": q.settings.scheme,
        "bits_all": q.settings.bits_all,
        "arch": target.name,
        "dataflow": q.dataflow,
        "calib_images": calib,
        "seconds": time.perf_counter() - t0,
        "inputs": quantized_inputs(run, cfg.data_digest),  # the weights and the data it was searched on
    }
    path = precision_json(run, name)
    save_json(record, path)
    return {**record, "path": str(path)}


def _sqnr(record: dict, sensitivity: float) -> str:
    """The logits' SQNR of potq's sensitivity (a noise-to-signal ratio); hawq's has none."""
    if record["method"] != MIXED_METHODS[0]:
        return "-"
    db = sqnr_db(sensitivity)
    return "inf" if math.isinf(db) else f"{db:.1f}"


def mixed_lines(record: dict) -> list[str]:
    """What `potq mixed` prints: each node's choice, its cost and sensitivity, the total against the all-INT8
    model's, the solver's seconds, the front and the file written."""
    unit, int8 = record["unit"], record["menu"].index("int8") if "int8" in record["menu"] else None
    where = f" on {record['arch']} ({record['dataflow']})" if record["objective"] in ACCEL_OBJECTIVES else ""
    lines = [
        f"{record['label']}: {record['objective']} in {unit}{where}; sensitivity: {record['sensitivity_measure']}, "
        f"on {record['calib_images']} calibration images",
        f"| Node | Choice | Cost ({unit}) | All-INT8 cost | Sensitivity | Logits SQNR (dB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for node, choice in record["choice"].items():
        costs, s = record["costs"][node], record["sensitivities"][node][choice]
        eight = f"{list(costs.values())[int8]:,.4g}" if int8 is not None else "-"
        lines.append(f"| {node} | {choice} | {costs[choice]:,.4g} | {eight} | {s:.3g} | {_sqnr(record, s)} |")
    lines += _act_lines(record)
    lines += [
        f"kept 8-bit int: {', '.join(record['fixed']) or 'none'}",
        f"total {record['cost']:,.4g} {unit} = {record['fraction']:.4f} of the all-INT8 model's "
        f"{record['int8_cost']:,.4g}{_estimate(record)} "
        f"(budget {_budget(record)}); summed sensitivity {record['sensitivity']:.3g} "
        f"(logits SQNR {_sqnr(record, record['sensitivity'])} dB); solver {record['solver_seconds']:.3f} s",
        "front (budget: fraction of all-INT8, summed sensitivity): "
        + "; ".join(f"{p['budget']:g}: {p['fraction']:.3f}, {p['sensitivity']:.3g}" for p in record["front"]),
        f"-> {record['path']}",
    ]
    return lines


def _budget(record: dict) -> str:
    asked = record.get("budget_asked")
    if asked is None or asked == record["budget"]:
        return f"{record['budget']:g}"
    return f"{record['budget']:.4f}, the cheapest assignment: {asked:g} was below it"


def _act_lines(record: dict) -> list[str]:
    """The activation groups' table: each group's width, its cost and sensitivity (none for a weights search)."""
    if not record["act_choice"]:
        return []
    lines = ["| Activations (group) | Bits | Cost of the nodes it carries | Sensitivity |", "|---|---:|---:|---:|"]
    for group, bits in record["act_choice"].items():
        cost, s = record["act_costs"][group][f"a{bits}"], record["act_sensitivities"][group][f"a{bits}"]
        lines.append(f"| {group} | {bits} | {cost:,.4g} | {s:.3g} |")
    return lines


def _estimate(record: dict) -> str:
    """The program's own sum beside the exact total, where activations were searched."""
    if not record["act_choice"]:
        return ""
    return f" (the program's estimate {record['estimated_cost'] / record['int8_cost']:.4f})"
