"""The accelerator model's workload: one loop nest per node of the integer graph, read only from potq.ir.

Claim: every node of a quantized graph (or of a captured float graph, taken at 8 bits) becomes one
`Workload` with the seven loop bounds of a convolution (N, C, M, R, S, E, F, plus H, W, stride, padding,
groups) and the bit width of each operand as the graph stores it: activations uint8 (a value's
QType.bits; the logits are int32), weights int8, biases and partial sums int32. A Linear layer is a
1x1 convolution on a 1x1 map; a depthwise convolution has C = M = 1 per group and `groups` = channels.
Nodes without MACs (add, pooling, the input table, concat, flatten) keep their shape in the same fields
(C = M = 1, groups = channels, R x S = the pooling window) and run on the post-processing unit.
Evidence: tests/test_accel.py checks MACs against potq.energy's count on tiny, seed, resnet20 and
mobilenet-cifar, and the shapes against the graph's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from potq.ir.bounds import accumulator_bits
from potq.ir.codes import code_bytes, weight_bytes
from potq.ir.graph import MAC_OPS, Graph, Node, OpType, pair
from potq.ir.rules import ACCUMULATORS

MAC_OP_NAMES = tuple(op.value for op in MAC_OPS)  # Workload.op is the OpType's value


@dataclass(frozen=True)
class Workload:
    node: str  # the graph node's name
    op: str  # the node's OpType value
    N: int  # batch
    C: int  # input channels per group
    M: int  # output channels per group
    groups: int  # total output channels = M * groups
    H: int  # input height, before padding
    W: int
    R: int  # kernel height (Linear: 1)
    S: int
    E: int  # output height (PyTorch's rule, or SCALE-Sim's under scalesim_compat)
    F: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    bits_ifmap: int = 8
    bits_filter: int = 8
    bits_bias: int = 32
    bits_psum: int = 32
    bits_ofmap: int = 8
    inputs: int = 1  # operands read per output position: 2 for an add, the input count of a concat
    sources: int = 1  # values the output is assembled from: a concat's inputs (potq's RTL copies each in turn)

    @property
    def is_mac(self) -> bool:
        return self.op in MAC_OP_NAMES

    @property
    def macs(self) -> int:
        """N * groups * M * C * R * S * E * F for a conv/linear; 0 for the post-processing nodes."""
        return self.N * self.groups * self.M * self.C * self.R * self.S * self.E * self.F if self.is_mac else 0

    @property
    def outputs(self) -> int:
        """Output values: N * groups * M * E * F."""
        return self.N * self.groups * self.M * self.E * self.F

    @property
    def ifmap_values(self) -> int:
        """Input activation values (before padding): N * groups * C * H * W, times the inputs of an add."""
        return self.N * self.groups * self.C * self.H * self.W * self.inputs

    @property
    def filter_values(self) -> int:
        return self.groups * self.M * self.C * self.R * self.S if self.is_mac else 0

    @property
    def bias_values(self) -> int:
        return self.groups * self.M if self.is_mac else 0

    def bytes_of(self, operand: str) -> int:
        """Compulsory bytes of one operand at its real width: 'ifmap', 'filter', 'bias' or 'ofmap'."""
        values = {
            "ifmap": self.ifmap_values,
            "filter": self.filter_values,
            "bias": self.bias_values,
            "ofmap": self.outputs,
        }[operand]
        bits = {"ifmap": self.bits_ifmap, "filter": self.bits_filter, "bias": self.bits_bias, "ofmap": self.bits_ofmap}[
            operand
        ]
        if operand == "filter":  # low-bit weights: packed words, as the export writes them
            return weight_bytes(values, bits)
        return code_bytes(values, bits)


def spad_traffic(w: Workload) -> dict[str, int]:
    """Scratchpad (PE register) bytes of a MAC node, the same in every dataflow: per MAC the PE reads one
    ifmap and one filter value and reads and writes its partial sum, each at its width (biases and
    outputs never pass through a scratchpad). The one home of this rule: systolic.py, row_stationary.py
    and model.py read it."""
    return {
        "ifmap": -(-w.macs * w.bits_ifmap // 8),
        "filter": -(-w.macs * w.bits_filter // 8),
        "bias": 0,
        "psum": 2 * -(-w.macs * w.bits_psum // 8),
        "ofmap": 0,
    }


def scalesim_out_size(padded: int, kernel: int, stride: int) -> int:
    """SCALE-Sim 3.0.0's output size over a padded input (its topology has no padding field):
    ceil((padded - kernel + stride) / stride) = floor((padded - kernel) / stride) + 1 whenever
    (padded - kernel) is a multiple of stride, one more otherwise (a stride-2 layer over 34 rows: 17, not 16).
    Written from scalesim/topology_utils.py (ofmap_h = ceil((ifmap_h - filt_h + stride) / stride))."""
    return math.ceil((padded - kernel + stride) / stride)


def _bits(graph: Graph, value: str) -> int:
    q = graph.q.get(value)
    return q.bits if q is not None else 8  # a float graph is taken at 8 bits


def _spatial(shape: tuple[int, ...]) -> tuple[int, int]:
    return (int(shape[1]), int(shape[2])) if len(shape) == 3 else (1, 1)


def _maps(graph: Graph, n: Node) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """A post-processing node's channels (its output's), input (H, W) and output (E, F)."""
    return int(graph.shapes[n.output][0]), _spatial(graph.shapes[n.inputs[0]]), _spatial(graph.shapes[n.output])


def _window(n: Node) -> tuple[tuple[int, int], ...]:
    """A windowed node's (kernel, stride, padding), each as (height, width)."""
    return tuple(pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))


# One loop nest per op kind: (graph, node, batch, the operand widths) -> Workload.
Bits = dict[str, int]


def _conv(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    in_shape, out_shape = graph.shapes[n.inputs[0]], graph.shapes[n.output]
    w = n.tensors["weight"]
    groups = int(n.attrs.get("groups", 1))
    (r, s), (sh, sw), (ph, pw) = _window(n)
    c, m = int(w.shape[1]), int(w.shape[0]) // groups
    h, w_, e, f = int(in_shape[1]), int(in_shape[2]), int(out_shape[1]), int(out_shape[2])
    return Workload(n.name, n.op.value, batch, c, m, groups, h, w_, r, s, e, f, sh, sw, ph, pw, **bits)


def _linear(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    """A 1x1 convolution on a 1x1 map."""
    w = n.tensors["weight"]
    return Workload(n.name, n.op.value, batch, int(w.shape[1]), int(w.shape[0]), 1, 1, 1, 1, 1, 1, 1, **bits)


def _pool(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    """R x S = the pooling window, one group per channel."""
    channels, (h, w_), (e, f) = _maps(graph, n)
    (r, s), (sh, sw), (ph, pw) = _window(n)
    return Workload(n.name, n.op.value, batch, 1, 1, channels, h, w_, r, s, e, f, sh, sw, ph, pw, **bits)


def _pointwise(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    """The input table and an add: one output per position, read from each input (`inputs`)."""
    channels, (h, w_), (e, f) = _maps(graph, n)
    return Workload(n.name, n.op.value, batch, 1, 1, channels, h, w_, 1, 1, e, f, **bits, inputs=len(n.inputs))


def _flatten(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    """(C, H, W) -> (C*H*W): an address change, kept as channels x 1 x 1."""
    channels = math.prod(graph.shapes[n.output])
    return Workload(n.name, n.op.value, batch, 1, 1, channels, 1, 1, 1, 1, 1, 1, **bits)


def _concat(graph: Graph, n: Node, batch: int, bits: Bits) -> Workload:
    """The inputs' channels add up; each output value is read from one input (inputs = 1)."""
    channels, (h, w_), (e, f) = _maps(graph, n)
    return Workload(n.name, n.op.value, batch, 1, 1, channels, h, w_, 1, 1, e, f, **bits, sources=len(n.inputs))


WORKLOAD_KERNELS: dict[OpType, Callable[[Graph, Node, int, Bits], Workload]] = {
    OpType.INPUT: _pointwise,
    OpType.CONV: _conv,
    OpType.LINEAR: _linear,
    OpType.ADD: _pointwise,
    OpType.MAXPOOL: _pool,
    OpType.AVGPOOL: _pool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _flatten,
}


def node_workload(graph: Graph, n: Node, batch: int = 1, accumulator: str = ACCUMULATORS[0]) -> Workload:
    """The loop nest of one node, its bounds and operand widths from the graph alone; its partial sums as wide
    as `accumulator` says (potq.ir.bounds.accumulator_bits)."""
    bits = {"bits_ifmap": _bits(graph, n.inputs[0]), "bits_ofmap": _bits(graph, n.output)}
    if n.op in MAC_OPS:  # the node's weight format (potq.ir.codes): 8 in a float graph or a 0.4 graph
        bits["bits_filter"] = n.weight_bits
        bits["bits_psum"] = accumulator_bits(graph, n, accumulator)
    return WORKLOAD_KERNELS[n.op](graph, n, batch, bits)


def workloads(graph: Graph, batch: int = 1, accumulator: str = ACCUMULATORS[0]) -> list[Workload]:
    """One Workload per node of the graph, in its topological order."""
    return [node_workload(graph, n, batch, accumulator) for n in graph.nodes]


def scalesim_compat(w: Workload) -> Workload:
    """The same workload with SCALE-Sim's output size (E, F over the padded input); a Linear is unchanged."""
    if not w.is_mac:
        return w
    e = scalesim_out_size(w.H + 2 * w.pad_h, w.R, w.stride_h)
    f = scalesim_out_size(w.W + 2 * w.pad_w, w.S, w.stride_w)
    return replace(w, E=e, F=f)
