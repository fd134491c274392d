"""The energy model: op counts and energy per node, FP32 against INT8, from a table of costs.

It costs the graph itself (potq.ir): a quantized graph with its real zero points and shifts, or a
captured float graph with potq's zero-point policy. Each Conv (grouped included: k = in_channels /
groups x kernel area) and Linear output costs, per the reference report's section 5:
- FP32: K multiplies, K-1 additions (summation), 1 addition (bias).
- INT8: K zero-point subtractions (INT8 add, only where the input zero point is not 0), K INT8
  multiplies, K-1 INT32 additions, 1 INT32 addition (bias), then requantization: one bit shift
  (power-of-two scales) or one FP32 multiply (float scales), and one INT8 addition for a non-zero
  output zero point. The last layer emits its int32 accumulators: no requantization.
An Add output: FP32 one addition; INT8 a zero-point subtraction per input with a non-zero zero point,
an alignment shift per input that needs one, one INT32 addition, then requantization as above. An
AvgPool output over k values: FP32 k-1 additions and one multiply (by 1/k); INT8 k zero-point
subtractions (non-zero zero point), k-1 INT32 additions, then requantization (the division is part of
the shift). BatchNorm is folded into the convolution; ReLU (a clamp), max pooling (comparisons),
concatenation and flattening are not counted, as in the reference report. Memory energy reads every
weight and input activation and writes every output activation once, in 64-bit accesses, from one memory level.

Below eight bits (a quantized graph's node formats, potq.ir.codes) only the product and the bytes change:
- `int` weights of b_w bits times b_x-bit codes: one multiply priced at INT8 mult x (b_x * b_w) / 64. An array
  multiplier has one partial-product cell per pair of operand bits, so its energy follows the product of the
  widths; the 45 nm table itself bears the rule out (Horowitz, ISSCC 2014: 8-bit mult 0.2 pJ, 32-bit 3.1 pJ,
  against (32 / 8)^2 x 0.2 = 3.2 pJ).
- `pot` weights: the product is one shift of the input (a bit shift in the table), no multiply.
- `apot` weights: two shifts and one INT8 add (the two terms' sum).
- The summation stays an INT32 add per product, as at 8 bits, while the accumulator is int32 (`accumulator
  "int32"`, the reference report's). With `accumulator "proven"` (potq.ir.bounds.ACCUMULATORS) the summation and
  the bias add are b-bit adds, b the node's proven accumulator width, priced linearly in b through the table's
  INT8 and INT32 adds (a ripple-carry adder has one full-adder cell per bit; Horowitz's 16-bit add, 0.05 pJ,
  sits on that line within 0.004 pJ), and in proportion to b below 8 bits.
- Memory: weights at their bits, packed; activations at their codes' bits (int32 logits at 4 bytes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path

from potq.errors import UserError
from potq.ir.bounds import accumulator_bits
from potq.ir.codes import WeightCode, code_bytes, weight_bytes
from potq.ir.graph import Graph, Node, OpType, window
from potq.ir.rules import ACCUMULATORS, CODE_BITS, INT32_BITS

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


class Arith(Enum):
    """The arithmetic a layer is costed in: the energy model's columns. Its value names it in the JSON."""

    FP32 = "fp32"
    INT8_FLOAT = "int8-float"  # INT8 with float scales: a multiplier per output requantizes
    INT8_POT = "int8-pot"  # INT8 with power-of-two scales: a shift requantizes


ARITH_LABELS = {Arith.FP32: "FP32", Arith.INT8_FLOAT: "INT8, float requant", Arith.INT8_POT: "INT8, power-of-two"}
MODELS = {a.value: ARITH_LABELS[a] for a in Arith}  # the report's columns, by their JSON keys


@dataclass
class Table:
    name: str
    compute: dict[str, float]
    memory: dict[str, float]

    def add_pj(self, bits: int) -> float:
        """A b-bit integer add: linear in b through the table's 8- and 32-bit adds, in proportion below 8 bits."""
        lo, hi = self.compute["int8_add"], self.compute["int32_add"]
        if bits <= CODE_BITS:
            return lo * bits / CODE_BITS
        return lo + (hi - lo) * (bits - CODE_BITS) / (INT32_BITS - CODE_BITS)


def load_table(path: Path | None = None) -> Table:
    """The default 45 nm table, or a JSON file of the same shape."""
    where = str(path) if path else "the default energy table"
    try:
        text = Path(path).read_text() if path else resources.files("potq").joinpath("energy_45nm.json").read_text()
        raw = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--table {where}: can't read it ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--table {where}: must be a JSON object with 'compute' and 'memory_per_64bit_access'")
    compute, memory = raw.get("compute", {}), raw.get("memory_per_64bit_access", {})
    if not isinstance(compute, dict) or not isinstance(memory, dict):
        raise UserError(f"--table {where}: 'compute' and 'memory_per_64bit_access' must be objects")
    missing = [op for op in OPS if op not in compute]
    if missing:
        raise UserError(f"--table {where}: missing operation {', '.join(missing)} under 'compute'")
    if not memory:
        raise UserError(f"--table {where}: no memory level under 'memory_per_64bit_access'")
    for key, value in {**compute, **memory}.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise UserError(f"--table {where}: energy of {key} must be a finite non-negative number, got {value!r}")
    return Table(
        raw.get("name", where), {k: float(v) for k, v in compute.items()}, {k: float(v) for k, v in memory.items()}
    )


@dataclass
class Term:
    what: str
    op: str
    count: int  # per output
    scale: float = 1.0  # of the table's energy for `op` (a multiplier narrower than 8 x 8 bits)
    bits: int | None = None  # an add `bits` wide (Table.add_pj), not the table's `op` as it is

    def pj(self, table: Table) -> float:
        """Energy of this term for one output."""
        each = table.compute[self.op] if self.bits is None else table.add_pj(self.bits)
        return self.count * self.scale * each


@dataclass(frozen=True)
class Operands:
    """A MAC node's operand widths and weight format (8-bit int codes and weights unless the graph says)."""

    x_bits: int = CODE_BITS
    w_bits: int = CODE_BITS
    code: WeightCode = WeightCode.INT
    acc_bits: int = INT32_BITS  # the accumulator's width (potq.ir.bounds.accumulator_bits)

    def sum_terms(self, k: int) -> list[Term]:
        """The summation of k products and the bias add, in the accumulator's adder."""
        if self.acc_bits == INT32_BITS:
            return [Term("summation", "int32_add", k - 1), Term("add bias", "int32_add", 1)]
        what = f" ({self.acc_bits}-bit accumulator)"
        return [
            Term("summation" + what, "int32_add", k - 1, bits=self.acc_bits),
            Term("add bias" + what, "int32_add", 1, bits=self.acc_bits),
        ]

    def product_terms(self, k: int) -> list[Term]:
        """The k products behind one output, by the weights' format (see the module's docstring)."""
        if self.code is WeightCode.POT:
            return [Term("input times weight: one shift (pot weight)", "shift", k)]
        if self.code is WeightCode.APOT:
            return [
                Term("input times weight: two shifts (apot weight)", "shift", 2 * k),
                Term("add the two shifted terms (apot weight)", "int8_add", k),
            ]
        scale = self.x_bits * self.w_bits / CODE_BITS**2
        what = "input times weight" + ("" if scale == 1 else f" ({self.x_bits} x {self.w_bits}-bit multiply)")
        return [Term(what, "int8_mult", k, scale)]


def requant_terms(model: Arith, out_zp: bool) -> list[Term]:
    terms = [
        Term("power-of-two scale shift", "shift", 1)
        if model is Arith.INT8_POT
        else Term("float requantization", "fp32_mult", 1)
    ]
    return terms + ([Term("add zero point", "int8_add", 1)] if out_zp else [])


def mac_terms(
    model: Arith, k: int, in_zp: bool, out_zp: bool, requant: bool, operands: Operands = Operands()
) -> list[Term]:
    """The operations behind one output of a layer with k inputs per output."""
    if model is Arith.FP32:
        return [
            Term("input times weight", "fp32_mult", k),
            Term("summation", "fp32_add", k - 1),
            Term("add bias", "fp32_add", 1),
        ]
    terms = [Term("subtract zero point", "int8_add", k)] if in_zp else []
    terms += [*operands.product_terms(k), *operands.sum_terms(k)]
    return terms + (requant_terms(model, out_zp) if requant else [])


def add_terms(model: Arith, in_zps: int, aligned: int, out_zp: bool) -> list[Term]:
    """One output of a residual addition; `aligned` inputs need a left shift to the common scale."""
    if model is Arith.FP32:
        return [Term("add", "fp32_add", 1)]
    terms = [Term("subtract zero point", "int8_add", in_zps)] if in_zps else []
    if model is Arith.INT8_POT:
        terms += [Term("align scales", "shift", aligned)] if aligned else []
    else:
        terms += [Term("rescale input", "fp32_mult", 2)]
    return terms + [Term("add", "int32_add", 1)] + requant_terms(model, out_zp)


def avgpool_terms(model: Arith, k: int, in_zp: bool, out_zp: bool) -> list[Term]:
    if model is Arith.FP32:
        return [Term("summation", "fp32_add", k - 1), Term("times 1/k", "fp32_mult", 1)]
    terms = [Term("subtract zero point", "int8_add", k)] if in_zp else []
    return terms + [Term("summation", "int32_add", k - 1)] + requant_terms(model, out_zp)


@dataclass
class LayerCost:
    """What one node costs per image: `terms` per model, for each of its `outputs`."""

    name: str
    type: str
    k: int  # inputs per output (MACs per output for Conv/Linear)
    outputs: int
    weights: int
    biases: int
    in_acts: int
    terms: dict[Arith, list[Term]]
    requant: bool = True
    mac: bool = False  # a Conv or Linear: k multiply-accumulates per output
    bits: tuple[int, int, int] = (CODE_BITS, CODE_BITS, CODE_BITS)  # weights, input codes, output codes

    def count(self, model: Arith, kind: str) -> int:
        """Total operations of a kind ('mult', 'add', 'shift') for a model."""
        return self.outputs * sum(t.count for t in self.terms[model] if t.op.endswith(kind))

    def compute_pj(self, model: Arith, table: Table) -> float:
        return self.outputs * sum(t.pj(table) for t in self.terms[model])

    def memory_bytes(self, model: Arith) -> int:
        if not isinstance(model, Arith):  # a label would fall through to the INT8 branch unnoticed
            raise TypeError(f"{model!r} is not an Arith (parse labels with Arith(label) at the edge)")
        if model is Arith.FP32:
            return 4 * (self.weights + self.biases + self.in_acts + self.outputs)
        w_bits, in_bits, out_bits = self.bits
        out_bytes = 4 * self.outputs if not self.requant else code_bytes(self.outputs, out_bits)  # int32 logits
        return weight_bytes(self.weights, w_bits) + 4 * self.biases + code_bytes(self.in_acts, in_bits) + out_bytes

    def memory_pj(self, model: Arith, table: Table, level: str) -> float:
        return math.ceil(self.memory_bytes(model) / 8) * table.memory[level]

    @property
    def macs(self) -> int:
        return self.k * self.outputs if self.mac else 0


def mac_cost(
    name: str,
    type_: str,
    k: int,
    outputs: int,
    weights: int,
    biases: int,
    in_acts: int,
    in_zp: bool,
    out_zp: bool,
    requant: bool,
    operands: Operands = Operands(),
    out_bits: int = CODE_BITS,
) -> LayerCost:
    terms = {m: mac_terms(m, k, in_zp, out_zp, requant, operands) for m in Arith}
    bits = (operands.w_bits, operands.x_bits, out_bits)
    return LayerCost(name, type_, k, outputs, weights, biases, in_acts, terms, requant, mac=True, bits=bits)


# ---- kernels: one per op type (None: not counted, as in the reference report) --------------------


# the reference report's names for the layers it counts (the tables' "Type" column)
LAYER_TYPES = {OpType.CONV: "Conv2d", OpType.LINEAR: "Linear", OpType.ADD: "Add", OpType.AVGPOOL: "AvgPool"}


def _mac(g: Graph, n: Node, zp: dict[str, int], accumulator: str = ACCUMULATORS[0]) -> LayerCost:
    w = n.tensors["weight"]
    requant = not g.emits_accumulators(n)
    return mac_cost(
        n.name,
        LAYER_TYPES[n.op],
        w[0].numel(),
        math.prod(g.shapes[n.output]),
        w.numel(),
        w.shape[0],
        math.prod(g.shapes[n.inputs[0]]),
        zp[n.inputs[0]] != 0,
        requant and zp[n.output] != 0,
        requant,
        _operands(g, n, accumulator),
        g.q[n.output].bits if g.quantized else CODE_BITS,
    )


def _operands(g: Graph, n: Node, accumulator: str = ACCUMULATORS[0]) -> Operands:
    """A MAC node's operand widths, weight format and accumulator: the quantized graph's, else 8-bit int."""
    if not g.quantized:
        return Operands()
    return Operands(g.q[n.inputs[0]].bits, n.weight_bits, n.weight_code, accumulator_bits(g, n, accumulator))


def _add(g: Graph, n: Node, zp: dict[str, int], accumulator: str = ACCUMULATORS[0]) -> LayerCost:
    align = n.tensors["align"].tolist() if "align" in n.tensors else [1, 0]  # a float graph: assume one
    terms = {
        m: add_terms(m, sum(zp[v] != 0 for v in n.inputs), sum(a > 0 for a in align), zp[n.output] != 0) for m in Arith
    }
    outputs = math.prod(g.shapes[n.output])
    return LayerCost(n.name, LAYER_TYPES[n.op], 2, outputs, 0, 0, 2 * outputs, terms, bits=_code_bits(g, n))


def _avgpool(g: Graph, n: Node, zp: dict[str, int], accumulator: str = ACCUMULATORS[0]) -> LayerCost:
    k = window(n)
    terms = {m: avgpool_terms(m, k, zp[n.inputs[0]] != 0, zp[n.output] != 0) for m in Arith}
    outputs, in_acts = math.prod(g.shapes[n.output]), math.prod(g.shapes[n.inputs[0]])
    return LayerCost(n.name, LAYER_TYPES[n.op], k, outputs, 0, 0, in_acts, terms, bits=_code_bits(g, n))


def _code_bits(g: Graph, n: Node) -> tuple[int, int, int]:
    """(weights, input codes, output codes) widths of a node without weights (an add's inputs share a width
    in every graph potq makes: the widest is taken)."""
    if not g.quantized:
        return (CODE_BITS, CODE_BITS, CODE_BITS)
    return (CODE_BITS, max(g.q[v].bits for v in n.inputs), g.q[n.output].bits)


def _free(g: Graph, n: Node, zp: dict[str, int], accumulator: str = ACCUMULATORS[0]) -> None:
    return None


# (graph, node, zero points, accumulator) -> its cost; an add's and a pool's few sums stay int32 adds
ENERGY_KERNELS: dict[OpType, Callable[[Graph, Node, dict[str, int], str], LayerCost | None]] = {
    OpType.INPUT: _free,  # a table lookup per pixel, outside the datapath the report counts
    OpType.CONV: _mac,
    OpType.LINEAR: _mac,
    OpType.ADD: _add,
    OpType.MAXPOOL: _free,
    OpType.AVGPOOL: _avgpool,
    OpType.CONCAT: _free,
    OpType.FLATTEN: _free,
}


def graph_costs(
    graph: Graph, zero_points: dict[str, int] | None = None, accumulator: str = ACCUMULATORS[0]
) -> list[LayerCost]:
    """Costs of every counted node, with each value's zero point: a quantized graph's own (None), or the
    ones given (a float graph's, by a zero-point policy: potq.quant.scheme.policy_zero_points); accumulator:
    potq.ir.bounds.ACCUMULATORS."""
    if zero_points is None:
        if not graph.quantized:
            raise ValueError("a float graph is costed with the zero points of a policy: pass zero_points")
        zero_points = {v: q.zero_point for v, q in graph.q.items()}
    costs = [ENERGY_KERNELS[n.op](graph, n, zero_points, accumulator) for n in graph.nodes]
    return [c for c in costs if c is not None]


def linear_cost(n_in: int, n_out: int, act_zero_point: int) -> LayerCost:
    """One Linear layer, requantized like a hidden layer (the reference report's worked example)."""
    if n_in < 1 or n_out < 1:
        raise UserError(f"--linear sizes must be positive, got {n_in} {n_out}")
    zp = act_zero_point != 0
    return mac_cost("linear", LAYER_TYPES[OpType.LINEAR], n_in, n_out, n_in * n_out, n_out, n_in, zp, zp, requant=True)


def fmt(x: float) -> str:
    return f"{round(x, 6):,.6g}" if abs(x) < 1e6 else f"{x:,.0f}"


def worked_example(cost: LayerCost, table: Table, model: Arith) -> str:
    """'10 x (128 x FP32 mult 3.7 [input times weight] + ...) = 5888 pJ', each term shown."""
    terms = " + ".join(
        f"{t.count} x {OP_NAMES[t.op]} {fmt(t.scale * table.compute[t.op])} [{t.what}]" for t in cost.terms[model]
    )
    per_output = sum(t.pj(table) for t in cost.terms[model])
    return (
        f"{ARITH_LABELS[model]}: {cost.outputs} x ({terms}) = {cost.outputs} x {fmt(per_output)} = "
        f"{fmt(cost.compute_pj(model, table))} pJ"
    )


def linear_example(n_in: int, n_out: int, act_zero_point: int, table: Table) -> dict:
    """The worked example of one Linear layer: every model's sum, term by term, and its energy."""
    cost = linear_cost(n_in, n_out, act_zero_point)
    return {
        "terms": [worked_example(cost, table, m) for m in Arith],
        "pj": {m.value: cost.compute_pj(m, table) for m in Arith},
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
                "mults": {m.value: c.count(m, "mult") for m in Arith},
                "adds": {m.value: c.count(m, "add") for m in Arith},
                "shifts": c.count(Arith.INT8_POT, "shift"),
                "compute_pj": {m.value: c.compute_pj(m, table) for m in Arith},
                "memory_bytes": {m.value: c.memory_bytes(m) for m in Arith},
                "memory_pj": {m.value: c.memory_pj(m, table, memory) for m in Arith},
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
    for m in (Arith.FP32.value, Arith.INT8_POT.value):
        series[f"{MODELS[m]}, memory ({r['memory_level']})"] = [lay["memory_pj"][m] for lay in r["layers"]]
    plot_bars(
        labels, series, "energy per image (pJ, log scale)", "Energy per layer: compute and memory", path, log=True
    )
