"""The energy model: op counts and energy per layer, FP32 against INT8, from a table of costs.

Each Conv2d/Linear output costs, per the reference report's section 5:
- FP32: K multiplies, K-1 additions (summation), 1 addition (bias).
- INT8: K zero-point subtractions (INT8 add, only where the input zero point is not 0), K INT8
  multiplies, K-1 INT32 additions, 1 INT32 addition (bias), then requantization: one bit shift
  (power-of-two scales) or one FP32 multiply (float scales), and one INT8 addition for a non-zero
  output zero point. The last layer emits its int32 accumulators: no requantization.
BatchNorm is folded into the convolution; ReLU (a clamp) and max pooling (comparisons) are not
counted, as in the reference report. Memory energy reads every weight and input activation and
writes every output activation once, in 64-bit accesses, from one memory level.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from potq.errors import UserError

OPS = ("fp32_mult", "fp32_add", "int32_mult", "int32_add", "int8_mult", "int8_add", "shift")
OP_NAMES = {
    "fp32_mult": "FP32 mult",
    "fp32_add": "FP32 add",
    "int32_mult": "INT32 mult",
    "int32_add": "INT32 add",
    "int8_mult": "INT8 mult",
    "int8_add": "INT8 add",
    "shift": "bit shift",
}
MODELS = {"fp32": "FP32", "int8-float": "INT8, float requant", "int8-pot": "INT8, power-of-two"}


@dataclass
class Table:
    name: str
    compute: dict[str, float]
    memory: dict[str, float]


def load_table(path: Path | None = None) -> Table:
    """The default 45 nm table, or a JSON file of the same shape."""
    where = str(path) if path else "the default energy table"
    try:
        text = Path(path).read_text() if path else resources.files("potq").joinpath("energy_45nm.json").read_text()
        raw = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--table {where}: can't read it ({e})") from None
    compute, memory = raw.get("compute", {}), raw.get("memory_per_64bit_access", {})
    missing = [op for op in OPS if op not in compute]
    if missing:
        raise UserError(f"--table {where}: missing operation {', '.join(missing)} under 'compute'")
    for key, value in {**compute, **memory}.items():
        if not isinstance(value, int | float) or value < 0 or math.isnan(value):
            raise UserError(f"--table {where}: energy of {key} must be a non-negative number, got {value!r}")
    return Table(
        raw.get("name", where), {k: float(v) for k, v in compute.items()}, {k: float(v) for k, v in memory.items()}
    )


@dataclass
class Term:
    what: str
    op: str
    count: int  # per output


def mac_terms(model: str, k: int, in_zp: bool, out_zp: bool, requant: bool) -> list[Term]:
    """The operations behind one output of a layer with k inputs per output."""
    if model == "fp32":
        return [
            Term("input times weight", "fp32_mult", k),
            Term("summation", "fp32_add", k - 1),
            Term("add bias", "fp32_add", 1),
        ]
    terms = [Term("subtract zero point", "int8_add", k)] if in_zp else []
    terms += [
        Term("input times weight", "int8_mult", k),
        Term("summation", "int32_add", k - 1),
        Term("add bias", "int32_add", 1),
    ]
    if requant:
        terms.append(
            Term("power-of-two scale shift", "shift", 1)
            if model == "int8-pot"
            else Term("float requantization", "fp32_mult", 1)
        )
        if out_zp:
            terms.append(Term("add zero point", "int8_add", 1))
    return terms


@dataclass
class LayerCost:
    name: str
    type: str
    k: int  # inputs per output
    outputs: int
    weights: int
    biases: int
    in_acts: int
    in_zp: bool
    out_zp: bool
    requant: bool
    terms: dict[str, list[Term]] = field(default_factory=dict)

    def __post_init__(self):
        self.terms = {m: mac_terms(m, self.k, self.in_zp, self.out_zp, self.requant) for m in MODELS}

    def count(self, model: str, kind: str) -> int:
        """Total operations of a kind ('mult', 'add', 'shift') for a model."""
        return self.outputs * sum(t.count for t in self.terms[model] if t.op.endswith(kind))

    def compute_pj(self, model: str, table: Table) -> float:
        return self.outputs * sum(t.count * table.compute[t.op] for t in self.terms[model])

    def memory_bytes(self, model: str) -> int:
        if model == "fp32":
            return 4 * (self.weights + self.biases + self.in_acts + self.outputs)
        out_bytes = 4 if not self.requant else 1  # int32 logits, else uint8
        return self.weights + 4 * self.biases + self.in_acts + out_bytes * self.outputs

    def memory_pj(self, model: str, table: Table, level: str) -> float:
        return math.ceil(self.memory_bytes(model) / 8) * table.memory[level]

    @property
    def macs(self) -> int:
        return self.k * self.outputs


def network_costs(
    model: nn.Module, in_shape: tuple[int, int, int], act_zero_point: int | None = None
) -> list[LayerCost]:
    """Costs of every Conv2d/Linear of a zoo model. act_zero_point=None: potq's convention (zero
    point 0 after ReLU, 128 for the signed input); 128: the reference report's, everywhere."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    shapes: dict[str, tuple] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, (i[0].shape, o.shape))) for n, m in leaves
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *in_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    macs = [(i, n, m) for i, (n, m) in enumerate(leaves) if isinstance(m, nn.Conv2d | nn.Linear)]
    costs = []
    for j, (i, name, m) in enumerate(macs):
        in_shape_l, out_shape = shapes[name]
        last = j == len(macs) - 1
        relu_after = any(isinstance(mm, nn.ReLU) for _, mm in leaves[i + 1 : i + 3])
        if act_zero_point is None:
            in_zp, out_zp = j == 0, not relu_after
        else:
            in_zp = out_zp = act_zero_point != 0
        k = m.in_channels * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) else m.in_features
        costs.append(
            LayerCost(
                name,
                type(m).__name__,
                k,
                math.prod(out_shape[1:]),
                m.weight.numel(),
                m.bias.numel() if m.bias is not None else 0,
                math.prod(in_shape_l[1:]),
                in_zp,
                out_zp and not last,
                requant=not last,
            )
        )
    return costs


def linear_cost(n_in: int, n_out: int, act_zero_point: int) -> LayerCost:
    """One Linear layer, requantized like a hidden layer (the reference report's worked example)."""
    if n_in < 1 or n_out < 1:
        raise UserError(f"--linear sizes must be positive, got {n_in} {n_out}")
    zp = act_zero_point != 0
    return LayerCost("linear", "Linear", n_in, n_out, n_in * n_out, n_out, n_in, zp, zp, requant=True)


def fmt(x: float) -> str:
    return f"{round(x, 6):,.6g}" if abs(x) < 1e6 else f"{x:,.0f}"


def worked_example(cost: LayerCost, table: Table, model: str) -> str:
    """'10 x (128 x FP32 mult 3.7 [input times weight] + ...) = 5888 pJ', each term shown."""
    terms = " + ".join(f"{t.count} x {OP_NAMES[t.op]} {fmt(table.compute[t.op])} [{t.what}]" for t in cost.terms[model])
    per_output = sum(t.count * table.compute[t.op] for t in cost.terms[model])
    return (
        f"{MODELS[model]}: {cost.outputs} x ({terms}) = {cost.outputs} x {fmt(per_output)} = "
        f"{fmt(cost.compute_pj(model, table))} pJ"
    )


def linear_example(n_in: int, n_out: int, act_zero_point: int, table: Table) -> dict:
    """The worked example of one Linear layer: every model's sum, term by term, and its energy."""
    cost = linear_cost(n_in, n_out, act_zero_point)
    return {
        "terms": [worked_example(cost, table, m) for m in MODELS],
        "pj": {m: cost.compute_pj(m, table) for m in MODELS},
    }


def report(costs: list[LayerCost], table: Table, memory: str) -> dict:
    if memory not in table.memory:
        raise UserError(f"--memory {memory!r} is not in the table; choose from {', '.join(table.memory)}")
    layers = []
    for c in costs:
        layers.append(
            {
                "layer": c.name,
                "type": c.type,
                "macs": c.macs,
                "inputs_per_output": c.k,
                "outputs": c.outputs,
                "params": c.weights + c.biases,
                "activations_in": c.in_acts,
                "activations_out": c.outputs,
                "mults": {m: c.count(m, "mult") for m in MODELS},
                "adds": {m: c.count(m, "add") for m in MODELS},
                "shifts": c.count("int8-pot", "shift"),
                "compute_pj": {m: c.compute_pj(m, table) for m in MODELS},
                "memory_bytes": {m: c.memory_bytes(m) for m in MODELS},
                "memory_pj": {m: c.memory_pj(m, table, memory) for m in MODELS},
            }
        )
    total = {
        key: {m: sum(lay[key][m] for lay in layers) for m in MODELS}
        for key in ("compute_pj", "memory_pj", "memory_bytes")
    }
    total.update(
        macs=sum(lay["macs"] for lay in layers),
        params=sum(lay["params"] for lay in layers),
        shifts=sum(lay["shifts"] for lay in layers),
    )
    ratios = {
        "compute_fp32_over_int8_pot": total["compute_pj"]["fp32"] / total["compute_pj"]["int8-pot"],
        "compute_int8_float_over_int8_pot": total["compute_pj"]["int8-float"] / total["compute_pj"]["int8-pot"],
        "total_fp32_over_int8_pot": (total["compute_pj"]["fp32"] + total["memory_pj"]["fp32"])
        / (total["compute_pj"]["int8-pot"] + total["memory_pj"]["int8-pot"]),
    }
    return {"table": table.name, "memory_level": memory, "layers": layers, "total": total, "ratios": ratios}


def format_report(r: dict) -> str:
    lines = [
        "| Layer | Type | MACs | Adds (INT8 PoT) | Shifts | Params | FP32 (pJ) | INT8 float-requant (pJ) "
        "| INT8 PoT (pJ) | FP32 / PoT |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lay in r["layers"]:
        e = lay["compute_pj"]
        lines.append(
            f"| {lay['layer']} | {lay['type']} | {lay['macs']:,} | {lay['adds']['int8-pot']:,} | "
            f"{lay['shifts']:,} | {lay['params']:,} | {fmt(e['fp32'])} | {fmt(e['int8-float'])} | "
            f"{fmt(e['int8-pot'])} | {e['fp32'] / e['int8-pot']:.1f}x |"
        )
    t = r["total"]
    c, m = t["compute_pj"], t["memory_pj"]
    lines.append(
        f"| **Total compute** | | {t['macs']:,} | | {t['shifts']:,} | {t['params']:,} | {fmt(c['fp32'])} | "
        f"{fmt(c['int8-float'])} | {fmt(c['int8-pot'])} | {c['fp32'] / c['int8-pot']:.1f}x |"
    )
    lines.append(
        f"| **Memory ({r['memory_level']})** | | | | | | {fmt(m['fp32'])} | {fmt(m['int8-float'])} | "
        f"{fmt(m['int8-pot'])} | {m['fp32'] / m['int8-pot']:.1f}x |"
    )
    tot = {k: c[k] + m[k] for k in MODELS}
    lines.append(
        f"| **Total** | | | | | | {fmt(tot['fp32'])} | {fmt(tot['int8-float'])} | {fmt(tot['int8-pot'])} | "
        f"{tot['fp32'] / tot['int8-pot']:.1f}x |"
    )
    return "\n".join(lines)


def plot_report(r: dict, path: Path) -> None:
    from potq.plots import plot_bars

    labels = [lay["layer"] for lay in r["layers"]]
    series = {f"{MODELS[m]}, compute": [lay["compute_pj"][m] for lay in r["layers"]] for m in MODELS}
    for m in ("fp32", "int8-pot"):
        series[f"{MODELS[m]}, memory ({r['memory_level']})"] = [lay["memory_pj"][m] for lay in r["layers"]]
    plot_bars(
        labels, series, "energy per image (pJ, log scale)", "Energy per layer: compute and memory", path, log=True
    )
