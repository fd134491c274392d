"""The integer graph as a power-of-two QDQ ONNX model (opset 13), for onnxruntime, TVM and ONNX parsers.

Standard QDQ form: every activation is a uint8 tensor with a scale 2^e and its zero point; each op runs
between DequantizeLinear of its inputs and QuantizeLinear of its output. Weights are uint8 initializers
holding w + 128 with zero point 128 (the default, WEIGHTS_UINT8) or int8 with zero point 0 (WEIGHTS_INT8,
`--onnx-weights int8`); per-channel along axis 0 where the scheme is; biases int32 at scale s_in * s_w. The
input is the uint8 image: normalization and input quantization are the graph's own lookup table (a
Gather), so the model needs no preprocessing. The output `logits` is float: the last layer's int32
accumulators times 2^e, exactly.

Why this is potq's integer model: with power-of-two scales every DequantizeLinear output, every sum
and every division by a scale is exact in float32 as long as the integers stay below 2^24; the fused
activation clamp becomes Relu or Clip at a multiple of the output scale (exact too), and
QuantizeLinear rounds half to even. So with `--rounding half-even` the model computes the golden
model's integers wherever accumulators stay below 2^24; `potq verify --onnx` measures it.

Why uint8 weights: onnxruntime fuses the QDQ groups into QLinearConv / QGemm, whose uint8 x int8 kernels
on x86-64 without VNNI (AVX2, AVX-512 without VNNI) multiply with VPMADDUBSW, which sums pairs of
u8 x s8 products into a saturating int16 (potq.deploy.saturation models it). With uint8 weights MLAS runs
its U8U8 kernel there instead (both operands zero-extended to 16 bits, pairs summed by VPMADDWD into int32:
no saturation), and on VNNI/AMX CPUs its uint8 x int8 GEMM (the weights xor 0x80 back to int8, exact
int32 dot products) rather than the symmetric ConvSym kernel int8 weights take, at 0.38-0.82x the speed
(benchmarks/RESULTS.md, section 13). The integers are the same; only the stored type and zero point differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from potq.deploy.formats import WEIGHT_FORMS, WEIGHTS_INT8, WEIGHTS_UINT8  # noqa: F401 (re-exported)
from potq.errors import UserError
from potq.ir.graph import Graph, Node, OpType, pair, weight_scale
from potq.ir.io import tensor_name
from potq.ir.rules import ACT_MAX, SIGNED_ZERO_POINT

OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear (13), Clip with min/max inputs (11)
EXTRA = "onnx"  # pip install 'potq[onnx]'
INPUT = "image"
OUTPUT = "logits"
UINT8_WEIGHT_ZERO_POINT = SIGNED_ZERO_POINT  # int8 weights stored as uint8: w + 128


def require_onnx():
    """The onnx package, or one line naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"the ONNX export needs the onnx package: pip install 'potq[{EXTRA}]'") from None
    return onnx


class Builder:
    """Collects nodes and initializers; one DequantizeLinear per quantized value, made on first use."""

    def __init__(self, graph: Graph, weights: str = WEIGHTS_UINT8):
        if weights not in WEIGHT_FORMS:
            raise UserError(f"ONNX weights {weights!r}: choose from {', '.join(WEIGHT_FORMS)}")
        self.onnx = require_onnx()
        self.graph, self.weights = graph, weights
        self.nodes: list = []
        self.inits: list = []
        self.dq: dict[str, str] = {}
        self.qp: dict[str, tuple[str, str]] = {}

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def qparams(self, v: str) -> tuple[str, str]:
        """(scale, zero point) initializers of a quantized value: 2^e as float32, the zero point as uint8."""
        if v not in self.qp:
            q = self.graph.q[v]
            scale = self.const(f"{v}.scale", np.array(2.0**q.exponent, dtype=np.float32))
            self.qp[v] = scale, self.const(f"{v}.zero_point", np.array(q.zero_point, dtype=np.uint8))
        return self.qp[v]

    def dequantized(self, v: str) -> str:
        if v not in self.dq:
            self.dq[v] = self.node("DequantizeLinear", [v, *self.qparams(v)], f"{v}.dq", f"{v}.dequantize")
        return self.dq[v]

    def quantize(self, n: Node, real: str) -> str:
        """Clamp as the node's codes do (lo, hi: exact multiples of the scale), then QuantizeLinear."""
        q = self.graph.q[n.output]
        s = 2.0**q.exponent
        lo, hi = (q.lo - q.zero_point) * s, (q.hi - q.zero_point) * s
        if q.lo > 0 and q.lo == q.zero_point and q.hi == ACT_MAX:
            real = self.node("Relu", [real], f"{n.output}.relu", f"{n.name}.relu")
        elif q.lo > 0 or q.hi < ACT_MAX:
            bounds = [
                self.const(f"{n.output}.clip_lo", np.array(lo, dtype=np.float32)) if q.lo > 0 else "",
                self.const(f"{n.output}.clip_hi", np.array(hi, dtype=np.float32)) if q.hi < ACT_MAX else "",
            ]
            real = self.node("Clip", [real, *bounds], f"{n.output}.clip", f"{n.name}.clip")
        scale, zp = self.qparams(n.output)
        return self.node("QuantizeLinear", [real, scale, zp], n.output, f"{n.name}.quantize")


# ---- one kernel per op type -------------------------------------------------------------------


def _input(b: Builder, n: Node) -> None:
    """codes = lut[c * 256 + pixel]: the golden model's input table, as a Gather."""
    lut = n.tensors["lut"].numpy().astype(np.uint8)
    c = lut.shape[0]
    offsets = b.const(f"{n.name}.offsets", (256 * np.arange(c, dtype=np.int64)).reshape(1, c, 1, 1))
    wide = b.node("Cast", [n.inputs[0]], f"{n.name}.pixels", f"{n.name}.cast", to=b.onnx.TensorProto.INT64)
    index = b.node("Add", [wide, offsets], f"{n.name}.index", f"{n.name}.index")
    b.node("Gather", [b.const(tensor_name(n, "lut"), lut.reshape(-1)), index], n.output, f"{n.name}.lut", axis=0)


def _mac(b: Builder, n: Node) -> None:
    q_in = b.graph.q[n.inputs[0]]
    w = n.tensors["weight"].numpy().astype(np.int8)
    ws = weight_scale(n).numpy()
    per_channel = ws.size > 1
    axis = {"axis": 0} if per_channel else {}
    shape = ws.shape if per_channel else ()

    def dq_tensor(key: str, values: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> str:
        t = tensor_name(n, key)
        return b.node(
            "DequantizeLinear",
            [b.const(t, values), b.const(f"{t}.scale", scale), b.const(f"{t}.zero_point", zero)],
            f"{t}.dq",
            f"{t}.dequantize",
            **axis,
        )

    w_scale = ws.astype(np.float32).reshape(shape)
    if b.weights == WEIGHTS_UINT8:  # the same integers, stored shifted: w = (w + 128) - 128
        stored = (w.astype(np.int16) + UINT8_WEIGHT_ZERO_POINT).astype(np.uint8)
        weight = dq_tensor("weight", stored, w_scale, np.full(shape, UINT8_WEIGHT_ZERO_POINT, np.uint8))
    else:
        weight = dq_tensor("weight", w, w_scale, np.zeros(shape, np.int8))
    bias_scale = (ws * 2.0**q_in.exponent).astype(np.float32).reshape(shape)
    bias = dq_tensor("bias", n.tensors["bias"].numpy().astype(np.int32), bias_scale, np.zeros(shape, np.int32))
    x = b.dequantized(n.inputs[0])
    real = f"{n.output}.real" if n.requant else (OUTPUT if n.output == b.graph.output else n.output)
    if n.op is OpType.CONV:
        (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
        b.node(
            "Conv", [x, weight, bias], real, n.name,
            kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], group=n.attrs.get("groups", 1),
        )  # fmt: skip
    else:
        b.node("Gemm", [x, weight, bias], real, n.name, transB=1)
    if n.requant:
        b.quantize(n, real)


def _add(b: Builder, n: Node) -> None:
    a, c = (b.dequantized(v) for v in n.inputs)
    b.quantize(n, b.node("Add", [a, c], f"{n.output}.real", n.name))


def _pool(b: Builder, n: Node) -> None:
    (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw])
    if n.op is OpType.AVGPOOL:  # the window sum over 2^n values (padding counts as 0), divided exactly
        attrs["count_include_pad"] = 1
    op = "MaxPool" if n.op is OpType.MAXPOOL else "AveragePool"
    b.quantize(n, b.node(op, [b.dequantized(n.inputs[0])], f"{n.output}.real", n.name, **attrs))


def _concat(b: Builder, n: Node) -> None:
    xs = [b.dequantized(v) for v in n.inputs]
    b.quantize(n, b.node("Concat", xs, f"{n.output}.real", n.name, axis=1))


def _flatten(b: Builder, n: Node) -> None:
    b.quantize(n, b.node("Flatten", [b.dequantized(n.inputs[0])], f"{n.output}.real", n.name, axis=1))


ONNX_KERNELS: dict[OpType, Callable[[Builder, Node], None]] = {
    OpType.INPUT: _input,
    OpType.CONV: _mac,
    OpType.LINEAR: _mac,
    OpType.ADD: _add,
    OpType.MAXPOOL: _pool,
    OpType.AVGPOOL: _pool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _flatten,
}


def to_onnx(graph: Graph, intermediates: bool = False, weights: str = WEIGHTS_UINT8):
    """The QDQ ModelProto of a power-of-two integer graph, checked by onnx.checker (full check) and
    shape inference. `intermediates`: every quantized value is a graph output too (for verification);
    `weights`: the stored weight type (WEIGHT_FORMS)."""
    b = Builder(graph, weights)
    onnx, helper, TP = b.onnx, b.onnx.helper, b.onnx.TensorProto
    for n in graph.nodes:
        ONNX_KERNELS[n.op](b, n)
    c, h, w = graph.shapes[graph.input]
    inputs = [helper.make_tensor_value_info(graph.input, TP.UINT8, ["N", c, h, w])]
    out_shape = ["N", *graph.shapes[graph.output]]
    if not graph.q[graph.output].accumulator:  # a clamped last layer: its real values are the outputs
        b.nodes.append(helper.make_node("DequantizeLinear", [graph.output, *b.qparams(graph.output)], [OUTPUT]))
    outputs = [helper.make_tensor_value_info(OUTPUT, TP.FLOAT, out_shape)]
    if intermediates:
        outputs += [
            helper.make_tensor_value_info(n.output, TP.UINT8, ["N", *graph.shapes[n.output]])
            for n in graph.nodes
            if not graph.q[n.output].accumulator
        ]
    g = helper.make_graph(b.nodes, "potq", inputs, outputs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="potq")
    model.ir_version = 8  # onnxruntime reads IR 8 at opset 13 everywhere
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
