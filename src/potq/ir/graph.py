"""potq's one representation of a network: a typed DAG of operations that every stage interprets.

Capture (potq.ir.capture) makes a float graph from a model: BatchNorm folded, ReLU/ReLU6 fused as
each node's `act` clamp. Lowering (potq.quant.lower) gives every value a QType and turns the float
tensors into integers once: int8 weights, int32 biases, per-channel right shifts, the alignment
shifts of additions, pooling shifts, the input lookup table. The simulator, the golden model, the
energy model and the exporter are interpreters of this graph, keyed by value name; each holds one
kernel per OpType (tests/test_graph.py checks that none is missing).

`Graph.check()` is the written statement of what a valid graph is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from potq.errors import UserError
from potq.ir.codes import WeightCode, weight_values
from potq.ir.rules import CODE_BITS, Rounding, act_range


class OpType(Enum):
    INPUT = "input"  # uint8 image -> quantized input: normalization and quantization in one table
    CONV = "conv"  # any kernel, stride, zero padding, groups (depthwise included)
    LINEAR = "linear"
    ADD = "add"  # residual addition: both inputs aligned to the finer scale by left shifts
    MAXPOOL = "maxpool"  # on codes: input and output share a QType
    AVGPOOL = "avgpool"  # a sum, then the division by the power-of-two window folded into the shift
    CONCAT = "concat"  # channels; the inputs share one QType
    FLATTEN = "flatten"  # (N, C, H, W) -> (N, C*H*W)


@dataclass
class QType:
    """How a value is stored: code = clamp(round(x / scale) + zero_point, lo, hi)."""

    zero_point: int
    lo: int
    hi: int
    scale: float  # 2.0**exponent in power-of-two schemes
    exponent: int | None = None  # None: a float scale (the float-* baselines)
    bits: int = CODE_BITS  # 2-8: an activation code (unsigned, in a uint8); 32: an int32 accumulator (the logits)

    @property
    def accumulator(self) -> bool:
        """An int32 accumulator (the logits), not a code."""
        return self.bits == 32


@dataclass
class Node:
    name: str  # where it is in the model: a module path such as layer3.1.conv2, or the traced op
    op: OpType
    inputs: list[str]  # value names
    output: str  # value name
    attrs: dict = field(default_factory=dict)  # kernel, stride, padding, groups, act, mean, std
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # weight, bias, shift, align, lut, w_exp, w_scale

    @property
    def act(self) -> tuple[float, float] | None:
        """The fused activation as a float clamp (ReLU: (0, inf), ReLU6: (0, 6)), or None."""
        a = self.attrs.get("act")
        return (float(a[0]), float(a[1])) if a is not None else None

    @property
    def weight_bits(self) -> int:
        """A MAC node's weight width (attrs w_bits; 8 in graphs made before potq 0.5)."""
        return int(self.attrs.get("w_bits", CODE_BITS))

    @property
    def weight_code(self) -> WeightCode:
        """A MAC node's weight format (attrs w_code: int, pot or apot; potq.ir.codes defines each)."""
        return WeightCode.of(self.attrs.get("w_code", WeightCode.INT.value))

    @property
    def low_bit(self) -> bool:
        """A MAC node whose weights are not 8-bit int (packed words in the export, bias correction in PTQ)."""
        return (self.weight_bits, self.weight_code) != (CODE_BITS, WeightCode.INT)

    @property
    def requant(self) -> bool:
        """False for a MAC node whose int32 accumulator is the graph's output (the logits)."""
        return self.attrs.get("requant", True)


@dataclass
class Graph:
    nodes: list[Node]  # in topological order
    shapes: dict[str, tuple[int, ...]]  # value name -> shape without the batch dimension
    input: str  # the image value: uint8 (C, H, W)
    output: str
    q: dict[str, QType] = field(default_factory=dict)  # empty in a float graph
    rounding: Rounding | None = None  # the rounding rule of every shift (None in a float graph)
    scheme: str | None = None

    @property
    def quantized(self) -> bool:
        return bool(self.q)

    def producer(self, value: str) -> Node:
        return next(n for n in self.nodes if n.output == value)

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]

    def emits_accumulators(self, n: Node) -> bool:
        """A MAC node that makes the graph's output without a clamp emits its int32 accumulators
        (the logits): no requantization."""
        return n.op in MAC_OPS and n.output == self.output and n.act is None

    def mac_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op in MAC_OPS]

    def check(self) -> None:
        """Raise ValueError naming the node unless the graph is valid:
        - topological: every input is the image or an earlier node's output; every value made once;
        - arity and shapes: each node's output shape is what its op makes of its inputs' shapes;
        - a quantized graph: every value has a QType whose [lo, hi] lies in its b-bit codes; MAC weights are int8
          tensors holding values of the node's weight format (potq.ir.codes: w_bits, w_code), biases int32;
          power-of-two requantizing nodes carry their shifts; MAXPOOL/FLATTEN keep their input's QType
          and CONCAT's inputs share the output's; only the output of the last MAC node is int32."""
        made = {self.input}
        for n in self.nodes:
            where = f"node {n.name} ({n.op.value})"
            for v in n.inputs:
                if v not in made:
                    raise ValueError(f"{where}: input {v} is not made before it")
            if n.output in made:
                raise ValueError(f"{where}: value {n.output} is made twice")
            made.add(n.output)
            arity = OP_SPEC[n.op].arity
            if len(n.inputs) != arity if arity is not None else len(n.inputs) < 2:
                raise ValueError(f"{where}: {len(n.inputs)} inputs")
            expect = out_shape(n, [self.shapes[v] for v in n.inputs])
            if tuple(self.shapes[n.output]) != expect:
                raise ValueError(f"{where}: output shape {self.shapes[n.output]}, its op makes {expect}")
        if self.output not in made:
            raise ValueError(f"the output {self.output} is never made")
        if self.quantized:
            self._check_quantized()

    def _check_quantized(self) -> None:
        for n in self.nodes:
            where = f"node {n.name} ({n.op.value})"
            q_out = self.q[n.output]
            if n.op in MAC_OPS:
                self._check_weights(n, where)
            if q_out.bits != 32 and not act_range(q_out.bits)[0] <= q_out.lo <= q_out.hi <= act_range(q_out.bits)[1]:
                raise ValueError(f"{where}: codes [{q_out.lo}, {q_out.hi}] outside {q_out.bits}-bit codes")
            if (q_out.bits == 32) != (n.op in MAC_OPS and not n.requant):
                raise ValueError(f"{where}: only a MAC node's unrequantized output is int32")
            if n.op in REQUANT_OPS and n.requant and q_out.exponent is not None and n.op is not OpType.INPUT:
                if "shift" not in n.tensors:
                    raise ValueError(f"{where}: no shift")
            if n.op in SHARED_QTYPE_OPS:
                for v in n.inputs:
                    q_in = self.q[v]
                    if (q_in.zero_point, q_in.scale) != (q_out.zero_point, q_out.scale):
                        raise ValueError(f"{where}: input {v} and output must share one scale and zero point")


    @staticmethod
    def _check_weights(n: Node, where: str) -> None:
        w, b = n.tensors["weight"], n.tensors["bias"]
        if w.dtype != torch.int8 or b.dtype != torch.int32:
            raise ValueError(f"{where}: weights must be int8 tensors and biases int32")
        allowed = torch.tensor(weight_values(n.weight_code, n.weight_bits), dtype=torch.int8)
        if not torch.isin(w, allowed).all():
            raise ValueError(f"{where}: weights outside the {n.weight_bits}-bit {n.weight_code.value} values")


# ---- the op table: every fact about an op type, in one row ----------------------------------------


def pair(v) -> tuple[int, int]:
    """A kernel, stride or padding attribute as (height, width): an int means both."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


Shape = tuple[int, ...]


def _same_shape(n: Node, ins: list[Shape]) -> Shape:
    return tuple(ins[0])


def _window_shape(n: Node, ins: list[Shape]) -> Shape:
    """Conv and pooling: (C, H, W) -> (C', (H + 2p - k) // s + 1, ...), symmetric zero padding, no dilation."""
    c, h, w = ins[0]
    (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
    if n.op is OpType.CONV:
        c = n.tensors["weight"].shape[0]
    return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def _linear_shape(n: Node, ins: list[Shape]) -> Shape:
    return (n.tensors["weight"].shape[0],)


def _add_shape(n: Node, ins: list[Shape]) -> Shape:
    if tuple(ins[0]) != tuple(ins[1]):
        raise ValueError(f"node {n.name} (add): input shapes {ins[0]} and {ins[1]} differ")
    return tuple(ins[0])


def _concat_shape(n: Node, ins: list[Shape]) -> Shape:
    if any(tuple(s[1:]) != tuple(ins[0][1:]) for s in ins):
        raise ValueError(f"node {n.name} (concat): inputs {ins} differ beyond the channels")
    return (sum(s[0] for s in ins), *ins[0][1:])


def _flatten_shape(n: Node, ins: list[Shape]) -> Shape:
    return (math.prod(ins[0]),)


@dataclass(frozen=True)
class OpSpec:
    """What an op type is, for every interpreter, one column per fact:
    - arity: how many inputs (None: two or more);
    - shape: the output shape it makes of its inputs' shapes;
    - macs: it multiplies int8 weights (a MAC node: a PE array's work);
    - requantizes: its output is a fresh quantization (a rounding shift);
    - shares_qtype: its inputs and output share one QType (codes move unchanged);
    - windowed: it slides a window over (C, H, W), so it has kernel, stride and padding attributes;
    - pools: a pooling window per channel, without weights (the windowed ops that are not MACs);
    - keeps_sign: its output is nonnegative whenever all its inputs are (it selects, averages, reshapes or
      stacks them), so a ReLU's sign carries through it; ADD is not marked: without its fused ReLU its
      output is taken as signed;
    - fuses_relu: a ReLU (or ReLU6) that alone follows it fuses into its output clamp (the node's `act`);
    - rule: its integer rule in one line (written into model.json for implementers)."""

    arity: int | None
    shape: Callable[[Node, list[Shape]], Shape]
    macs: bool
    requantizes: bool
    shares_qtype: bool
    windowed: bool
    pools: bool
    keeps_sign: bool
    fuses_relu: bool
    rule: str


# fmt: off
OP_SPEC: dict[OpType, OpSpec] = {
    #                      arity  shape            macs    requant shares  window  pools   sign    relu
    OpType.INPUT:   OpSpec(1,     _same_shape,     False,  True,   False,  False,  False,  False,  False,
        "y[c,h,w] = lut[c][image[c,h,w]] (normalization and input quantization in one table)"),
    OpType.CONV:    OpSpec(1,     _window_shape,   True,   True,   False,  True,   False,  False,  True,
        "acc[o] = bias[o] + sum over the group's input channels i and the kernel of (x[i] - zp_in) * weight[o,i]; "
        "padding adds zeros to x - zp_in (it pads with zp_in in code space); y = clamp(round_shift(acc, shift[o]) "
        "+ zp_out, lo, hi), or y = acc when requant is false (the int32 logits)"),
    OpType.LINEAR:  OpSpec(1,     _linear_shape,   True,   True,   False,  False,  False,  False,  True,
        "acc[o] = bias[o] + sum_i (x[i] - zp_in) * weight[o,i]; then as conv"),
    OpType.ADD:     OpSpec(2,     _add_shape,      False,  True,   False,  False,  False,  False,  True,
        "acc = ((a - zp_a) << align[0]) + ((b - zp_b) << align[1]); y = clamp(round_shift(acc, shift[0]) + zp_out, "
        "lo, hi)"),
    OpType.MAXPOOL: OpSpec(1,     _window_shape,   False,  False,  True,   True,   True,   True,   False,
        "y = max over the window of x (codes; padding never wins); y shares x's scale and zero point"),
    OpType.AVGPOOL: OpSpec(1,     _window_shape,   False,  True,   False,  True,   True,   True,   False,
        "acc = sum over the window of (x - zp_in) (padding adds zeros); y = clamp(round_shift(acc, shift[0]) + "
        "zp_out, lo, hi): the division by the window's 2^n values is part of the shift"),
    OpType.CONCAT:  OpSpec(None,  _concat_shape,   False,  False,  True,   False,  False,  True,   False,
        "y = the inputs' codes stacked along channels; all share one scale and zero point"),
    OpType.FLATTEN: OpSpec(1,     _flatten_shape,  False,  False,  True,   False,  False,  True,   False,
        "y = x reshaped (C, H, W) -> (C*H*W), in C, H, W order"),
}
# fmt: on

# The op groups, each one column of the table, in OpType order.
MAC_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.macs)
# nodes whose output is a fresh quantization (a rounding shift); the others move codes unchanged
REQUANT_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.requantizes)
SHARED_QTYPE_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.shares_qtype)
WINDOW_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.windowed)  # kernel, stride, padding attributes
POOL_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.pools)
SIGN_KEEPING_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.keeps_sign)
RELU_FUSING_OPS = tuple(op for op, spec in OP_SPEC.items() if spec.fuses_relu)


def out_shape(n: Node, ins: list[Shape]) -> Shape:
    """The output shape (without batch) that node n makes of its inputs' shapes."""
    return OP_SPEC[n.op].shape(n, ins)


def channel_view(t: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-channel tensor shaped to broadcast over activations (N, C, ...) of `dims` dimensions."""
    return t.view(1, -1, *([1] * (dims - 2)))


def row_view(t: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-output-channel tensor shaped to broadcast over weights (O, ...) of `dims` dimensions."""
    return t.view(-1, *([1] * (dims - 1)))


def window(n: Node) -> int:
    """Values summed by one output of an AVGPOOL node."""
    kh, kw = pair(n.attrs["kernel"])
    return kh * kw


def pool_shift_bits(n: Node) -> int:
    """log2 of an AVGPOOL window: its division is a shift only when the window is a power of two."""
    k = window(n)
    if k & (k - 1):
        raise UserError(
            f"{n.name}: average pooling over {k} values; potq divides by shifts only, so the window must "
            "hold a power-of-two count of values (2x2, 4x4, 8x8, 2x4, ...)"
        )
    return k.bit_length() - 1


def weight_scale(n: Node) -> torch.Tensor:
    """A lowered MAC node's weight scale per output channel: 2**w_exp, or the float scale."""
    return torch.exp2(n.tensors["w_exp"].double()) if "w_exp" in n.tensors else n.tensors["w_scale"].double()
