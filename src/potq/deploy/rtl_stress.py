"""The PE's stress test (`potq verify --rtl --pe`): test vectors rarely come near a node's worst-case
accumulator (on the README's user net the largest is 156,101 while the bound analysis allows 4,832,567), so a
PE whose accumulator is too narrow passes them. Here every MAC node gets a synthetic input that drives outputs
to their largest |dot product|: for an output channel and a sign, every input of an output's window at the end
of its code range [lo, hi] that the weight's sign calls for; the most extreme channel first, then the others
(both signs), one per window where windows do not overlap, and in later windows only part of the inputs, so
that the PE's accumulator is seen all along its range (a wrapped value near the worst case clamps like the right
one). The bound analysis (potq.ir.bounds) takes max |x - zp| over the same range; where the zero point sits
off centre, the reachable worst case is that much below the bound, and this reaches it.

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


def _picks(graph: Graph, n: Node, w: torch.Tensor) -> list[list[torch.Tensor]]:
    """Per group of output channels, the input codes (the weights' shape less the output axis) that drive one
    of its outputs to an extreme dot product, most extreme first: each channel's largest and smallest."""
    q = graph.q[n.inputs[0]]
    up, down = q.hi - q.zero_point, q.lo - q.zero_point
    top = torch.where(w > 0, w * up, w * down).flatten(1).sum(1)  # each channel's largest dot product
    bottom = torch.where(w > 0, w * down, w * up).flatten(1).sum(1)  # and its smallest
    per_group = w.shape[0] // (n.attrs.get("groups", 1) if n.op is OpType.CONV else 1)
    groups: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(w.shape[0] // per_group)]
    for o in range(w.shape[0]):
        for extreme, (high, low) in ((int(top[o]), (q.hi, q.lo)), (-int(bottom[o]), (q.lo, q.hi))):
            codes = torch.where(w[o] > 0, high, torch.where(w[o] < 0, low, q.zero_point))
            groups[o // per_group].append((extreme, codes))
    return [[codes for _, codes in sorted(g, key=lambda t: -t[0])] for g in groups]


def _starts(size: int, k: int, stride: int, pad: int, out: int) -> list[int]:
    """Input rows (or columns) where windows lie wholly inside and overlap no other; the padded edge if none."""
    starts: list[int] = []
    for o in range(out):
        start = o * stride - pad
        if start >= 0 and start + k <= size and (not starts or start >= starts[-1] + k):
            starts.append(start)
    return starts or [-pad]


def _place(x: torch.Tensor, codes: torch.Tensor, c0: int, y0: int, x0: int) -> None:
    """Write a window's codes (C, KH, KW) into x (1, C', H, W) at channel c0 and (y0, x0), clipped at the edge."""
    _, kh, kw = codes.shape
    h, w = x.shape[2:]
    ys, xs = slice(max(y0, 0), min(y0 + kh, h)), slice(max(x0, 0), min(x0 + kw, w))
    x[0, c0 : c0 + codes.shape[0], ys, xs] = codes[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def _part(codes: torch.Tensor, k: int, zp: int) -> torch.Tensor:
    """Window k's codes: the first window all of them (the worst case), later ones the first part of them
    (the rest at the zero point), a part spread over (0.1, 1] by the golden ratio: dot products all along the
    range, so that a wrapped accumulator lands inside [lo, hi] somewhere instead of clamping like the right one."""
    if k == 0:
        return codes
    keep = max(1, round(codes.numel() * (1 - 0.9 * ((k * 0.6180339887) % 1))))
    flat = codes.flatten().clone()
    flat[keep:] = zp
    return flat.view(codes.shape)


def stress_input(graph: Graph, n: Node) -> Stress:
    """The synthetic input of MAC node n (see the module docstring): a convolution gets, in each group's
    channels, one window per place where windows do not overlap, the most extreme channel's first."""
    q, shape = graph.q[n.inputs[0]], graph.shapes[n.inputs[0]]
    w = n.tensors["weight"].to(torch.int64)
    picks = _picks(graph, n, w)
    if n.op is OpType.LINEAR:
        x = picks[0][0].reshape(1, *shape)
    else:
        x = torch.full((1, *shape), q.zero_point, dtype=torch.int64)
        out_shape = graph.shapes[n.output]
        (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
        places = [
            (y0, x0)
            for y0 in _starts(shape[1], kh, sh, ph, out_shape[1])
            for x0 in _starts(shape[2], kw, sw, pw, out_shape[2])
        ]
        for g, group in enumerate(picks):
            for k, (y0, x0) in enumerate(places):
                _place(x, _part(group[k % len(group)], k, q.zero_point), g * w.shape[1], y0, x0)
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
