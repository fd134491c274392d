"""Mixed precision chosen by the hardware (issue 28): per MAC node the weight format, from a menu, that hurts the
model least under a budget of one cost from potq's own models, by an exact integer linear program.

The menu: widths (--menu, 2-8) crossed with weight codes (--codes int, pot, apot) where the width can hold the
code (potq.ir.codes.WEIGHT_BITS). Activations stay 8-bit codes in this first step: a node's output width would
change the next node's input bytes and products, so that neither a cost nor a sensitivity would be one node's
own any more; with 8-bit activations both are, and the program below is exact. The first and the last MAC node
stay 8-bit int unless --bits-all (potq.quant.precision.edge_nodes), a constant of every assignment.

Sensitivity, method potq: measured. Node i alone at choice c, every other node 8-bit int: the noise-to-signal
ratio of the logits against the all-INT8 model's on the calibration images, NSR = mean((y_ic - y_8)^2) /
mean(y_8^2) (the logits' SQNR is -10 log10 NSR dB). The powers of independent errors add, so the sum that the
program minimizes estimates the whole assignment's NSR (a sum of dB would estimate nothing); the logits rather
than an accuracy because they move with every choice (an accuracy on a few hundred images is flat over most)
and need no labels. Affordable: a node's integers depend on its own format only (its input's and output's
QTypes come from one set of calibration statistics, collected once), so the graph is lowered once per choice
with every node at it, a candidate takes one node from there (`with_node`), and the simulated model
(potq.quant.simulate) runs from that node on, the values before it taken from one run of the all-INT8 model.

Sensitivity, method hawq (HAWQ-V3, Yao et al., ICML 2021): 4- and 8-bit int only; per node the average Hessian
trace (trace / weights) of the float model's cross-entropy on the calibration images in the node's weights
(Hutchinson's estimator, Rademacher probes; the images' labels where given, else the float model's own argmax)
times ||W_q - W||^2 of its weights at the choice.

Costs per image, per node and choice (a model's total is the sum of its nodes'; nodes outside the search are a
constant):
- energy: the node's energy with data movement, its row of potq.accel.model.accel_report (default: COST_ARCH,
  the architecture every quantized model's record is priced on);
- latency: the node's cycles there (the rows add up to the model's latency);
- compute: the node's compute energy (potq.energy: its format's products);
- size: its packed weights (potq.ir.codes.weight_bytes) and int32 biases;
- bops: bit operations, MACs x weight bits x input bits (HAWQ-V3's).
The program: one binary per (node, choice), exactly one choice per node, total cost <= budget x the all-INT8
model's, least total sensitivity (scipy.optimize.milp: HiGHS, relative gap 0); the front: the same program at
budgets FRONT_BUDGETS.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch.nn import functional as F

from potq import energy
from potq.accel.arch import Arch
from potq.accel.model import accel_report
from potq.errors import UserError
from potq.ir.codes import WEIGHT_BITS, WeightCode, weight_bytes
from potq.ir.graph import Graph
from potq.ir.rules import CODE_BITS
from potq.quant.lower import Stats, calibrate, collect_stats, input_means, lower
from potq.quant.precision import edge_nodes
from potq.quant.rules import (
    MIXED_CODES,
    MIXED_MENU,
    MIXED_METHODS,
    MIXED_OBJECTIVE,
    MIXED_OBJECTIVES,
    POT_SCHEMES,
    QuantSettings,
    check_menu,
)
from potq.quant.scheme import needs_sample
from potq.quant.simulate import SIM_KERNELS, SimNet, dequantize, simulated

ACCEL_OBJECTIVES = ("energy", "latency")  # the costs that the architecture prices (the others are its own)
HAWQ_PROBES = 8  # Rademacher vectors per batch of images (PyHessian's traces settle within a few tens)
FRONT_BUDGETS = tuple(round(0.3 + 0.05 * k, 2) for k in range(15))  # 0.3, 0.35, ..., 1.0


@dataclass(frozen=True)
class Choice:
    """One format a node's weights may take; its output stays an 8-bit code."""

    bits: int
    code: WeightCode

    @property
    def label(self) -> str:
        """int4, pot3, apot5: how tables and files name it."""
        return f"{self.code.value}{self.bits}"

    def entry(self, name: str) -> tuple[str, int, str, int]:
        """Node `name` at this choice, as a precision entry (QuantSettings.precision)."""
        return (name, self.bits, self.code.value, CODE_BITS)


INT8 = Choice(CODE_BITS, WeightCode.INT)
HAWQ_CHOICES = (Choice(4, WeightCode.INT), INT8)
SENSITIVITY_MEASURES = {  # what each method's sensitivity is (the module docstring says why)
    "potq": "the logits' noise-to-signal ratio against the all-INT8 model, that node alone at that choice",
    "hawq": "average Hessian trace of the float model's cross-entropy x ||W_q - W||^2 (HAWQ-V3)",
}


def menu_choices(method: str, menu: tuple[int, ...] | None, codes: tuple[WeightCode, ...] | None) -> list[Choice]:
    """The method's menu, checked: potq's every width of `menu` crossed with every code of `codes` that the width
    holds (None: MIXED_MENU, MIXED_CODES); hawq's 4- and 8-bit int, which takes no menu."""
    if method not in MIXED_METHODS:
        raise UserError(f"--method {method}: choose from {', '.join(MIXED_METHODS)}")
    if method == "hawq":
        if menu is not None or codes is not None:
            raise UserError("--menu and --codes: --method hawq searches 4- and 8-bit int weights only")
        return list(HAWQ_CHOICES)
    menu = MIXED_MENU if menu is None else tuple(menu)
    check_menu(menu)
    codes = MIXED_CODES if codes is None else tuple(codes)
    choices = [Choice(b, c) for c in codes for b in sorted(set(menu)) if b in WEIGHT_BITS[c]]
    if not choices:
        widths = ", ".join(f"{c.value} {WEIGHT_BITS[c].start}-{WEIGHT_BITS[c].stop - 1}" for c in codes)
        raise UserError(f"--menu {','.join(map(str, menu))}: no width for the codes given (bits: {widths})")
    return choices


def check_search(
    method: str, objective: str | None, budget: float, menu: tuple[int, ...] | None, codes
) -> tuple[list[Choice], str]:
    """(the menu, the objective: the method's own where None) of a search, every argument checked before any
    work: one UserError line naming the argument."""
    choices = menu_choices(method, menu, codes)
    objective = MIXED_OBJECTIVE[method] if objective is None else objective
    if objective not in MIXED_OBJECTIVES:
        raise UserError(f"--objective {objective}: choose from {', '.join(MIXED_OBJECTIVES)}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < math.inf:
        raise UserError(f"--budget {budget}: give a positive fraction of the all-INT8 model's {objective}, e.g. 0.5")
    return choices, objective


def base_settings(settings: QuantSettings) -> QuantSettings:
    """The settings a search lowers with: the scheme and rules of `settings`, every node 8-bit int weights and
    8-bit activations (each choice comes as precision entries over them)."""
    if not settings.spec.pot:
        raise UserError(
            f"--scheme {settings.scheme}: mixed precision takes a power-of-two scheme ({', '.join(POT_SCHEMES)})"
        )
    return replace(settings, w_bits=CODE_BITS, a_bits=CODE_BITS, weights=WeightCode.INT, precision=())


def searched_nodes(fgraph: Graph, settings: QuantSettings) -> tuple[list[str], list[str]]:
    """(the MAC nodes the search decides, the MAC nodes kept 8-bit int), in graph order."""
    edge = edge_nodes(fgraph, settings)
    macs = [n.name for n in fgraph.mac_nodes()]
    names = [m for m in macs if m not in edge]
    if not names:
        raise UserError("--bits-all: this model has no MAC node besides its first and last; search those too")
    return names, [m for m in macs if m in edge]


# ---- costs -------------------------------------------------------------------------------------------


def cost_unit(objective: str, arch: Arch) -> str:
    return {"energy": arch.energy_unit, "latency": "cycles", "compute": "pJ", "size": "bytes", "bops": "bit-ops"}[
        objective
    ]


def node_costs(qgraph: Graph, objective: str, arch: Arch, dataflow: str | None = None) -> dict[str, float]:
    """Each node's cost per image by the objective (see the module docstring); the graph's total is their sum."""
    if objective in ACCEL_OBJECTIVES:
        rows = accel_report(qgraph, arch, dataflow)["layers"]
        key = ("energy", "total") if objective == "energy" else ("cycles", "latency")
        return {r["node"]: float(r[key[0]][key[1]]) for r in rows}
    costs = energy.graph_costs(qgraph)
    if objective == "compute":
        table = energy.load_table(None)
        return {c.name: c.compute_pj(energy.Arith.INT8_POT, table) for c in costs}
    macs = {n.name: n for n in qgraph.mac_nodes()}
    if objective == "size":
        return {
            name: float(weight_bytes(n.tensors["weight"].numel(), n.weight_bits) + 4 * n.tensors["bias"].numel())
            for name, n in macs.items()
        }
    return {
        c.name: float(c.macs * macs[c.name].weight_bits * qgraph.q[macs[c.name].inputs[0]].bits)
        for c in costs
        if c.name in macs
    }


def cost_table(
    ref: Graph, alts: list[Graph], names: list[str], objective: str, arch: Arch, dataflow: str | None
) -> tuple[np.ndarray, float, float]:
    """(cost per searched node and choice, the all-INT8 model's total, the part of it outside the search)."""
    int8 = node_costs(ref, objective, arch, dataflow)
    per = [int8 if alt is ref else node_costs(alt, objective, arch, dataflow) for alt in alts]
    total = sum(int8.values())
    return np.array([[p[name] for p in per] for name in names]), total, total - sum(int8[n] for n in names)


# ---- each node at each choice ------------------------------------------------------------------------


def lower_at(
    fgraph: Graph,
    x: torch.Tensor,
    base: QuantSettings,
    names: list[str],
    choice: Choice,
    stats: dict[str, Stats],
    means: dict[str, torch.Tensor],
) -> Graph:
    """The integer graph with every node of `names` at `choice`, the others as `base` says."""
    settings = replace(base, precision=tuple(choice.entry(n) for n in names))
    return lower(fgraph, calibrate(fgraph, x, settings, stats), settings, means)


def with_node(ref: Graph, alt: Graph, name: str) -> Graph:
    """`ref` with node `name` as `alt` lowered it (the same float graph and activation QTypes, other formats):
    the graph that lowering ref's settings with that one node at alt's format gives (tests/test_mixed.py)."""
    node = next(n for n in alt.nodes if n.name == name)
    q = {**ref.q, node.output: alt.q[node.output]}  # the logits' scale follows the last node's weight scale
    nodes = [node if n.name == name else n for n in ref.nodes]
    return Graph(nodes, dict(ref.shapes), ref.input, ref.output, q, ref.rounding, ref.scheme)


def run_from(net: SimNet, env: dict[str, torch.Tensor], start: int) -> torch.Tensor:
    """The logits of a simulated net in eval from its node `start` on, what those nodes read from earlier ones
    taken from `env` (a run of a net equal to this one before `start`): SimNet.forward's loop, without records."""
    env = dict(env)
    for n in net.graph.nodes[start:]:
        env[n.output] = SIM_KERNELS[n.op](net, n, [env[v] for v in n.inputs])
    return env[net.graph.output]


@torch.no_grad()
def logit_noise(ref: Graph, alts: list[Graph], names: list[str], x: torch.Tensor) -> np.ndarray:
    """Per searched node and choice, the logits' NSR on images x with that node alone at that choice against the
    all-INT8 graph `ref` (0 where alt is ref). One run of ref walks the graph; at each searched node every
    candidate runs from there on; a value is dropped once no later node reads it."""
    net = simulated(ref)
    y8 = net(x).double()
    power = max(float(y8.pow(2).mean()), torch.finfo(torch.float64).tiny)
    last = {v: i for i, n in enumerate(ref.nodes) for v in n.inputs}  # the last reader of each value
    row = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(names), len(alts)))
    env = {ref.input: net.carried(x)}
    for i, n in enumerate(ref.nodes):
        for j, alt in enumerate(alts):
            if n.name in row and alt is not ref:
                y = run_from(simulated(with_node(ref, alt, n.name)), env, i).double()
                out[row[n.name], j] = float((y - y8).pow(2).mean()) / power
        env[n.output] = SIM_KERNELS[n.op](net, n, [env[v] for v in n.inputs])
        for v in [v for v in env if last.get(v, -1) <= i]:
            del env[v]
    return out


def sqnr_db(nsr: float) -> float:
    """The logits' SQNR of a noise-to-signal ratio (inf for none)."""
    return -10 * math.log10(nsr) if nsr > 0 else math.inf


# ---- HAWQ-V3's sensitivity ---------------------------------------------------------------------------


def hessian_traces(
    fgraph: Graph, x: torch.Tensor, labels: torch.Tensor, names: list[str], probes: int = HAWQ_PROBES, batch=128
) -> np.ndarray:
    """Per node of `names`, the average trace (trace / weights) of the Hessian of the float model's mean
    cross-entropy on images x in that node's weights: Hutchinson's estimator, E[v^T H v] over Rademacher v, with
    `probes` vectors per batch of images, H v by double back-propagation (HAWQ-V2/V3, PyHessian)."""
    net = SimNet(fgraph).train(True)  # float32, as calibration: a folded float graph has no batch statistics
    macs = {n.name: n for n in fgraph.mac_nodes()}
    params = [net.params_of(macs[name])[0] for name in names]
    g = torch.Generator().manual_seed(0)
    trace = torch.zeros(len(params), dtype=torch.float64)
    for i in range(0, len(x), batch):
        loss = F.cross_entropy(net(x[i : i + batch].float()), labels[i : i + batch], reduction="sum") / len(x)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(probes):
            vs = [torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1 for p in params]
            hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            trace += torch.stack([(v * h).sum() for v, h in zip(vs, hvs, strict=True)]).detach() / probes
    return np.array([float(t) / p.numel() for t, p in zip(trace, params, strict=True)])


def weight_errors(fgraph: Graph, alts: list[Graph], names: list[str]) -> np.ndarray:
    """Per node and choice, ||W_q - W||^2: its float weights against those its integers stand for there."""
    floats = {n.name: n.tensors["weight"].double() for n in fgraph.mac_nodes()}
    out = np.zeros((len(names), len(alts)))
    for j, alt in enumerate(alts):
        deq = {n.name: n.tensors["weight"] for n in dequantize(alt)[0].mac_nodes()}
        for i, name in enumerate(names):
            out[i, j] = float((deq[name] - floats[name]).pow(2).sum())
    return out


@torch.no_grad()
def float_labels(fgraph: Graph, x: torch.Tensor) -> torch.Tensor:
    """The float model's classes of images x: HAWQ's labels where the caller has none."""
    return SimNet(fgraph).train(True)(x.float()).argmax(1)


# ---- the program -------------------------------------------------------------------------------------


def solve(sensitivity: np.ndarray, cost: np.ndarray, limit: float) -> list[int] | None:
    """The column per row (a choice per node) with the least summed sensitivity whose summed cost is at most
    `limit`, or None where none fits: exact (HiGHS's branch and bound at relative gap 0; the sensitivities
    scaled to at most 1, as HiGHS also stops within an absolute gap of 1e-6)."""
    k, m = sensitivity.shape
    scale = float(np.abs(sensitivity).max()) or 1.0
    one_each = LinearConstraint(np.kron(np.eye(k), np.ones(m)), 1, 1)
    within = LinearConstraint(cost.reshape(1, -1), -np.inf, limit)
    r = milp(
        sensitivity.ravel() / scale,
        constraints=[one_each, within],
        integrality=np.ones(k * m),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0},
    )
    return None if r.x is None else [int(j) for j in r.x.reshape(k, m).argmax(1)]


@dataclass
class MixedResult:
    """A search's tables, its answer and its front. Rows: `nodes`; columns: `choices`; costs in `unit`."""

    method: str
    objective: str
    unit: str
    budget: float
    choices: list[Choice]
    nodes: list[str]  # the MAC nodes searched, in graph order
    fixed: list[str]  # the MAC nodes kept 8-bit int (the first and the last, unless --bits-all)
    sensitivity: np.ndarray
    cost: np.ndarray
    int8_cost: float  # the all-INT8 model's total
    fixed_cost: float  # the part of every assignment's total outside the search
    pick: list[int]  # the column chosen per node
    solver_seconds: float  # the program at `budget`
    front: list[dict] = field(default_factory=list)

    def total_cost(self, pick: list[int] | None = None) -> float:
        pick = self.pick if pick is None else pick
        return self.fixed_cost + float(sum(self.cost[i, j] for i, j in enumerate(pick)))

    def total_sensitivity(self, pick: list[int] | None = None) -> float:
        pick = self.pick if pick is None else pick
        return float(sum(self.sensitivity[i, j] for i, j in enumerate(pick)))

    def precision(self) -> dict:
        """The answer as a precision file's contents (potq.quant.precision.read_precision), every MAC node in it."""
        chosen = {name: self.choices[j] for name, j in zip(self.nodes, self.pick, strict=True)}
        chosen.update({name: INT8 for name in self.fixed})
        return {
            "nodes": {
                name: {"w_bits": c.bits, "w_code": c.code.value, "a_bits": CODE_BITS} for name, c in chosen.items()
            }
        }


def search_record(r: MixedResult) -> dict:
    """What a search measured and chose, JSON-ready: its precision file's "nodes" (every MAC node), and under
    other keys (which read_precision ignores) the tables, the totals and the front."""
    labels = [c.label for c in r.choices]
    cost = r.total_cost()
    return {
        **r.precision(),
        "method": r.method,
        "objective": r.objective,
        "unit": r.unit,
        "budget": r.budget,
        "sensitivity_measure": SENSITIVITY_MEASURES[r.method],
        "menu": labels,
        "choice": {name: labels[j] for name, j in zip(r.nodes, r.pick, strict=True)},
        "fixed": r.fixed,
        "cost": cost,
        "int8_cost": r.int8_cost,
        "fraction": cost / r.int8_cost,
        "fixed_cost": r.fixed_cost,
        "sensitivity": r.total_sensitivity(),
        "solver_seconds": r.solver_seconds,
        "sensitivities": _table(r.nodes, labels, r.sensitivity),
        "costs": _table(r.nodes, labels, r.cost),
        "front": r.front,
    }


def _table(rows: list[str], columns: list[str], values: np.ndarray) -> dict[str, dict[str, float]]:
    return {r: {c: float(v) for c, v in zip(columns, row, strict=True)} for r, row in zip(rows, values, strict=True)}


def solve_budget(sensitivity: np.ndarray, cost: np.ndarray, int8_cost: float, fixed_cost: float, budget: float):
    """`solve` at a budget (a fraction of the all-INT8 total): costs as fractions, so that HiGHS's absolute
    feasibility tolerance (1e-7) is one of the budget."""
    return solve(sensitivity, cost / int8_cost, budget - fixed_cost / int8_cost)


def front(r: MixedResult, budgets: tuple[float, ...] = FRONT_BUDGETS) -> list[dict]:
    """The program at each budget that some assignment fits: its total cost, fraction, sensitivity and choices."""
    points = []
    for b in sorted({*budgets, r.budget}):
        pick = solve_budget(r.sensitivity, r.cost, r.int8_cost, r.fixed_cost, b)
        if pick is not None:
            cost = r.total_cost(pick)
            points.append(
                {
                    "budget": b,
                    "cost": cost,
                    "fraction": cost / r.int8_cost,
                    "sensitivity": r.total_sensitivity(pick),
                    "choices": [r.choices[j].label for j in pick],
                }
            )
    return points


def check_budget(budget: float, cost: np.ndarray, int8_cost: float, fixed_cost: float, objective: str) -> None:
    cheapest = (fixed_cost + float(cost.min(1).sum())) / int8_cost
    if budget < cheapest * (1 - 1e-9):
        raise UserError(
            f"--budget {budget:g}: below the cheapest assignment, {cheapest:.4f} of the all-INT8 model's {objective}"
        )


def search_precision(
    fgraph: Graph,
    x: torch.Tensor,
    settings: QuantSettings,
    budget: float,
    arch: Arch,
    dataflow: str | None = None,
    *,
    method: str = MIXED_METHODS[0],
    objective: str | None = None,
    menu: tuple[int, ...] | None = None,
    codes: tuple[WeightCode, ...] | None = None,
    labels: torch.Tensor | None = None,
) -> MixedResult:
    """Each searched node's format (module docstring) for the float graph of a model, on normalized calibration
    images x (labels: hawq's, else the float model's argmax); settings: the scheme and rules (its bits and
    precision are the search's). Costs are checked against the budget before any sensitivity is measured."""
    choices, objective = check_search(method, objective, budget, menu, codes)
    base = base_settings(settings)
    names, fixed = searched_nodes(fgraph, base)
    stats = collect_stats(fgraph, x, sample=needs_sample(base))
    means = input_means(fgraph, x, nodes=set(names))
    ref = lower_at(fgraph, x, base, names, INT8, stats, means)
    alts = [ref if c == INT8 else lower_at(fgraph, x, base, names, c, stats, means) for c in choices]
    cost, int8_cost, fixed_cost = cost_table(ref, alts, names, objective, arch, dataflow)
    check_budget(budget, cost, int8_cost, fixed_cost, objective)
    if method == "hawq":
        labels = float_labels(fgraph, x) if labels is None else labels
        sensitivity = hessian_traces(fgraph, x, labels, names)[:, None] * weight_errors(fgraph, alts, names)
    else:
        sensitivity = logit_noise(ref, alts, names, x)
    t0 = time.perf_counter()
    pick = solve_budget(sensitivity, cost, int8_cost, fixed_cost, budget)
    seconds = time.perf_counter() - t0
    if pick is None:  # check_budget let it through by a rounding error's width
        raise UserError(f"--budget {budget:g}: no assignment fits it")
    unit = cost_unit(objective, arch)
    r = MixedResult(
        method, objective, unit, budget, choices, names, fixed, sensitivity, cost, int8_cost, fixed_cost, pick, seconds
    )
    r.front = front(r)
    return r
