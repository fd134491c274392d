"""Calibration and lowering: float graph -> integer graph, once.

`calibrate` runs the float graph on calibration images and gives every value a QType by the scheme's
rules (potq.quant.scheme). Values that must share one scale share it: a max pool or a flatten keeps its
input's QType, a concatenation's inputs and output take one QType fitted to all of them.

`lower` then computes every integer the hardware needs, each in one place:
- the input lookup table: normalization and quantization of each pixel value, per channel;
- int8 weights, int32 biases at scale s_in * s_w, and the shift e_out - e_in - e_w per output channel
  (`--max-shift` coarsens the weight exponents until it fits);
- an addition's alignment: e_m = min(e_a, e_b); inputs shifted left by e_a - e_m and e_b - e_m, the sum
  shifted right by e_out - e_m;
- average pooling over k = 2^n values: the sum shifted right by e_out - e_in + n;
then proves every accumulator fits int32 (potq.ir.bounds) and checks the graph.
"""

from __future__ import annotations

import math

import torch

from potq.errors import UserError
from potq.ir.arith import round_float
from potq.ir.bounds import analyse, nonnegative, shared_groups
from potq.ir.graph import MAC_OPS, SHARED_QTYPE_OPS, Graph, Node, OpType, QType, pool_shift_bits, row_view, weight_scale
from potq.ir.rules import INT32_MAX
from potq.ir.tensor import normalize
from potq.quant.arith import project_weights, quantize
from potq.quant.precision import annotate, value_bits
from potq.quant.scheme import QuantSettings, activation_qtype, needs_sample, weight_scales
from potq.quant.simulate import SimNet

SAMPLE_KEEP = 1 << 16  # sampled values per batch of a value, for the exponent rules that search (mse)


class Stats:
    """Running min, max and a bounded random sample of one value: `keep` values per batch, or none
    (keep=0) for the rules that read only the range (scheme.needs_sample), which then skip the gather."""

    def __init__(self, keep: int = SAMPLE_KEEP):
        self.min, self.max, self.keep, self.parts = float("inf"), float("-inf"), keep, []

    def add(self, x: torch.Tensor, what: str, g: torch.Generator) -> None:
        """One batch of a value. A batch whose extremes are finite (every batch of a sane model) costs one
        pass (aminmax, which propagates NaN) and a gather of the sample; only a batch with inf or NaN pays
        for the finite-value mask and its copy. Both paths draw the same values."""
        if not x.numel():
            return
        lo, hi = (float(v) for v in torch.aminmax(x))
        if math.isfinite(lo) and math.isfinite(hi):
            self.min, self.max = min(self.min, lo), max(self.max, hi)
            if self.keep:
                idx = torch.randint(0, x.numel(), (min(self.keep, x.numel()),), generator=g)
                # torch.take indexes in logical (row-major) order in any memory layout, without a copy: the
                # values x[unravel_index(idx)] gave, far cheaper; float64 comes in `sample`
                self.parts.append(torch.take(x, idx))
            return
        if torch.isnan(x).any():
            raise UserError(f"{what}: NaN in the calibration activations")
        finite = x[torch.isfinite(x)].flatten()
        if finite.numel():
            self.min, self.max = min(self.min, float(finite.min())), max(self.max, float(finite.max()))
            if self.keep:
                idx = torch.randint(0, finite.numel(), (min(self.keep, finite.numel()),), generator=g)
                self.parts.append(finite[idx])

    def merge(self, other: Stats) -> None:
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.keep = min(self.keep, other.keep)
        self.parts += other.parts

    @property
    def seen(self) -> bool:
        """Whether any finite value was seen."""
        return self.min <= self.max

    def sample(self) -> torch.Tensor:
        if not self.keep:
            raise ValueError("these statistics were collected without a sample (keep=0)")
        return torch.cat([p.double() for p in self.parts]) if self.parts else torch.zeros(1, dtype=torch.float64)

    @property
    def max_abs(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.seen else 0.0


CALIB_DTYPE = torch.float32  # the arithmetic of the model being quantized: see collect_stats


@torch.no_grad()
def collect_stats(
    graph: Graph, x: torch.Tensor, batch: int = 250, dtype: torch.dtype = CALIB_DTYPE, sample: bool = True
) -> dict[str, Stats]:
    """Every value's calibration statistics: the float graph's values on x (normalized images). They
    depend on the graph and the images only, so every scheme of a run can share them.

    The values are the FP32 model's: the graph runs in float32 (oneDNN), as the trained model does and as
    every other PTQ tool calibrates. SimNet's eval mode would carry them in float64 (its exact reference),
    which CPUs compute ~8x slower (no oneDNN kernels) and which gave the same quantized models on every
    model measured (issue 22, benchmarks/RESULTS.md); dtype=torch.float64 keeps that path. A folded float
    graph has no dropout and no batch statistics, so SimNet's train mode differs from eval only in this:
    it keeps the input's dtype and layout. sample=False: min and max only (see Stats)."""
    net = SimNet(graph)
    net.train(dtype != torch.float64)
    x = x.to(dtype)
    g = torch.Generator().manual_seed(0)
    stats = {n.output: Stats(SAMPLE_KEEP if sample else 0) for n in graph.nodes}
    for i in range(0, len(x), batch):
        record: dict[str, torch.Tensor] = {}
        net(x[i : i + batch], record)
        for v, t in record.items():
            stats[v].add(t, f"output of {graph.producer(v).name}", g)
    return stats


@torch.no_grad()
def input_means(
    graph: Graph, x: torch.Tensor, batch: int = 250, nodes: set[str] | None = None
) -> dict[str, torch.Tensor]:
    """Per MAC node with low-bit weights (or each MAC node named in `nodes`: a search that lowers them at many
    formats), the mean of each of its input channels over the calibration images (the float graph's values):
    what `bias_correction` needs."""
    wanted = {n.inputs[0] for n in graph.mac_nodes() if (n.low_bit if nodes is None else n.name in nodes)}
    if not wanted:
        return {}
    net = SimNet(graph)
    net.train(True)  # float32, as collect_stats
    sums: dict[str, torch.Tensor] = {}
    for i in range(0, len(x), batch):
        record: dict[str, torch.Tensor] = {}
        net(x[i : i + batch].float(), record)
        for v in wanted:
            t = record[v].double()
            s = t.sum(dim=[d for d in range(t.dim()) if d != 1])
            sums[v] = sums[v] + s if v in sums else s
    per_channel = {v: math.prod(graph.shapes[v][1:]) * len(x) for v in wanted}
    return {v: s / per_channel[v] for v, s in sums.items()}


def bias_correction(n: Node, w: torch.Tensor, w_q: torch.Tensor, mean_in: torch.Tensor) -> torch.Tensor:
    """The shift that quantizing the weights gives each output channel's mean, E[(W_q - W) x] = (W_q - W) E[x]
    (empirical bias correction, Nagel et al., "Data-free quantization", ICCV 2019, section 4.2): subtracted
    from the bias, so that the low-bit layer keeps its float mean. Padding's zeros are counted as E[x]."""
    err = (w_q - w).flatten(2).sum(2) if w.dim() > 2 else w_q - w  # (O, I / groups): summed over the kernel
    groups = n.attrs.get("groups", 1)  # a linear node: one group
    means = mean_in.view(groups, 1, -1)  # the input channels each group's outputs read
    return (err.view(groups, -1, err.shape[1]) * means).sum(-1).reshape(-1)


def calibrate(
    graph: Graph, x: torch.Tensor, settings: QuantSettings, stats: dict[str, Stats] | None = None
) -> dict[str, QType]:
    """QTypes of every value (except the int32 logits: see `lower`) from the float graph's values on
    x (normalized images), or from `stats` that collect_stats made of them."""
    settings.check()
    annotate(graph, settings)  # each MAC node's weight format, which lowering and the simulator read
    bits = value_bits(graph, settings)
    stats = stats if stats is not None else collect_stats(graph, x, sample=needs_sample(settings))
    group = shared_groups(graph)
    merged: dict[str, Stats] = {}
    for v, st in stats.items():
        merged.setdefault(group[v], Stats(st.keep)).merge(st)
    nonneg = nonnegative(graph)
    signed = {r: not all(nonneg[v] for v in stats if group[v] == r) for r in merged}
    q: dict[str, QType] = {}
    for n in graph.nodes:
        v = n.output
        if n.op in SHARED_QTYPE_OPS:
            ins = [q[u] for u in n.inputs]
            base = activation_qtype(merged[group[v]], signed[group[v]], None, settings, bits[v])
            lo, hi = min(i.lo for i in ins), max(i.hi for i in ins)
            q[v] = QType(base.zero_point, lo, hi, base.scale, base.exponent, base.bits)
        else:
            q[v] = activation_qtype(merged[group[v]], signed[group[v]], n.act, settings, bits[v])
    return q


def input_lut(mean: list[float], std: list[float], q: QType, rounding: str) -> torch.Tensor:
    """(C, 256) uint8 codes: the quantized normalized value of every pixel value in every channel;
    the simulator's input node computes the same numbers (same normalize, same rounding)."""
    c = len(mean)
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, c, 256, 1)
    codes = quantize(normalize(pixels, mean, std).double(), q.scale, q.zero_point, q.lo, q.hi, rounding)
    return codes.view(c, 256).to(torch.uint8)


def int32_bias(n: Node, b: torch.Tensor, q_in: QType, ws: torch.Tensor, rounding: str) -> torch.Tensor:
    """The bias in accumulator units (scale s_in * s_w), or one line naming the layer when int32 can't
    hold it: saturating it would silently change the layer (it happens when the input's scale is tiny,
    that is when the layer before it outputs near-zero values on the calibration images)."""
    codes = round_float(b / (q_in.scale * ws), rounding)
    worst = int(codes.abs().argmax())
    if float(codes[worst].abs()) > INT32_MAX:
        e_in = f"2^{q_in.exponent}" if q_in.exponent is not None else f"{q_in.scale:.3g}"
        raise UserError(
            f"{n.name}: bias {float(b[worst]):.4g} of output channel {worst} is {float(codes[worst]):.4g} "
            f"accumulator units, beyond int32: the layer's input scale is {e_in}, so the values reaching it "
            "are near zero on the calibration images (a dead or vanishing layer before it?); check the "
            "model or calibrate on other images"
        )
    return codes.to(torch.int32)


def lower(
    fgraph: Graph, q: dict[str, QType], settings: QuantSettings, means: dict[str, torch.Tensor] | None = None
) -> Graph:
    """The integer graph of a float graph whose values have QTypes; `means` (input_means): bias-correct the
    MAC nodes with low-bit weights (PTQ; QAT learns its biases instead)."""
    settings.check()
    pot = settings.spec.pot
    q = dict(q)
    nodes = []
    for n in fgraph.nodes:
        attrs, t = dict(n.attrs), {}
        q_out = q.get(n.output)
        if n.op is OpType.INPUT:
            t["lut"] = input_lut(n.attrs["mean"], n.attrs["std"], q_out, settings.rounding)
        elif n.op in MAC_OPS:
            last = fgraph.emits_accumulators(n)
            attrs["requant"] = not last
            q_in = q[n.inputs[0]]
            floor = None
            if pot and settings.max_shift is not None and not last:
                floor = torch.full((n.tensors["weight"].shape[0],), q_out.exponent - q_in.exponent - settings.max_shift)
            fmt = (n.weight_bits, n.weight_code)
            ws, we = weight_scales(n.tensors["weight"], settings, not last, f"weights of {n.name}", floor, fmt)
            w, b = n.tensors["weight"].double(), n.tensors["bias"].double()
            view = row_view(ws, w.dim())
            t["weight"] = project_weights(w / view, fmt[1], fmt[0], settings.rounding).to(torch.int8)
            if means and n.inputs[0] in means and n.low_bit:
                b = b - bias_correction(n, w, t["weight"].double() * view, means[n.inputs[0]])
            t["bias"] = int32_bias(n, b, q_in, ws, settings.rounding)
            if we is None:
                t["w_scale"] = ws
            else:
                t["w_exp"] = we
            if last:
                e = q_in.exponent + int(we[0]) if we is not None else None
                q[n.output] = QType(0, -INT32_MAX, INT32_MAX, q_in.scale * float(ws[0]), e, bits=32)
            elif pot:
                t["shift"] = q_out.exponent - q_in.exponent - we
        elif n.op is OpType.ADD and pot:
            ea, eb = (q[v].exponent for v in n.inputs)
            em = min(ea, eb)
            t["align"] = torch.tensor([ea - em, eb - em], dtype=torch.int64)
            t["shift"] = torch.tensor([q_out.exponent - em], dtype=torch.int64)
        elif n.op is OpType.AVGPOOL and pot:
            t["shift"] = torch.tensor([q_out.exponent - q[n.inputs[0]].exponent + pool_shift_bits(n)])
        if pot and settings.max_shift is not None and "shift" in t and n.op not in MAC_OPS:
            if int(t["shift"].max()) > settings.max_shift:
                raise UserError(
                    f"{n.name}: its {n.op.value} needs a right shift of {int(t['shift'].max())}, more than "
                    f"--max-shift {settings.max_shift}"
                )
        nodes.append(Node(n.name, n.op, list(n.inputs), n.output, attrs, t))
    graph = Graph(nodes, dict(fgraph.shapes), fgraph.input, fgraph.output, q, settings.rounding, settings.scheme)
    if pot:
        analyse(graph)  # refuses what int32 can't hold, naming the node
    graph.check()
    return graph


def min_weight_exponents(qgraph: Graph, settings: QuantSettings) -> dict[str, torch.Tensor]:
    """Per MAC node, the finest weight exponent that keeps its shift within --max-shift (for QAT)."""
    if not settings.spec.pot or settings.max_shift is None:
        return {}
    out = {}
    for n in qgraph.mac_nodes():
        if n.requant:
            e_in, e_out = qgraph.q[n.inputs[0]].exponent, qgraph.q[n.output].exponent
            out[n.name] = torch.full((n.tensors["weight"].shape[0],), e_out - e_in - settings.max_shift)
    return out


def weight_scales_of(qgraph: Graph) -> dict[str, torch.Tensor]:
    return {n.name: weight_scale(n) for n in qgraph.mac_nodes()}
