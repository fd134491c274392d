"""Why does the RTL give another value than the golden model? Each mismatching value gets one cause, named from
the exact integers (int64/float64, from the golden inputs) under hypotheses of what the hardware does instead:

- in the PPU: another rounding rule, or truncation toward zero (only when that rule gives every value of the
  node, since a floor and a half-up rule that rounds negative ties away from zero agree at every value that
  differs); a tie rounded the other way; a clamp off by one (one code inside [lo, hi] where the exact value
  reaches the bound); a value outside the clamp;
- in the PE (MAC nodes): an accumulator overflow (the dot product wrapped at fewer bits than its worst case
  needs; potq_core adds the bias after the PE), or a signed/unsigned operand (x - zp's sign dropped, x - zp or
  the weight read as unsigned);
- else off by one, or by more; a node without a rounding shift: its int32 accumulator or a moved code.

The PPU edge sweep (potq.deploy.rtl_check.ppu_sweep) names its mismatches with the same rules (`Requant`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from potq.deploy.rtl.pkg import ACC_W, CODE_W
from potq.ir.arith import shift_round
from potq.ir.bounds import input_range
from potq.ir.graph import MAC_OPS, Graph, Node, OpType, pair, row_view
from potq.ir.rules import Rounding

Labelled = list[tuple[str, torch.Tensor]]  # (cause, the codes or accumulators it gives)


@dataclass
class Requant:
    """One requantization, elementwise (the PPU's): clamp(round_shift(acc, shift, rule) + zp, lo, hi)."""

    acc: torch.Tensor  # int64, the bias included
    shift: torch.Tensor | int  # broadcasts over acc
    zp: torch.Tensor | int
    lo: torch.Tensor | int
    hi: torch.Tensor | int
    rule: Rounding

    def unclamped(self, acc: torch.Tensor | None = None, rule: Rounding | None = None) -> torch.Tensor:
        return shift_round(self.acc if acc is None else acc, self.shift, rule or self.rule) + self.zp

    def codes(self, acc: torch.Tensor | None = None, rule: Rounding | None = None) -> torch.Tensor:
        v = self.unclamped(acc, rule)
        return torch.minimum(torch.maximum(v, torch.as_tensor(self.lo)), torch.as_tensor(self.hi))


def mac(n: Node, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A MAC node's dot products (no bias) of float64 integers x (its input less the zero point) and w."""
    if n.op is OpType.LINEAR:
        return F.linear(x.flatten(1), w)  # exact: |acc| < 2^31 < 2^53
    a = n.attrs
    return F.conv2d(x, w, None, tuple(pair(a["stride"])), tuple(pair(a["padding"])), 1, a["groups"])


def _bias(n: Node, acc: torch.Tensor) -> torch.Tensor:
    b = n.tensors["bias"].to(torch.int64)
    return b.view(1, -1, *([1] * (acc.dim() - 2)))


def accumulator(graph: Graph, n: Node, xs: list[torch.Tensor]) -> torch.Tensor | None:
    """A requantizing node's exact accumulator (int64), from its golden inputs; None for the others."""
    q = graph.q
    if n.op in MAC_OPS:
        x = xs[0].to(torch.float64) - q[n.inputs[0]].zero_point
        dot = mac(n, x, n.tensors["weight"].to(torch.float64)).to(torch.int64)
        return dot + _bias(n, dot)
    if n.op is OpType.ADD:
        align = n.tensors["align"].tolist()
        return sum((x.to(torch.int64) - q[v].zero_point) << int(s) for x, v, s in zip(xs, n.inputs, align, strict=True))
    if n.op is OpType.AVGPOOL:
        a = n.attrs
        x = xs[0].to(torch.float64) - q[n.inputs[0]].zero_point
        k, s, p = (tuple(pair(a[key])) for key in ("kernel", "stride", "padding"))
        return F.avg_pool2d(x, k, s, p, divisor_override=1).to(torch.int64)
    return None


def worst_dot(graph: Graph, n: Node) -> int:
    """The MAC node's worst-case |dot product| (potq.ir.bounds without the bias): what the PE accumulates."""
    l1 = n.tensors["weight"].to(torch.int64).abs().flatten(1).sum(1)
    return input_range(graph, n.inputs[0]) * int(l1.max())


def pe_accumulators(graph: Graph, n: Node, xs: list[torch.Tensor]) -> Labelled:
    """A MAC node's accumulators (bias included, as the PPU gets them) under each PE fault: the dot product
    wrapped at each width from ACC_W - 1 bits down that changes it, and the operands' signedness faults."""
    x = xs[0].to(torch.float64) - graph.q[n.inputs[0]].zero_point
    w = n.tensors["weight"].to(torch.float64)
    dot = mac(n, x, w).to(torch.int64)
    b = _bias(n, dot)
    need = worst_dot(graph, n).bit_length() + 1
    out = []
    largest = int(dot.abs().max())
    for bits in range(ACC_W - 1, 1, -1):
        if largest < 1 << (bits - 1):  # no dot product reaches this width: wrapping there changes nothing
            continue
        wrapped = ((dot + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))
        label = f"an accumulator overflow: the PE's accumulator wraps at {bits} bits"
        out.append((f"{label} (this node's worst case needs {need})", wrapped + b))
    operand = "a signed/unsigned operand: the PE"
    for label, xx, ww in (
        (f"{operand} multiplies |x - zp| (drops its sign)", x.abs(), w),
        (f"{operand} reads x - zp as unsigned", x % (1 << (CODE_W + 1)), w),
        (f"{operand} reads the weight as unsigned", x, w % (1 << CODE_W)),
    ):
        out.append((label, mac(n, xx, ww).to(torch.int64) + b))
    return out


def rounding_candidates(rq: Requant) -> Labelled:
    """The codes under the wrong rounding: each rule other than the model's, and truncation toward zero (C's
    integer division), each labelled."""
    shift = torch.as_tensor(rq.shift, dtype=torch.int64)
    s = shift.clamp(min=0)
    acc = rq.acc
    trunc = torch.where(shift < 0, acc << (-shift).clamp(min=0), torch.where(acc < 0, -((-acc) >> s), acc >> s))
    out = [(f"rounds as {r.label}, the model {rq.rule.label}", rq.codes(rule=r)) for r in Rounding if r != rq.rule]
    lo, hi = torch.as_tensor(rq.lo), torch.as_tensor(rq.hi)
    out.append(("truncates toward zero instead of rounding", torch.minimum(torch.maximum(trunc + rq.zp, lo), hi)))
    return out


def value_causes(rq: Requant, got: torch.Tensor, want: torch.Tensor, hypotheses: Labelled) -> dict[str, int]:
    """Each mismatching value (got against want) counted under one cause. A hypothesis (its codes) that gives
    every value names them all; else value by value, the first of: outside the clamp, a clamp off by one, a tie
    rounded the other way, a hypothesis that gives this value, off by one, off by more."""
    bad = got != want
    for label, cand in hypotheses:
        if bool((got == cand).all()):
            return {label: int(bad.sum())}
    shift = torch.as_tensor(rq.shift, dtype=torch.int64)
    s = shift.clamp(min=0)
    tie = (s > 0) & ((rq.acc & ((1 << s) - 1)) == (1 << (s - 1).clamp(min=0)))
    one = (got - want).abs() == 1
    v, lo, hi = rq.unclamped(), torch.as_tensor(rq.lo), torch.as_tensor(rq.hi)
    checks = [(f"outside the clamp [{_bounds(rq)}]", (got < lo) | (got > hi))]
    edge = ((want == hi) & (got == hi - 1) & (v >= hi)) | ((want == lo) & (got == lo + 1) & (v <= lo))
    checks += [("a clamp off by one (one code inside the bound the exact value reaches)", edge)]
    checks += [("a tie rounded the other way", tie & one)]
    checks += [(label, got == cand) for label, cand in hypotheses]
    checks += [("off by one, not at a tie", one)]
    out, left = {}, bad.clone()
    for label, hit in checks:
        count = int((left & hit).sum())
        if count:
            out[label] = count
            left &= ~hit
    if int(left.sum()):
        out["off by more than one"] = int(left.sum())
    return out


def _bounds(rq: Requant) -> str:
    lo, hi = torch.as_tensor(rq.lo), torch.as_tensor(rq.hi)
    return f"{int(lo)}, {int(hi)}" if lo.numel() == 1 and hi.numel() == 1 else "lo, hi"


def _shift(n: Node, acc: torch.Tensor) -> torch.Tensor:
    """The node's right shift(s) shaped to broadcast over one image's accumulator (per output channel)."""
    shift = n.tensors["shift"].to(torch.int64)
    return row_view(shift, acc.dim()) if shift.numel() > 1 else shift.reshape(())


def causes(graph: Graph, n: Node, xs: list[torch.Tensor], got: torch.Tensor, want: torch.Tensor) -> dict[str, int]:
    """Each mismatching value of node n's output (got against want, one image) counted under one cause (see
    the module docstring); xs: the node's golden inputs (batch of one)."""
    bad = got != want
    acc = accumulator(graph, n, xs)
    q = graph.q[n.output]
    pe = [(label, a[0]) for label, a in pe_accumulators(graph, n, xs)] if n.op in MAC_OPS else []
    if q.bits == 32:  # the logits: the accumulator itself
        for label, cand in pe:
            if bool((got == cand).all()):
                return {label: int(bad.sum())}
        return {"the int32 accumulator differs (MAC, bias or output chain: no rounding involved)": int(bad.sum())}
    if acc is None:
        return {f"a wrong value ({n.op.value} moves codes: no arithmetic involved)": int(bad.sum())}
    rq = Requant(acc[0], _shift(n, acc[0]), q.zero_point, q.lo, q.hi, graph.rounding)
    hypotheses = [(label, rq.codes(acc=a)) for label, a in pe] + rounding_candidates(rq)
    return value_causes(rq, got, want, hypotheses)


def candidates(graph: Graph, n: Node, acc: torch.Tensor) -> Labelled:
    """The codes a requantizing node would give from its exact accumulator (one image) under the wrong rounding."""
    q = graph.q[n.output]
    return rounding_candidates(Requant(acc, _shift(n, acc), q.zero_point, q.lo, q.hi, graph.rounding))
