"""The int32 bound analysis of an integer graph: the worst-case accumulator of every node.

- MAC (Conv, grouped and depthwise included; Linear): |bias| + max|x - zp_in| * sum|w| over the inputs of
  one output channel (a grouped convolution's weight already holds only its group's inputs);
- Add: max|a - zp_a| << align_a + max|b - zp_b| << align_b;
- AvgPool: window x max|x - zp_in|;
plus what the rounding shifter adds (up to 2^(shift-1)), times 2^-shift where the shift is to the left.
A node whose worst case passes 2^31 - 1 is refused with one line naming it.

From the bounds, one exactness plan (`exactness_plan`) for every interpreter that computes integers in
floats (the golden and the simulated models): a float holds an integer exactly below 2^24 (float32) or
2^53 (float64), and so does every partial sum of integer products whose worst case stays below that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from potq.errors import UserError
from potq.ir.graph import MAC_OPS, SHARED_QTYPE_OPS, SIGN_KEEPING_OPS, Graph, Node, OpType, window
from potq.ir.rules import ACCUMULATORS, FLOAT32_EXACT, INT32_BITS, INT32_MAX


def input_range(graph: Graph, value: str) -> int:
    """max |code - zero point| of a value."""
    q = graph.q[value]
    return max(abs(q.lo - q.zero_point), abs(q.hi - q.zero_point))


def accumulator_bound(graph: Graph, n: Node) -> int:
    """Worst-case |accumulator| of node n, before and after its rounding shift; 0 where none."""
    if n.op in MAC_OPS:
        l1 = n.tensors["weight"].to(torch.int64).abs().flatten(1).sum(1)
        acc = input_range(graph, n.inputs[0]) * int(l1.max()) + int(n.tensors["bias"].to(torch.int64).abs().max())
    elif n.op is OpType.ADD:
        align = n.tensors["align"].tolist()
        acc = sum(input_range(graph, v) << int(a) for v, a in zip(n.inputs, align, strict=True))
    elif n.op is OpType.AVGPOOL:
        acc = window(n) * input_range(graph, n.inputs[0])
    else:
        return 0
    shift = n.tensors.get("shift")
    if shift is not None and n.requant:
        acc += (1 << int(shift.max())) >> 1 if int(shift.max()) > 0 else 0  # the rounding shifter's half
        acc <<= max(0, -int(shift.min()))  # a left shift multiplies the accumulator
    return acc




def accumulator_bits(graph: Graph, n: Node, accumulator: str = ACCUMULATORS[0]) -> int:
    """The width of node n's accumulator as `accumulator` prices it: 32, or the bits (sign included) that its
    worst case (accumulator_bound) needs; 32 for a float graph, which has no proven bound."""
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"accumulator {accumulator!r}: choose from {', '.join(ACCUMULATORS)}")
    if accumulator == ACCUMULATORS[0] or not graph.quantized:
        return INT32_BITS
    return max(2, accumulator_bound(graph, n).bit_length() + 1)


def analyse(graph: Graph) -> dict[str, int]:
    """node name -> worst-case accumulator; raises UserError where int32 can't hold it."""
    bounds = {}
    for n in graph.nodes:
        acc = accumulator_bound(graph, n)
        if acc > INT32_MAX:
            raise UserError(
                f"{n.name}: worst-case {n.op.value} accumulator {acc} overflows int32 ({math.log2(acc):.1f} bits); "
                "use coarser weight scales or fewer inputs per output"
            )
        if acc:
            bounds[n.name] = acc
    return bounds


def headroom_bits(acc: int) -> float:
    return 31 - math.log2(acc) if acc > 0 else 31.0


# ---- the exactness plan: what runs exactly in which float type ----------------------------------------


@dataclass
class Gemm:
    """How a MAC node runs exactly: the float type, and the input-channel slices of one GEMM each."""

    dtype: torch.dtype
    slices: list[tuple[int, int]]


def exact_gemm(n: Node, x_max: int) -> Gemm:
    """Partial sums of a GEMM are sums of subsets of its products, so |partial| <= x_max * L1 of the
    weights it sees. Split the input channels into as few equal slices as keep that below 2**24, so
    that every slice runs exactly in float32; the slices' results are summed in int32."""
    w = n.tensors["weight"].to(torch.int64).abs()
    per_input = w.flatten(2).sum(2) if w.dim() == 4 else w  # (out, in): |w| summed over the kernel
    n_in = per_input.shape[1]
    if n.attrs.get("groups", 1) > 1:  # one GEMM per group already; float32 if the whole fits
        fits = x_max * int(per_input.sum(1).max()) < FLOAT32_EXACT
        return Gemm(torch.float32 if fits else torch.float64, [(0, n_in)])
    for k in range(1, n_in + 1):
        edges = [round(i * n_in / k) for i in range(k + 1)]
        slices = list(zip(edges[:-1], edges[1:], strict=True))
        if all(x_max * int(per_input[:, a:b].sum(1).max()) < FLOAT32_EXACT for a, b in slices):
            return Gemm(torch.float32, slices)
    return Gemm(torch.float64, [(0, n_in)])  # the int32 bound < 2**31 < 2**53: exact in float64


def raw_sum_bound(q: dict, n: Node) -> int:
    """Worst case of the Add's codes summed before their zero points come off, in units of its smallest
    alignment, plus the zero points' part and the rounding half: what the three-pass float32 Add holds."""
    align = n.tensors["align"].tolist()
    codes = sum(max(abs(q[v].lo), abs(q[v].hi)) << a for v, a in zip(n.inputs, align, strict=True))
    zeros = sum(abs(q[v].zero_point) << a for v, a in zip(n.inputs, align, strict=True))
    return codes + zeros + ((1 << int(n.tensors["shift"])) >> 1 if int(n.tensors["shift"]) > 0 else 0)


@dataclass
class ExactPlan:
    """Per node, how an interpreter that holds integers in floats stays exact."""

    bounds: dict[str, int]  # worst-case accumulator (analyse)
    gemms: dict[str, Gemm]  # MAC nodes: the float type and input-channel slices of the GEMM
    float32: set[str]  # worst case below 2^24: exact in float32 from the sum to the rounded result
    three_pass_adds: set[str]  # float32 Adds whose codes, summed before the zero points come off, stay < 2^24

    def node_float32(self, name: str) -> bool:
        """A node without an accumulator (pooling by max, concat, flatten) moves codes: always exact."""
        return name not in self.bounds or name in self.float32


def exactness_plan(graph: Graph) -> ExactPlan:
    bounds = analyse(graph)
    gemms = {n.name: exact_gemm(n, input_range(graph, n.inputs[0])) for n in graph.mac_nodes()}
    float32 = {name for name, b in bounds.items() if b < FLOAT32_EXACT}
    three_pass = {
        n.name
        for n in graph.nodes
        if n.op is OpType.ADD
        and n.name in float32
        and n.tensors["shift"].numel() == 1
        and raw_sum_bound(graph.q, n) < FLOAT32_EXACT
    }
    return ExactPlan(bounds, gemms, float32, three_pass)


def nonnegative(graph: Graph) -> dict[str, bool]:
    """Values that can't be negative: a ReLU's output, and what pooling, flattening or concatenating
    only such values makes. The zero-point policy keys on it."""
    nonneg = {graph.input: False}
    for n in graph.nodes:
        if n.op in SIGN_KEEPING_OPS:
            nonneg[n.output] = all(nonneg[v] for v in n.inputs)
        else:
            nonneg[n.output] = n.act is not None and n.act[0] >= 0
    return nonneg


def shared_groups(graph: Graph) -> dict[str, str]:
    """value -> the representative of the values that must share its scale and zero point."""
    parent = {v: v for v in graph.shapes}

    def find(v: str) -> str:
        while parent[v] != v:
            v = parent[v]
        return v

    for n in graph.nodes:
        if n.op in SHARED_QTYPE_OPS:
            for v in n.inputs:
                parent[find(v)] = find(n.output)
    return {v: find(v) for v in graph.shapes}
