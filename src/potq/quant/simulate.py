"""The simulated model: an interpreter of the graph in torch, float or fake-quantized.

`SimNet` runs a float graph (its FP32 reference and calibration) or, given the QTypes of its values and
the weight scales, the fake-quantized model: every value quantized to its QType, weights to int8,
biases to int32 at scale s_in * s_w. In eval mode it runs in float64, where sums of integers times
powers of two are exact, so it computes the integer golden model's numbers; or in float32, the same
numbers: with power-of-two scales every fake-quantized value (at most 255 steps of 2^e) is exact in
float32 (`all_float32`), and a node computes in float32 where its proven worst case (potq.ir.bounds:
bias and rounding included) stays below 2^24 steps (`node_float32`), in float64 otherwise, its output
cast back exactly.
In train mode (QAT) it runs in float32 with straight-through rounding, and with `track_weights` it
re-derives the weight scales from the weights at every step.
For verify (potq.jobs.verify), forward's `check` receives every value's codes as soon as they exist, and
`shared_gemms` holds GEMM outputs that verify proved equal to this model's own (tests/test_verify.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from potq.ir.arith import fold_requant, round_inplace
from potq.ir.bounds import ExactPlan, exactness_plan
from potq.ir.graph import MAC_OPS, Graph, Node, OpType, QType, channel_view, row_view, weight_scale
from potq.ir.rules import FLOAT32_EXACT, INT32_MAX, Rounding
from potq.ir.tensor import nhwc
from potq.quant.arith import project_weights, quantize
from potq.quant.scheme import QuantSettings, weight_scales


def fake_quant(x: torch.Tensor, scale, zp: int, lo: int, hi: int, rule: str) -> torch.Tensor:
    """Quantize then dequantize: (clamp(round(x / s) + zp, lo, hi) - zp) * s."""
    if x.requires_grad or not isinstance(scale, float):
        return (quantize(x, scale, zp, lo, hi, rule) - zp) * scale
    # the same operations in place, on one new tensor: evaluation is bound by memory traffic
    return _dequantize_scaled(x / scale, scale, zp, lo, hi, rule)


def _dequantize_scaled(y: torch.Tensor, scale, zp: int, lo: int, hi: int, rule: Rounding) -> torch.Tensor:
    """The rest of fake_quant for y already in units of the scale: rounded, clamped to the codes less the
    zero point, back to real units; in place."""
    return round_inplace(y, rule).clamp_(lo - zp, hi - zp).mul_(scale)


Check = Callable[[str, torch.Tensor], None]  # SimNet.forward's check(value name, codes)


def _key(name: str) -> str:
    return name.replace(".", "/")  # parameter names can't hold dots


class SimNet(nn.Module):
    def __init__(
        self,
        graph: Graph,
        settings: QuantSettings | None = None,
        q: dict[str, QType] | None = None,
        w_scales: dict[str, torch.Tensor] | None = None,
    ):
        """graph: a float graph (float weights). q and w_scales (per MAC node): the quantization to
        simulate; without them the net is the float model."""
        super().__init__()
        self.graph, self.settings, self.q = graph, settings, dict(q or {})
        self.weight, self.bias = nn.ParameterDict(), nn.ParameterDict()
        self.w_scale: dict[str, torch.Tensor] = {}
        for n in graph.mac_nodes():
            # float64 storage: int32 biases times their scale are exact only there
            self.weight[_key(n.name)] = nn.Parameter(n.tensors["weight"].detach().clone().double())
            self.bias[_key(n.name)] = nn.Parameter(n.tensors["bias"].detach().clone().double())
            if w_scales:
                self.w_scale[n.name] = w_scales[n.name].double().clone()
        self.quantize = bool(self.q)
        self.track_weights = False  # QAT: re-derive weight scales every step
        self.min_exponent: dict[str, torch.Tensor] = {}  # per MAC node, the --max-shift floor (QAT)
        self._exact: dict[str, bool] = {}  # per MAC node: float32 exact in eval (see float32_exact)
        self._all_float32: bool | None = None  # values carried in float32 (see all_float32)
        self._node32: dict[str, bool] = {}
        self._folded: dict[str, tuple[torch.Tensor, torch.Tensor, Rounding]] = {}
        # the lowered graph's exactness plan (potq.ir.bounds), set by `simulated`: it decides which nodes
        # evaluate in float32; None (float nets, QAT) keeps eval in float64
        self.plan: ExactPlan | None = None
        self._check: Check | None = None  # forward's check, while it runs
        self._checked: set[str] = set()  # the values `finish` handed to it in this forward
        # verify (potq.jobs.verify): per float32 requantizing MAC node, its folded GEMM's output where verify has
        # proven it equal to the golden model's, which computed it; _mac takes it instead of computing it
        self.shared_gemms: dict[str, torch.Tensor] = {}

    @property
    def rule(self) -> str | None:
        return self.settings.rounding if self.quantize else None

    def params_of(self, n: Node) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight[_key(n.name)], self.bias[_key(n.name)]

    def forward(
        self, x: torch.Tensor, record: dict[str, torch.Tensor] | None = None, check: Check | None = None
    ) -> torch.Tensor:
        """Logits of normalized images x. With `record`: every value's integer codes (quantized net)
        or float values (float net), keyed by value name. With `check` (quantized net): check(name, codes)
        for every value as soon as its codes exist (verify compares them and drops them); the tensor may be
        overwritten once check returns, so compare, don't keep."""
        env = {self.graph.input: x if self.training else self.carried(x)}
        self._check, self._checked = (check if self.quantize else None), set()
        try:
            for n in self.graph.nodes:
                y = SIM_KERNELS[n.op](self, n, [env[v] for v in n.inputs])
                env[n.output] = y
                if record is not None:
                    record[n.output] = self.codes(n.output, y) if self.quantize else y
                if self._check is not None and n.output not in self._checked:
                    self._check(n.output, record[n.output] if record is not None else self.codes(n.output, y))
        finally:
            self._check = None
        return env[self.graph.output]

    def carried(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images as eval carries them into the input node: float32 where every value is exact there
        (all_float32), else float64 (see the module docstring); channels last, which the layers after it keep
        (see potq.ir.tensor.nhwc)."""
        return nhwc(x.float() if self.quantize and self.all_float32() else x.double())

    def codes(self, value: str, y: torch.Tensor) -> torch.Tensor:
        """The integer codes of a fake-quantized value (exact: it lies on its grid)."""
        q = self.q[value]
        if y.dtype == torch.float32 and q.bits <= 8 and q.exponent is not None:
            # codes 0..255 are exact in float32, and y / 2^e is one already (y lies on the grid): no rounding
            c = torch.mul(y.detach(), 2.0**-q.exponent)
            return c.add_(q.zero_point) if q.zero_point else c
        return torch.round(y.detach() / q.scale).to(torch.int64) + q.zero_point

    def finish(self, n: Node, y: torch.Tensor, rule: Rounding) -> torch.Tensor:
        """The rest of fake_quant for node n's output y, already in units of its scale, in place: rounded,
        clamped to its codes less the zero point, handed to forward's `check` as codes while they are at hand
        (sparing the pass that `codes` makes back from real units), then scaled to real units."""
        q = self.q[n.output]
        y = round_inplace(y, rule).clamp_(q.lo - q.zero_point, q.hi - q.zero_point)
        if self._check is not None:
            self._check(n.output, y.add(q.zero_point) if q.zero_point else y)
            self._checked.add(n.output)
        return y.mul_(q.scale)

    def mac_params(self, n: Node, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """A MAC node's weight and bias in `dtype`, fake-quantized in a quantized net."""
        w, b = self.params_of(n)
        w, b = w.to(dtype), b.to(dtype)
        if not self.quantize:
            return w, b
        if self.track_weights:
            floor = self.min_exponent.get(n.name)  # per channel where the node requantizes (not the logits)
            fmt = (n.weight_bits, n.weight_code)
            self.w_scale[n.name] = weight_scales(w, self.settings, n.requant, n.name, floor, fmt)[0]
        ws = self.w_scale[n.name].to(w.device, w.dtype)
        s_in = self.q[n.inputs[0]].scale
        view = row_view(ws, w.dim())
        w = project_weights(w / view, n.weight_code, n.weight_bits, self.rule) * view
        b = fake_quant(b, s_in * ws, 0, -INT32_MAX, INT32_MAX, self.rule)
        return w, b

    def folded(self, n: Node) -> tuple[torch.Tensor, torch.Tensor, Rounding]:
        """A float32-exact requantizing MAC node's quantized weight and bias divided by its output scale
        (see fold_requant), once per eval."""
        if n.name not in self._folded:
            w, b = self.mac_params(n, torch.float64)
            e_in, e_out = self.q[n.inputs[0]].exponent, self.q[n.output].exponent
            shifts = e_out - e_in - torch.log2(self.w_scale[n.name].double())
            self._folded[n.name] = fold_requant(w, b, torch.tensor(-e_out), self.rule, int(shifts.min()))
        return self._folded[n.name]

    def requantize(self, n: Node, y: torch.Tensor) -> torch.Tensor:
        """A node's output: its fused clamp (float net) or its QType (quantized net)."""
        if not self.quantize:
            act = n.act
            return y if act is None else y.clamp(act[0], act[1])
        q = self.q[n.output]
        return fake_quant(y, q.scale, q.zero_point, q.lo, q.hi, self.rule)

    def train(self, mode: bool = True) -> SimNet:
        self._exact.clear()  # weights may change: prove exactness again
        self._all_float32 = None
        self._node32.clear()
        self._folded.clear()
        if mode:
            self.plan = None  # training changes the weights the plan was proven for
        return super().train(mode)

    def all_float32(self) -> bool:
        """Whether eval carries values in float32: every scale a power of two in float32's normal range
        (a fake-quantized value, at most 255 steps of 2^e, is then exact in float32), and proven bounds."""
        if self._all_float32 is None:
            es = [q.exponent for q in self.q.values()]
            self._all_float32 = self.plan is not None and all(e is not None and -100 < e < 100 for e in es)
        return self._all_float32

    def node_float32(self, n: Node) -> bool:
        """Whether node n computes exactly in float32: the exactness plan (potq.ir.bounds, which `simulated`
        hands over) says its worst case stays below 2^24 integer steps, and its products are exact
        (float32_exact: the scales, too, must be powers of two well inside float32's range)."""
        if n.name not in self._node32:
            exact = self.plan is not None and self.plan.node_float32(n.name)
            self._node32[n.name] = exact and (n.op not in MAC_OPS or self.float32_exact(n))
        return self._node32[n.name]

    def float32_exact(self, n: Node) -> bool:
        """Whether node n's fake-quantized products and sums (bias aside) are exact in float32: power-of-two
        scales, every partial sum of integer products below 2**24 (max |x - zp| times the largest L1 norm
        of a channel's integer weights), and no exponent near float32's smallest normal number."""
        if n.name not in self._exact:
            q_in = self.q[n.inputs[0]]
            ws = self.w_scale[n.name]
            w_exp = torch.log2(ws)
            exact = q_in.exponent is not None and bool((w_exp == torch.round(w_exp)).all())
            if exact:
                w = self.params_of(n)[0].detach().double()
                w_int = torch.round(w / row_view(ws, w.dim()))
                x_max = max(abs(q_in.lo - q_in.zero_point), abs(q_in.hi - q_in.zero_point))
                exact = x_max * float(w_int.abs().flatten(1).sum(1).max()) < FLOAT32_EXACT
                exact = exact and q_in.exponent + int(w_exp.min()) > -100
            self._exact[n.name] = exact
        return self._exact[n.name]

    def float_graph(self) -> Graph:
        """The float graph with this net's (trained) weights."""
        nodes = []
        for n in self.graph.nodes:
            tensors = dict(n.tensors)
            if n.op in MAC_OPS:
                w, b = self.params_of(n)
                tensors.update(weight=w.detach().cpu().double().clone(), bias=b.detach().cpu().double().clone())
            nodes.append(Node(n.name, n.op, list(n.inputs), n.output, dict(n.attrs), tensors))
        g = self.graph
        return Graph(nodes, dict(g.shapes), g.input, g.output)


# ---- kernels: one per op type ---------------------------------------------------------------------


def _input(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    if not net.quantize:
        return xs[0]
    if xs[0].dtype == torch.float32 and not net.training:  # all_float32: a power-of-two scale, exact
        return net.finish(n, xs[0] / net.q[n.output].scale, net.rule)
    return net.requantize(n, xs[0])


def _mac(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    carried32 = x.dtype == torch.float32 and not net.training and net.quantize  # all_float32 holds
    exact32 = carried32 and net.node_float32(n)
    if carried32 and not exact32:  # this node in float64; its output goes back to float32 exactly
        y = _mac(net, n, [x.double()])
        return y.float() if n.requant else y
    if exact32 and n.requant:  # the output scale (and half-up's half) inside the GEMM: the same numbers
        w, b, rule = net.folded(n)
        y = net.shared_gemms.pop(n.name, None)
        return net.finish(n, _linear_op(n, x, w, b) if y is None else y, rule)
    w, b = net.mac_params(n, torch.float64 if exact32 else x.dtype)  # float64: exact quantized weights
    if exact32:
        y = _linear_op(n, x, w.float(), b.float())  # all_float32: the whole node is exact in float32
    elif not net.training and net.quantize and net.float32_exact(n):
        # the same numbers, faster: every partial sum is an integer below 2**24 times a power of two
        y = _linear_op(n, x.float(), w.float(), None).double() + channel_view(b, x.dim())
    else:
        y = _linear_op(n, x, w, b)
    if not n.requant:
        return y  # int32 logits at scale s_in * s_w: no requantization
    return net.requantize(n, y)


def _linear_op(n: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if n.op is OpType.CONV:
        a = n.attrs
        return F.conv2d(x, w, b, tuple(a["stride"]), tuple(a["padding"]), 1, a["groups"])
    return F.linear(x, w, b)


def _add(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    if xs[0].dtype == torch.float32 and not net.training and not net.node_float32(n):
        return _add(net, n, [x.double() for x in xs]).float()
    q = net.q.get(n.output)
    if xs[0].dtype == torch.float32 and not net.training and q is not None and q.exponent is not None:
        # x0 / 2^e + x1 / 2^e in two passes, then the rest of fake_quant: the same exact numbers
        y = torch.mul(xs[0], 2.0**-q.exponent).add_(xs[1], alpha=2.0**-q.exponent)
        return net.finish(n, y, net.rule)
    return net.requantize(n, xs[0] + xs[1])  # exact in float64 (float32: node_float32): power-of-two grids


def _maxpool(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    return F.max_pool2d(xs[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]))


def _avgpool(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    if net.quantize and xs[0].dtype == torch.float32 and not net.training and not net.node_float32(n):
        return _avgpool(net, n, [xs[0].double()]).float()
    a = n.attrs
    y = F.avg_pool2d(xs[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]), count_include_pad=True)
    return net.requantize(n, y) if net.quantize else y


def _concat(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(xs, 1)


def _flatten(net: SimNet, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.flatten(xs[0], 1)


SIM_KERNELS: dict[OpType, Callable[[SimNet, Node, list[torch.Tensor]], torch.Tensor]] = {
    OpType.INPUT: _input,
    OpType.CONV: _mac,
    OpType.LINEAR: _mac,
    OpType.ADD: _add,
    OpType.MAXPOOL: _maxpool,
    OpType.AVGPOOL: _avgpool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _flatten,
}


def dequantize(qgraph: Graph) -> tuple[Graph, dict[str, torch.Tensor]]:
    """(float graph with weights w_int * s_w and biases b_int * s_in * s_w, weight scales per node)
    of a lowered graph: exactly the weights that the integer model multiplies."""
    nodes, scales = [], {}
    for n in qgraph.nodes:
        tensors = {}
        if n.op in MAC_OPS:
            ws = weight_scale(n)
            s_in = qgraph.q[n.inputs[0]].scale
            w = n.tensors["weight"].double() * row_view(ws, n.tensors["weight"].dim())
            tensors = {"weight": w, "bias": n.tensors["bias"].double() * s_in * ws}
            scales[n.name] = ws
        nodes.append(Node(n.name, n.op, list(n.inputs), n.output, dict(n.attrs), tensors))
    return Graph(nodes, dict(qgraph.shapes), qgraph.input, qgraph.output), scales


def simulated(qgraph: Graph) -> SimNet:
    """The fake-quantized model of a lowered graph, in eval mode."""
    fgraph, scales = dequantize(qgraph)
    if qgraph.rounding is None or qgraph.scheme is None:
        raise ValueError("simulated() takes a quantized graph: this one has no rounding rule or scheme")
    settings = QuantSettings(qgraph.scheme, rounding=qgraph.rounding)
    net = SimNet(fgraph, settings, qgraph.q, scales).eval()
    if all(q.exponent is not None for q in qgraph.q.values()):  # power-of-two: shifts to bound
        net.plan = exactness_plan(qgraph)
    return net
