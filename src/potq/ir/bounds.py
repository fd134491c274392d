"""The int32 bound analysis of an integer graph: the worst-case accumulator of every node.

- MAC (Conv, grouped and depthwise included; Linear): |bias| + max|x - zp_in| * sum|w| over the inputs of
  one output channel (a grouped convolution's weight already holds only its group's inputs);
- Add: max|a - zp_a| << align_a + max|b - zp_b| << align_b;
- AvgPool: window x max|x - zp_in|;
plus what the rounding shifter adds (up to 2^(shift-1)), times 2^-shift where the shift is to the left.
A node whose worst case passes 2^31 - 1 is refused with one line naming it.
"""

from __future__ import annotations

import math

import torch

from potq.errors import UserError
from potq.ir.graph import MAC_OPS, Graph, Node, OpType, window
from potq.ir.rules import INT32_MAX


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
