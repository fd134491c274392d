"""Mixed precision chosen by the hardware (issue 28): per MAC node the weight format, from a menu, and per group of
activations the width, that hurt the model least under a budget of one cost from potq's own models, by an exact
integer linear program.

The menu: widths (--menu, 2-8) crossed with weight codes (--codes int, pot, apot) where the width can hold the
code (potq.ir.codes.WEIGHT_BITS); activation widths (--act-menu, with 8 among them) for each group of values
that share one QType (potq.ir.bounds.shared_groups: a residual block's input, its add and its output are one)
and that a searched node reads, save the values that stay 8-bit codes (the image's and the last layer's input,
unless --bits-all: potq.quant.precision.pinned_values). A node's column is its weights' format at one input
width; a constraint ties that width to its group's, so that every reader of a group reads one width. The first
and the last MAC node stay 8-bit int weights unless --bits-all (potq.quant.precision.edge_nodes).

Sensitivity, method potq: measured. Node i alone at choice c, every other node 8-bit int: the noise-to-signal
ratio of the logits against the all-INT8 model's on the calibration images, NSR = mean((y_ic - y_8)^2) /
mean(y_8^2) (the logits' SQNR is -10 log10 NSR dB). The powers of independent errors add, so the sum that the
program minimizes estimates the whole assignment's NSR (a sum of dB would estimate nothing); the logits rather
than an accuracy because they move with every choice (an accuracy on a few hundred images is flat over most)
and need no labels. Affordable: a node's integers depend on its own format only (its input's and output's
QTypes come from one set of calibration statistics, collected once), so the graph is lowered once per choice
with every node at it, a candidate takes one node from there (`with_node`), and the simulated model
(potq.quant.simulate) runs from that node on, the values before it taken from one run of the all-INT8 model.

Sensitivity, method hawq (HAWQ-V3, Yao et al., ICML 2021): a layer at 4 or at 8 bits, its int weights and the
codes it reads alike (W4A4 or W8A8; a node whose input the search leaves at 8 bits: W4A8 or W8A8; --act-menu 8:
weights alone); per node the average Hessian trace (trace / weights) of the float model's cross-entropy on the
calibration images in the node's weights (Hutchinson's estimator, Rademacher probes; the images' labels where
given, else the float model's own argmax) times ||W_q - W||^2 of its weights at the choice. As HAWQ-V3's, its
objective has no term for the activations' error: a group's sensitivity is 0, its width follows its readers'.

Sensitivity of a group at a width: the logits' NSR with that group alone at that width, every weight 8-bit int;
summed with the weights' as independent errors.

Costs per image, per node and choice (a model's total is the sum of its nodes'; nodes outside the search are a
constant, or follow the searched group they write or read, priced at each width):

- energy: the node's energy with data movement, its row of potq.accel.model.accel_report (default: COST_ARCH,
  the architecture every quantized model's record is priced on);
- latency: the node's cycles there (the rows add up to the model's latency);
- compute: the node's compute energy (potq.energy: its format's products);
- size: its packed weights (potq.ir.codes.weight_bytes) and int32 biases;
- bops: bit operations, MACs x weight bits x input bits (HAWQ-V3's).
The program: one binary per (node, choice) and per (group, width), exactly one of each per node and group, a
node's width its group's, total cost <= budget x the all-INT8 model's, least total sensitivity
(scipy.optimize.milp: HiGHS, relative gap 0); the front: the same program at budgets FRONT_BUDGETS.

With 8-bit activations alone each node's cost is its own and the program's total is the model's, exactly; a width
changes what its producer writes as well as what its readers read, so with searched activations a node's cost is
taken from the graph with every group at its column's width: an estimate. Then each answer is priced exactly (the
model quantized from it) and, if it passes the budget, the program is solved again with the budget lowered by the
overshoot (TIGHTEN_STEPS): the chosen model and every point of the front keep their budgets by their exact costs.
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
from potq.ir.bounds import shared_groups
from potq.ir.codes import WEIGHT_BITS, WeightCode, weight_bytes
from potq.ir.graph import Graph
from potq.ir.rules import CODE_BITS
from potq.quant.lower import Stats, calibrate, collect_stats, input_means, lower
from potq.quant.precision import Entry, edge_nodes, pinned_values
from potq.quant.rules import (
    MIXED_ACT_MENU,
    MIXED_CODES,
    MIXED_MENU,
    MIXED_METHODS,
    MIXED_OBJECTIVE,
    MIXED_OBJECTIVES,
    POT_SCHEMES,
    QuantSettings,
    check_act_menu,
    check_menu,
)
from potq.quant.scheme import needs_sample
from potq.quant.simulate import SIM_KERNELS, SimNet, dequantize, simulated

ACCEL_OBJECTIVES = ("energy", "latency")  # the costs that the architecture prices (the others are its own)
HAWQ_PROBES = 8  # Rademacher vectors per batch of images (PyHessian's traces settle within a few tens)
FRONT_BUDGETS = tuple(round(0.3 + 0.05 * k, 2) for k in range(15))  # 0.3, 0.35, ..., 1.0


@dataclass(frozen=True)
class Choice:
    """One format a node's weights may take, and the width of the codes it reads (a_bits)."""

    bits: int
    code: WeightCode
    a_bits: int = CODE_BITS

    @property
    def label(self) -> str:
        """int4, pot3, apot5, int4a4 (weights, then the input's width where it is not 8): how tables and files
        name it."""
        return f"{self.code.value}{self.bits}" + ("" if self.a_bits == CODE_BITS else f"a{self.a_bits}")

    @property
    def weights(self) -> Choice:
        return Choice(self.bits, self.code)

    def entry(self, name: str) -> tuple[str, int, str, int]:
        """Node `name` at this choice's weights, as a precision entry (QuantSettings.precision)."""
        return (name, self.bits, self.code.value, CODE_BITS)


INT8 = Choice(CODE_BITS, WeightCode.INT)
HAWQ_CHOICES = (Choice(4, WeightCode.INT), INT8)
HAWQ_ACT_MENU = tuple(c.bits for c in HAWQ_CHOICES)  # a HAWQ-V3 layer reads codes of its weights' width
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
    method: str, objective: str | None, budget: float, menu: tuple[int, ...] | None, codes, act_menu=None
) -> tuple[list[Choice], str, tuple[int, ...]]:
    """(the weight menu, the objective: the method's own where None, the activation menu) of a search, every
    argument checked before any work: one UserError line naming the argument."""
    choices = menu_choices(method, menu, codes)
    objective = MIXED_OBJECTIVE[method] if objective is None else objective
    if objective not in MIXED_OBJECTIVES:
        raise UserError(f"--objective {objective}: choose from {', '.join(MIXED_OBJECTIVES)}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < math.inf:
        raise UserError(f"--budget {budget}: give a positive fraction of the all-INT8 model's {objective}, e.g. 0.5")
    act_menu = default_act_menu(method) if act_menu is None else tuple(sorted(set(act_menu)))
    if method == "hawq" and act_menu not in ((CODE_BITS,), HAWQ_ACT_MENU):
        raise UserError("--act-menu: --method hawq reads 4- or 8-bit codes as its weights' (4,8), or 8 alone")
    check_act_menu(act_menu)
    return choices, objective, act_menu


def default_act_menu(method: str) -> tuple[int, ...]:
    """The activation widths a method searches unless told: potq's MIXED_ACT_MENU, hawq's its weights' widths."""
    return HAWQ_ACT_MENU if method == "hawq" else MIXED_ACT_MENU


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


@dataclass
class ActGroups:
    """The activations a search sizes: groups of values that share one QType (potq.ir.bounds.shared_groups), each
    read by a searched node and holding no value kept at 8 bits (potq.quant.precision.pinned_values)."""

    names: list[str] = field(default_factory=list)  # each group's representative value, in graph order
    producers: dict[str, list[str]] = field(default_factory=dict)  # group -> the nodes whose outputs it holds
    reads: dict[str, str] = field(default_factory=dict)  # searched node -> its input's group, where searched
    # a node outside the search -> the searched group its cost follows (its output's, else its input's)
    owner: dict[str, str] = field(default_factory=dict)


def act_groups(fgraph: Graph, base: QuantSettings, names: list[str], fixed: list[str], act_menu) -> ActGroups:
    """The groups a search with this activation menu sizes (none for a menu of 8 alone)."""
    if tuple(act_menu) == (CODE_BITS,):
        return ActGroups()
    group = shared_groups(fgraph)
    nodes = {n.name: n for n in fgraph.nodes}
    blocked = {group[v] for v in pinned_values(fgraph, base)} | {group[nodes[f].inputs[0]] for f in fixed}
    reads = {n: group[nodes[n].inputs[0]] for n in names if group[nodes[n].inputs[0]] not in blocked}
    groups = [g for g in dict.fromkeys(group[n.output] for n in fgraph.nodes) if g in set(reads.values())]
    producers = {g: [n.name for n in fgraph.nodes if group[n.output] == g] for g in groups}
    owner = {}
    for n in fgraph.nodes:
        owned = [group[v] for v in (n.output, *n.inputs) if group[v] in producers]
        if n.name not in names and owned:
            owner[n.name] = owned[0]
    return ActGroups(groups, producers, reads, owner)


def entries_of(weights: dict[str, Choice], widths: dict[str, int], groups: ActGroups) -> tuple[Entry, ...]:
    """Precision entries: each node of `weights` at its choice's weights, and every producer of a group of
    `widths` writing codes of that width (a node without a weight choice keeps 8-bit int weights)."""
    out = {name: (c.bits, c.code.value, CODE_BITS) for name, c in weights.items()}
    for g, a in widths.items():
        for name in groups.producers[g]:
            bits, code, _ = out.get(name, (CODE_BITS, WeightCode.INT.value, CODE_BITS))
            out[name] = (bits, code, a)
    return tuple((name, *e) for name, e in out.items())


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
    ref: Graph,
    alts: list[Graph],
    names: list[str],
    objective: str,
    arch: Arch,
    dataflow: str | None,
    groups: ActGroups | None = None,
    widths: list[Graph] | None = None,
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """(cost per searched node and choice, the all-INT8 model's total, the part of it outside the search, cost
    per searched group and width: the nodes it owns, from `widths`, a graph per width with every group at it)."""
    int8 = node_costs(ref, objective, arch, dataflow)
    per = [int8 if alt is ref else node_costs(alt, objective, arch, dataflow) for alt in alts]
    total = sum(int8.values())
    groups = groups or ActGroups()
    at = [node_costs(w, objective, arch, dataflow) for w in widths or []]
    owned = [[k for k, g in groups.owner.items() if g == group] for group in groups.names]
    # a node that an objective does not price (bops, size: MAC nodes alone) costs nothing by it
    group_cost = np.array([[sum(w.get(k, 0.0) for k in ks) for w in at] for ks in owned]).reshape(len(owned), len(at))
    outside = total - sum(int8[n] for n in names) - sum(int8.get(k, 0.0) for k in groups.owner)
    return np.array([[p[name] for p in per] for name in names]), total, outside, group_cost


# ---- each node at each choice ------------------------------------------------------------------------


def lower_at(
    fgraph: Graph,
    x: torch.Tensor,
    base: QuantSettings,
    names: list[str],
    choice: Choice,
    stats: dict[str, Stats],
    means: dict[str, torch.Tensor],
    groups: ActGroups | None = None,
) -> Graph:
    """The integer graph with every node of `names` at `choice`'s weights and every group of `groups` at its
    a_bits, the others as `base` says."""
    widths = {g: choice.a_bits for g in groups.names} if groups else {}
    return lower_entries(fgraph, x, base, entries_of(dict.fromkeys(names, choice), widths, groups), stats, means)


def lower_entries(fgraph: Graph, x: torch.Tensor, base: QuantSettings, entries, stats, means) -> Graph:
    """The integer graph of precision entries over `base`, from statistics collected once."""
    settings = replace(base, precision=tuple(entries))
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
def logit_noise(ref: Graph, alts: list[Graph], names: list[str], x: torch.Tensor, y8=None) -> np.ndarray:
    """Per searched node and choice, the logits' NSR on images x with that node alone at that choice against the
    all-INT8 graph `ref` (0 where alt is ref). One run of ref walks the graph; at each searched node every
    candidate runs from there on; a value is dropped once no later node reads it."""
    net = simulated(ref)
    y8 = net(x).double() if y8 is None else y8  # the all-INT8 logits, where the caller has them
    last = {v: i for i, n in enumerate(ref.nodes) for v in n.inputs}  # the last reader of each value
    row = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(names), len(alts)))
    env = {ref.input: net.carried(x)}
    for i, n in enumerate(ref.nodes):
        for j, alt in enumerate(alts):
            if n.name in row and alt is not ref:
                y = run_from(simulated(with_node(ref, alt, n.name)), env, i).double()
                out[row[n.name], j] = noise_ratio(y, y8)
        env[n.output] = SIM_KERNELS[n.op](net, n, [env[v] for v in n.inputs])
        for v in [v for v in env if last.get(v, -1) <= i]:
            del env[v]
    return out


@torch.no_grad()
def act_noise(fgraph: Graph, x: torch.Tensor, base: QuantSettings, groups: ActGroups, act_menu, stats, means, y8):
    """Per searched group and width, the logits' NSR on images x with that group alone at that width (every
    weight 8-bit int) against the all-INT8 model's logits y8 (float64; 0 at 8 bits)."""
    out = np.zeros((len(groups.names), len(act_menu)))
    for i, g in enumerate(groups.names):
        for j, a in enumerate(act_menu):
            if a != CODE_BITS:
                alone = lower_entries(fgraph, x, base, entries_of({}, {g: a}, groups), stats, means)
                out[i, j] = noise_ratio(simulated(alone)(x).double(), y8)
    return out


def noise_ratio(y: torch.Tensor, y8: torch.Tensor) -> float:
    """The noise-to-signal ratio of logits y (float64) against the all-INT8 model's y8."""
    return float((y - y8).pow(2).mean()) / max(float(y8.pow(2).mean()), torch.finfo(torch.float64).tiny)


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


@dataclass
class Program:
    """The integer program: a choice (column) per node (row) and a width per activation group, the least summed
    sensitivity within a cost limit. Node columns that read a group carry one of its widths (`width`, an index
    into the group columns), and a node's choice must carry its group's width; `allowed` masks the columns a
    node can't take (a width for an input the search leaves at 8 bits)."""

    sensitivity: np.ndarray  # nodes x choices
    cost: np.ndarray
    allowed: np.ndarray | None = None  # nodes x choices, bool; None: every column
    group_sensitivity: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))  # groups x widths
    group_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    links: list[tuple[int, int]] = field(default_factory=list)  # (node row, group row): the node reads it
    width: list[int] = field(default_factory=list)  # per node column, its width's column in the group tables


def solve_program(p: Program, limit: float) -> tuple[list[int], list[int]] | None:
    """(the column per node, the width per group) of least summed sensitivity whose summed cost is at most
    `limit`, or None where none fits: exact (HiGHS's branch and bound at relative gap 0; the sensitivities
    scaled to at most 1, as HiGHS also stops within an absolute gap of 1e-6)."""
    (k, m), (g, w) = p.sensitivity.shape, p.group_sensitivity.shape
    scale = float(max(np.abs(p.sensitivity).max(), np.abs(p.group_sensitivity).max(initial=0))) or 1.0
    blocks = [np.hstack([np.kron(np.eye(k), np.ones(m)), np.zeros((k, g * w))])]  # one choice per node
    blocks.append(np.hstack([np.zeros((g, k * m)), np.kron(np.eye(g), np.ones(w))]))  # one width per group
    for i, j in p.links:  # the node's columns of each width sum to that width's group column
        for t in range(w):
            row = np.zeros(k * m + g * w)
            row[[i * m + c for c in range(m) if p.width[c] == t]] = 1
            row[k * m + j * w + t] = -1
            blocks.append(row[None, :])
    rows = np.vstack(blocks)
    target = np.r_[np.ones(k + g), np.zeros(len(rows) - k - g)]  # one of each; a link's difference 0
    within = LinearConstraint(np.concatenate([p.cost.ravel(), p.group_cost.ravel()])[None, :], -np.inf, limit)
    upper = np.concatenate([np.ones(k * m) if p.allowed is None else p.allowed.ravel(), np.ones(g * w)])
    r = milp(
        np.concatenate([p.sensitivity.ravel(), p.group_sensitivity.ravel()]) / scale,
        constraints=[LinearConstraint(rows, target, target), within],
        integrality=np.ones(k * m + g * w),
        bounds=Bounds(0, upper.astype(float)),
        options={"mip_rel_gap": 0},
    )
    if r.x is None:
        return None
    picks = [int(c) for c in r.x[: k * m].reshape(k, m).argmax(1)]
    return picks, ([int(c) for c in r.x[k * m :].reshape(g, w).argmax(1)] if g else [])


def solve(sensitivity: np.ndarray, cost: np.ndarray, limit: float) -> list[int] | None:
    """The column per row (a choice per node) with the least summed sensitivity whose summed cost is at most
    `limit`, or None where none fits (solve_program without activation groups)."""
    r = solve_program(Program(sensitivity, cost), limit)
    return None if r is None else r[0]


@dataclass
class MixedResult:
    """A search's tables, its answer and its front. Rows: `nodes`; columns: `choices` (each weight format at each
    input width of `act_menu`); the activation groups' tables: rows `groups.names`, columns `act_menu`; costs in
    `unit`."""

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
    act_menu: tuple[int, ...] = (CODE_BITS,)
    groups: ActGroups = field(default_factory=ActGroups)
    group_sensitivity: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    group_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    group_pick: list[int] = field(default_factory=list)  # the width chosen per group (a column of act_menu)
    exact_cost: float | None = None  # the chosen model's own total, where the program's is an estimate
    budget_asked: float | None = None  # the budget given, where it was below the cheapest (raise_to_cheapest)

    def program(self) -> Program:
        width = [self.act_menu.index(c.a_bits) for c in self.choices]
        row = {name: i for i, name in enumerate(self.nodes)}
        links = [(row[n], self.groups.names.index(g)) for n, g in self.groups.reads.items()]
        allowed = np.array([[self.allows(n, c) for c in self.choices] for n in self.nodes])
        return Program(self.sensitivity, self.cost, allowed, self.group_sensitivity, self.group_cost, links, width)

    def allows(self, node: str, c: Choice) -> bool:
        """Can the node take column c? A width below 8 only for an input the search sizes; hawq's layer there
        reads its weights' width (W4A4 or W8A8)."""
        searched = node in self.groups.reads
        if self.method == "hawq" and searched:
            return c.bits == c.a_bits
        return c.a_bits == CODE_BITS or searched

    def total_cost(self, pick: list[int] | None = None, group_pick: list[int] | None = None) -> float:
        """The program's total: exact where no activation is searched (else the chosen model's is exact_cost)."""
        pick, group_pick = (self.pick, self.group_pick) if pick is None else (pick, group_pick or [])
        nodes = sum(self.cost[i, j] for i, j in enumerate(pick))
        return self.fixed_cost + float(nodes + sum(self.group_cost[i, j] for i, j in enumerate(group_pick)))

    def total_sensitivity(self, pick: list[int] | None = None, group_pick: list[int] | None = None) -> float:
        pick, group_pick = (self.pick, self.group_pick) if pick is None else (pick, group_pick or [])
        nodes = sum(self.sensitivity[i, j] for i, j in enumerate(pick))
        return float(nodes + sum(self.group_sensitivity[i, j] for i, j in enumerate(group_pick)))

    def entries(self, pick: list[int] | None = None, group_pick: list[int] | None = None) -> tuple[Entry, ...]:
        """An assignment as precision entries: every MAC node, and the producers of every searched group."""
        pick, group_pick = (self.pick, self.group_pick) if pick is None else (pick, group_pick or [])
        weights = {name: self.choices[j].weights for name, j in zip(self.nodes, pick, strict=True)}
        weights.update({name: INT8 for name in self.fixed})
        widths = {g: self.act_menu[t] for g, t in zip(self.groups.names, group_pick, strict=True)}
        return entries_of(weights, widths, self.groups)

    def precision(self) -> dict:
        """The answer as a precision file's contents (potq.quant.precision.read_precision)."""
        return {"nodes": {n: {"w_bits": w, "w_code": c, "a_bits": a} for n, w, c, a in self.entries()}}


def search_record(r: MixedResult) -> dict:
    """What a search measured and chose, JSON-ready: its precision file's "nodes" (every MAC node, and the
    producers of the activations it narrowed), and under other keys (which read_precision ignores) the tables,
    the totals and the front."""
    labels = [c.label for c in r.choices]
    cost = r.total_cost() if r.exact_cost is None else r.exact_cost
    widths = [f"a{a}" for a in r.act_menu]
    return {
        **r.precision(),
        "method": r.method,
        "objective": r.objective,
        "unit": r.unit,
        "budget": r.budget,
        "budget_asked": r.budget_asked,
        "sensitivity_measure": SENSITIVITY_MEASURES[r.method],
        "menu": labels,
        "act_menu": list(r.act_menu),
        "choice": {name: labels[j] for name, j in zip(r.nodes, r.pick, strict=True)},
        "act_choice": {g: r.act_menu[t] for g, t in zip(r.groups.names, r.group_pick, strict=True)},
        "fixed": r.fixed,
        "cost": cost,
        "estimated_cost": r.total_cost(),  # the program's sum of the tables (equal to cost without groups)
        "int8_cost": r.int8_cost,
        "fraction": cost / r.int8_cost,
        "fixed_cost": r.fixed_cost,
        "sensitivity": r.total_sensitivity(),
        "solver_seconds": r.solver_seconds,
        "sensitivities": _table(r.nodes, labels, r.sensitivity),
        "costs": _table(r.nodes, labels, r.cost),
        "act_sensitivities": _table(r.groups.names, widths, r.group_sensitivity),
        "act_costs": _table(r.groups.names, widths, r.group_cost),
        "front": r.front,
    }


def _table(rows: list[str], columns: list[str], values: np.ndarray) -> dict[str, dict[str, float]]:
    return {r: {c: float(v) for c, v in zip(columns, row, strict=True)} for r, row in zip(rows, values, strict=True)}


def solve_budget(sensitivity: np.ndarray, cost: np.ndarray, int8_cost: float, fixed_cost: float, budget: float):
    """`solve` at a budget (a fraction of the all-INT8 total): costs as fractions, so that HiGHS's absolute
    feasibility tolerance (1e-7) is one of the budget."""
    return solve(sensitivity, cost / int8_cost, budget - fixed_cost / int8_cost)


def solve_result(r: MixedResult, budget: float) -> tuple[list[int], list[int]] | None:
    """The search's program at a budget (a fraction of the all-INT8 total), costs as fractions (solve_budget)."""
    p = r.program()
    p.cost, p.group_cost = p.cost / r.int8_cost, p.group_cost / r.int8_cost
    return solve_program(p, budget - r.fixed_cost / r.int8_cost)


def front(r: MixedResult, budgets: tuple[float, ...] = FRONT_BUDGETS, exact=None) -> list[dict]:
    """The program at each budget that some assignment fits (answer_within): its total cost, fraction,
    sensitivity and choices."""
    points = []
    for b in sorted({*budgets, r.budget}):
        answer = answer_within(r, b, exact)
        if answer is not None:
            pick, group_pick, cost = answer
            points.append(
                {
                    "budget": b,
                    "cost": cost,
                    "fraction": cost / r.int8_cost,
                    "estimated_fraction": r.total_cost(pick, group_pick) / r.int8_cost,
                    "sensitivity": r.total_sensitivity(pick, group_pick),
                    "choices": [r.choices[j].label for j in pick],
                    "act_choices": [r.act_menu[t] for t in group_pick],
                }
            )
    return points


def cheapest(r: MixedResult) -> float:
    """The least total the program can reach (as a fraction of the all-INT8 total): the program that minimizes
    the cost itself."""
    p = r.program()
    p.sensitivity, p.group_sensitivity = p.cost / r.int8_cost, p.group_cost / r.int8_cost
    pick, group_pick = solve_program(p, math.inf)
    return r.total_cost(pick, group_pick) / r.int8_cost


def check_budget(r: MixedResult) -> None:
    lowest = cheapest(r)
    if r.budget < lowest * (1 - 1e-9):
        raise UserError(
            f"--budget {r.budget:g}: below the cheapest assignment, {lowest:.4f} of the all-INT8 model's {r.objective}"
        )


TIGHTEN_STEPS = 4  # re-solves with the budget lowered by the overshoot, where the exact total passes the estimate


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
    act_menu: tuple[int, ...] | None = None,
    labels: torch.Tensor | None = None,
    raise_to_cheapest: bool = False,
) -> MixedResult:
    """Each searched node's format and each searched activation group's width (module docstring) for the float
    graph of a model, on normalized calibration images x (labels: hawq's, else the float model's argmax);
    settings: the scheme and rules (its bits and precision are the search's). Costs are checked against the
    budget before any sensitivity is measured: one below the cheapest assignment is refused, or with
    raise_to_cheapest searched at the cheapest (`budget_asked` keeps the one given: a baseline beside another
    method's search that reaches lower)."""
    weights, objective, act_menu = check_search(method, objective, budget, menu, codes, act_menu)
    base = base_settings(settings)
    names, fixed = searched_nodes(fgraph, base)
    groups = act_groups(fgraph, base, names, fixed, act_menu)
    narrow = replace(base, a_bits=min(act_menu)) if groups.names else base  # below 8 bits: mse exponents
    stats = collect_stats(fgraph, x, sample=needs_sample(narrow))
    means = input_means(fgraph, x, nodes=set(names))
    choices = [Choice(c.bits, c.code, a) for c in weights for a in act_menu] if groups.names else weights
    ref = lower_at(fgraph, x, base, names, INT8, stats, means)
    alts = [ref if c == INT8 else lower_at(fgraph, x, base, names, c, stats, means, groups) for c in choices]
    at_width = [alts[choices.index(Choice(weights[0].bits, weights[0].code, a))] for a in act_menu]
    cost, int8_cost, fixed_cost, group_cost = cost_table(
        ref, alts, names, objective, arch, dataflow, groups, at_width if groups.names else []
    )
    r = MixedResult(
        method, objective, cost_unit(objective, arch), budget, choices, names, fixed, np.zeros_like(cost), cost,
        int8_cost, fixed_cost, pick=[], solver_seconds=0.0, act_menu=act_menu, groups=groups,
        group_sensitivity=np.zeros_like(group_cost), group_cost=group_cost,
    )  # fmt: skip
    r.budget_asked = budget
    if raise_to_cheapest:
        r.budget = max(budget, cheapest(r))
    check_budget(r)
    y8 = simulated(ref)(x).double() if method != "hawq" else None  # the all-INT8 logits, run once
    r.sensitivity = _weight_sensitivity(method, fgraph, x, labels, names, ref, alts, choices, y8)
    if groups.names and method != "hawq":  # HAWQ-V3's objective has no activation term
        r.group_sensitivity = act_noise(fgraph, x, base, groups, act_menu, stats, means, y8)
    exact = _exact_pricer(fgraph, x, base, stats, means, objective, arch, dataflow) if groups.names else None
    _answer(r, exact)
    r.front = front(r, exact=exact)
    return r


def _answer(r: MixedResult, exact) -> None:
    """The search's answer at its budget (answer_within); solver_seconds: the program alone, once."""
    t0 = time.perf_counter()
    solve_result(r, r.budget)
    r.solver_seconds = time.perf_counter() - t0
    answer = answer_within(r, r.budget, exact)
    if answer is None:
        raise UserError(f"--budget {r.budget:g}: no assignment fits it once priced exactly")
    r.pick, r.group_pick, total = answer
    r.exact_cost = None if exact is None else total


def _weight_sensitivity(method, fgraph, x, labels, names, ref, alts, choices, y8=None) -> np.ndarray:
    """Per node and column, its weights' measured sensitivity (the column's input width does not enter it: each
    column takes that of its weights at 8-bit inputs, a column of the menu since the act menu holds 8)."""
    weights = list(dict.fromkeys(c.weights for c in choices))
    at8 = [alts[choices.index(w)] for w in weights]
    if method == "hawq":
        labels = float_labels(fgraph, x) if labels is None else labels
        noise = hessian_traces(fgraph, x, labels, names)[:, None] * weight_errors(fgraph, at8, names)
    else:
        noise = logit_noise(ref, at8, names, x, y8)
    return noise[:, [weights.index(c.weights) for c in choices]]


def answer_within(r: MixedResult, budget: float, exact=None):
    """(the column per node, the width per group, the chosen model's total) at a budget, or None where none
    fits. Where the program's total is an estimate (`exact(entries)` prices a model as it is), the answer is
    priced exactly and the program solved again with the budget lowered by any overshoot (TIGHTEN_STEPS)."""
    limit = budget
    for _ in range(TIGHTEN_STEPS):
        answer = solve_result(r, limit)
        if answer is None:
            return None
        total = r.total_cost(*answer) if exact is None else exact(r.entries(*answer))
        over = total / r.int8_cost - budget
        if over <= 1e-9:
            return (*answer, total)
        limit -= over
    return None


def _exact_pricer(fgraph, x, base, stats, means, objective, arch, dataflow):
    """exact(entries): a model's total as quantized from those entries, each model priced once."""
    seen: dict[tuple, float] = {}

    def exact(entries) -> float:
        key = tuple(sorted(entries))
        if key not in seen:
            graph = lower_entries(fgraph, x, base, entries, stats, means)
            seen[key] = sum(node_costs(graph, objective, arch, dataflow).values())
        return seen[key]

    return exact
