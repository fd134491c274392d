"""The PE's stress test (`potq verify --rtl --pe`): test vectors rarely come near a node's worst-case
accumulator (on the README's user net the largest is 156,101 while the bound analysis allows 4,832,567), so a
PE whose accumulator is too narrow passes them. Here every MAC node gets a synthetic input that drives one
output to its largest |dot product|: for the output channel and sign that give the most, every input of that
output's window at the end of its code range [lo, hi] that the weight's sign calls for (the bound analysis,
potq.ir.bounds, takes max |x - zp| over the same range; where the zero point sits off centre, the reachable
worst case is that much below the bound, and this reaches it).

Each synthetic input and the golden output of it go into a memory image of their own beside the vectors'. The
testbench runs every node of every image, but in a stress image only the stressed nodes count: each node reads
its inputs from the image, so a node whose inputs were replaced for another node's sake computes something else,
and its comparison means nothing. Nodes whose inputs and outputs share no value go into one image."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from potq.deploy.rtl_causes import mac, worst_dot
from potq.golden import GOLDEN_KERNELS, IntegerModel, as_int32
from potq.ir.graph import Graph, Node, OpType, pair


@dataclass
class Stress:
    """One stressed node: its synthetic input's codes (batch of one), the worst case and what it reaches."""

    node: str
    x: torch.Tensor
    worst_dot: int  # potq.ir.bounds' worst case less the bias: the most the PE's accumulator must hold
    reached_dot: int  # the largest |dot product| of x


def _extremes(graph: Graph, n: Node, w: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """(output channel, sign, the codes for its weights' shape) that give the largest |dot product|."""
    q = graph.q[n.inputs[0]]
    up, down = q.hi - q.zero_point, q.lo - q.zero_point
    top = torch.where(w > 0, w * up, w * down).flatten(1).sum(1)  # each channel's largest dot product
    bottom = torch.where(w > 0, w * down, w * up).flatten(1).sum(1)  # and its smallest
    o_top, o_bottom = int(top.argmax()), int(bottom.argmin())
    o, sign = (o_top, 1) if int(top[o_top]) >= -int(bottom[o_bottom]) else (o_bottom, -1)
    hi, lo = (q.hi, q.lo) if sign > 0 else (q.lo, q.hi)
    codes = torch.where(w[o] > 0, hi, torch.where(w[o] < 0, lo, q.zero_point))
    return o, sign, codes


def _window_start(size: int, k: int, stride: int, pad: int, out: int) -> int:
    """The input row (or column) where the first output's window lies wholly inside; the padded edge if none."""
    for o in range(out):
        start = o * stride - pad
        if start >= 0 and start + k <= size:
            return start
    return -pad


def stress_input(graph: Graph, n: Node) -> Stress:
    """The synthetic input of MAC node n (see the module docstring)."""
    q, shape = graph.q[n.inputs[0]], graph.shapes[n.inputs[0]]
    w = n.tensors["weight"].to(torch.int64)
    o, _, codes = _extremes(graph, n, w)
    x = torch.full((1, *shape), q.zero_point, dtype=torch.int64)
    if n.op is OpType.LINEAR:
        x = codes.reshape(1, *shape)
    else:
        out_shape = graph.shapes[n.output]
        group = o // (w.shape[0] // n.attrs["groups"])
        c0 = group * w.shape[1]
        (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
        y0 = _window_start(shape[1], kh, sh, ph, out_shape[1])
        x0 = _window_start(shape[2], kw, sw, pw, out_shape[2])
        ys, xs = slice(max(y0, 0), min(y0 + kh, shape[1])), slice(max(x0, 0), min(x0 + kw, shape[2]))
        kys, kxs = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        x[0, c0 : c0 + w.shape[1], ys, xs] = codes[:, kys, kxs]
    dot = mac(n, x.to(torch.float64) - q.zero_point, w.to(torch.float64))
    return Stress(n.name, x.to(torch.int32), worst_dot(graph, n), int(dot.abs().max()))


def stress_images(graph: Graph, base: dict[str, torch.Tensor]) -> list[tuple[dict[str, torch.Tensor], list[Stress]]]:
    """Memory images for the stress test: each a copy of `base` (one image's values, no batch axis) with some
    MAC nodes' inputs replaced by their synthetic ones and their outputs by the golden model's of them, no two
    of them sharing a value; with the stressed nodes of each."""
    golden = IntegerModel(graph)
    groups: list[tuple[dict[str, torch.Tensor], list[Stress], set[str]]] = []
    for n in graph.mac_nodes():
        touched = {*n.inputs, n.output}
        free = next((g for g in groups if not g[2] & touched), None)
        if free is None:
            free = (dict(base), [], set())
            groups.append(free)
        s = stress_input(graph, n)
        free[0][n.inputs[0]] = s.x[0]
        free[0][n.output] = as_int32(GOLDEN_KERNELS[n.op](golden, n, [s.x]))[0].contiguous()
        free[1].append(s)
        free[2].update(touched)
    return [(values, stressed) for values, stressed, _ in groups]
