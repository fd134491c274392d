"""The integer-only golden model: an interpreter of the integer graph with integers, shifts and clamps.

The data path: uint8 image -> input lookup table (normalization and quantization folded into 256
entries per channel) -> per node, in the graph's order: Conv/Linear subtract the input zero point,
multiply-accumulate with int8 weights, add the int32 bias, shift right with rounding, add the output
zero point, clamp (ReLU is the lower clamp); Add aligns its inputs by left shifts, sums, shifts right;
AvgPool sums its window and shifts; MaxPool, Concat and Flatten move codes -> int32 logits -> argmax.

Multiply-accumulates and window sums run through float GEMMs and pools, which are exact for integers as
long as every partial sum stays below 2**24 (float32) or 2**53 (float64). Each MAC node's worst case,
from its integer weights and its input range, picks the narrowest exact type (potq.ir.bounds proves the
int32 accumulator holds). Where a node's whole worst case (bias, rounding half and left shifts included)
stays below 2**24, its accumulator, its scaling by 2^-shift and the rounding of the result are exact in
float32 too, and the node runs in float32 end to end; elsewhere the shift is integer arithmetic in int64
(`shift_round`). tests/test_golden.py holds the two paths equal. This module imports nothing of the
float simulation. (oneDNN's uint8 x int8 convolution is not used: benchmarks/kernels.py finds it wrong
on a few percent of legal convolution shapes.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from potq.errors import UserError
from potq.ir.arith import fold_requant, round_inplace, shift_round, shift_round_float32
from potq.ir.bounds import exact_gemm, exactness_plan, headroom_bits  # noqa: F401 (exact_gemm: tests)
from potq.ir.graph import Graph, Node, OpType, QType, channel_view
from potq.ir.rules import (  # noqa: F401 (FLOAT32_EXACT: tests)
    FLOAT32_EXACT,
    FLOAT64_EXACT,  # noqa: F401
    Rounding,
)
from potq.ir.tensor import nhwc


class IntegerModel:
    # verify (potq.jobs.verify): the float32 requantizing MAC nodes whose scaled accumulator (the folded GEMM's
    # output, before its rounding) run() keeps a copy of in `kept`, for the simulated model; none by default
    keep_gemms: frozenset[str] | set[str] = frozenset()

    def __init__(self, graph: Graph, float32: bool = True):
        """float32=False: every shift in int64 (the reference path the tests hold the fast one to)."""
        if not graph.quantized or any(q.exponent is None for q in graph.q.values()):
            raise UserError(
                f"scheme {graph.scheme} has scales that are not powers of two: the integer model requantizes "
                "with shifts alone"
            )
        self.graph, self.rounding = graph, graph.rounding
        plan = exactness_plan(graph)  # potq.ir.bounds: what runs exactly in which float type
        self.bounds, self.gemms = plan.bounds, plan.gemms
        self.float32 = plan.float32 if float32 else set()
        self.three_pass_adds = plan.three_pass_adds if float32 else set()
        self._tensors: dict[tuple[str, str], torch.Tensor] = {}
        self._folded: dict[str, tuple[torch.Tensor, torch.Tensor, Rounding]] = {}
        self.kept: dict[str, torch.Tensor] = {}  # see keep_gemms

    def run(
        self, images: torch.Tensor, record: dict[str, torch.Tensor] | None = None, record_int32: bool = True
    ) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> int32 logits; `record` gets every value's integers by name, as
        int32 or (record_int32=False) as computed: float32 holding them exactly on the float32 path, which
        spares a conversion where only equality matters (verify)."""
        env = {self.graph.input: images}
        for n in self.graph.nodes:
            y = GOLDEN_KERNELS[n.op](self, n, [env[v] for v in n.inputs])
            env[n.output] = y
            if record is not None:  # int32 records in the logical (NCHW) order that exports write
                record[n.output] = as_int32(y).contiguous() if record_int32 else y
        return as_int32(env[self.graph.output])

    def tensor(self, n: Node, key: str, dtype: torch.dtype) -> torch.Tensor:
        """A node's tensor in `dtype`, converted once."""
        k = (n.name, key)
        if k not in self._tensors or self._tensors[k].dtype != dtype:
            self._tensors[k] = n.tensors[key].to(dtype)
        return self._tensors[k]

    def folded(self, n: Node) -> tuple[torch.Tensor, torch.Tensor, Rounding]:
        """A float32 requantizing MAC node's weight and bias times 2^-shift (see fold_requant), once."""
        if n.name not in self._folded:
            w, b, shift = n.tensors["weight"], n.tensors["bias"], n.tensors["shift"]
            self._folded[n.name] = fold_requant(w, b, -shift, self.rounding, int(shift.min()))
        return self._folded[n.name]

    def gemm_name(self, name: str) -> str:
        """How node `name` multiplies: "float32", "float32 x 2 slices", "float64"."""
        gemm = self.gemms.get(name)
        if gemm is None:
            return "-"
        slices = f" x {len(gemm.slices)} slices" if len(gemm.slices) > 1 else ""
        return str(gemm.dtype).replace("torch.", "") + slices

    def requantize(self, n: Node, acc: torch.Tensor) -> torch.Tensor:
        """shift right with rounding, add the output zero point, clamp. A float32 accumulator (a node in
        self.float32) is scaled by 2^-shift and rounded in float32, exactly."""
        q = self.graph.q[n.output]
        shift = n.tensors["shift"]
        shift = channel_view(shift, acc.dim()) if shift.numel() > 1 else shift
        if acc.dtype == torch.float32:  # codes stay float32 (exact integers) for the next node
            return _codes(shift_round_float32(acc, shift, self.rounding), q)
        return (shift_round(acc, shift, self.rounding) + q.zero_point).clamp_(q.lo, q.hi).to(torch.int32)

    def bounds_table(self) -> list[dict]:
        rows = []
        for n in self.graph.nodes:
            acc = self.bounds.get(n.name)
            if acc is None:
                continue
            rows.append(
                {
                    "layer": n.name,
                    "op": n.op.value,
                    "worst_case_accumulator": acc,
                    "bits": math.ceil(math.log2(acc + 1)) + 1,
                    "int32_headroom_bits": round(headroom_bits(acc), 2),
                    "gemm": self.gemm_name(n.name),
                }
            )
        return rows


def as_int32(t: torch.Tensor) -> torch.Tensor:
    """Codes and accumulators as int32 (the float32 path carries them as exact float32 integers)."""
    return t.to(torch.int32) if t.is_floating_point() else t


# ---- kernels: one per op type ---------------------------------------------------------------------
# A kernel takes codes as int32 or as float32 holding integers exactly (what the float32 path of the node
# before made) and returns either: the first thing each does is the exact conversion it needs.


def _input(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """One table lookup per pixel: lut[channel, value] (codes 0..255: exact in float32)."""
    lut = m.tensor(n, "lut", torch.float32)
    c = lut.shape[0]
    flat = xs[0].to(torch.int64) + 256 * torch.arange(c).view(1, -1, 1, 1)
    return nhwc(lut.reshape(-1)[flat])  # the layers after it keep the layout (see potq.data.nhwc)


def _mac(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """Exact integer multiply-accumulate (see exact_gemm), then the int32 bias, then requantization."""
    g, q = m.gemms[n.name], m.graph.q[n.output]
    zp = m.graph.q[n.inputs[0]].zero_point
    xf = (xs[0] - zp if zp else xs[0]).to(g.dtype)
    if n.name in m.float32:  # the bias and every partial sum below 2^24: one float32 GEMM, exact
        if not n.requant:  # int32 logits
            return _gemm(n, xf, m.tensor(n, "weight", torch.float32), m.tensor(n, "bias", torch.float32))
        w, b, rule = m.folded(n)  # the shift (and half-up's half) inside the GEMM: the same numbers
        y = _gemm(n, xf, w, b)
        if n.name in m.keep_gemms:
            m.kept[n.name] = y.clone()
        return _codes(round_inplace(y, rule), q)
    wf = m.tensor(n, "weight", g.dtype)
    acc = channel_view(n.tensors["bias"], xs[0].dim())
    for lo, hi in g.slices:
        x_part, w_part = (xf, wf) if len(g.slices) == 1 else (xf[:, lo:hi], wf[:, lo:hi])
        part = _gemm(n, x_part, w_part, None)
        acc = acc + part.to(torch.int32)  # exact, and int32 holds the sum: see potq.ir.bounds
    return m.requantize(n, acc) if n.requant else acc


def _gemm(n: Node, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The node's convolution or linear map of float-held integers (exact: see exact_gemm)."""
    a = n.attrs
    if n.op is OpType.CONV:
        return F.conv2d(x, w, bias, tuple(a["stride"]), tuple(a["padding"]), 1, a["groups"])
    return F.linear(x, w, bias)


def _add(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    q, align = m.graph.q, n.tensors["align"].tolist()
    if n.name in m.three_pass_adds:
        # ((x0 - zp0) << a0 + (x1 - zp1) << a1) * 2^-s as x0 * 2^(a0-s) + x1 * 2^(a1-s) - (the zero points'
        # part): three passes, every step an integer below 2^24 times 2^-s (potq.ir.bounds.raw_sum_bound), so exact;
        # then the rounding of shift_round_float32
        s = int(n.tensors["shift"])
        zero = sum(q[v].zero_point * 2.0 ** (a - s) for v, a in zip(n.inputs, align, strict=True))
        y = torch.mul(xs[0], 2.0 ** (align[0] - s)).add_(xs[1], alpha=2.0 ** (align[1] - s))
        return _codes(round_inplace(y.sub_(zero) if zero else y, m.rounding), q[n.output])
    if n.name in m.float32:  # integers times powers of two, summed below 2^24: exact in float32
        aligned = [
            (x - q[v].zero_point).to(torch.float32).mul_(2.0 ** int(a))
            for x, v, a in zip(xs, n.inputs, align, strict=True)
        ]
        return m.requantize(n, aligned[0].add_(aligned[1]))
    acc = sum(
        (as_int32(x).to(torch.int64) - q[v].zero_point) << int(a) for x, v, a in zip(xs, n.inputs, align, strict=True)
    )
    return m.requantize(n, acc)


def _codes(y: torch.Tensor, q: QType) -> torch.Tensor:
    """A rounded float32 result as the output's codes: its zero point added, clamped (a fused ReLU is the
    lower clamp), in place."""
    return (y.add_(q.zero_point) if q.zero_point else y).clamp_(q.lo, q.hi)


def _maxpool(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs  # codes are exact in float32; padding never wins (-inf)
    return F.max_pool2d(xs[0].to(torch.float32), tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]))


def _avgpool(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """The window's sum of (x - zp) (padding adds zeros: the zero point in code space), then a shift."""
    a = n.attrs
    exact32 = n.name in m.float32
    x = (xs[0] - m.graph.q[n.inputs[0]].zero_point).to(torch.float32 if exact32 else torch.float64)
    s = F.avg_pool2d(x, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]), divisor_override=1)
    return m.requantize(n, s if exact32 else s.to(torch.int64))


def _concat(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.to(torch.float32) for x in xs], 1)  # 8-bit codes: exact in float32


def _flatten(m: IntegerModel, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0].flatten(1)


GOLDEN_KERNELS: dict[OpType, Callable[[IntegerModel, Node, list[torch.Tensor]], torch.Tensor]] = {
    OpType.INPUT: _input,
    OpType.CONV: _mac,
    OpType.LINEAR: _mac,
    OpType.ADD: _add,
    OpType.MAXPOOL: _maxpool,
    OpType.AVGPOOL: _avgpool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _flatten,
}
