"""Which dot products of an exported QDQ model onnxruntime gets wrong on an x86-64 CPU without VNNI.

onnxruntime (graph optimizations on, its default) fuses potq's QDQ groups into QLinearConv and QGemm, which
run on MLAS's integer kernels. What they compute depends on the CPU and on the stored weight type; read
from onnxruntime's source (onnxruntime/core/mlas/lib: platform.cpp, qgemm_kernel_avx2.cpp, convsym.cpp,
x86_64/QgemmU8U8KernelAvx2.S, x86_64/ConvSymKernelAvx2.S, intrinsics/avx2/qdwconv_avx2.cpp;
providers/cpu/quantization/qlinearconv.cc):

- int8 weights (zero point 0) on AVX2, or AVX-512 without VNNI: the u8 x s8 kernels (MlasConvSymKernelAvx2
  where the input channels are a multiple of 4, else im2col + MlasGemmU8S8KernelAvx2, and QGemm) multiply
  with VPMADDUBSW: the raw uint8 activation codes (zero point included; padding is the zero point) times
  the int8 weights, ADJACENT PAIRS along the reduction summed into an int16 that SATURATES, then widened
  to int32 by VPMADDWD with ones. The reduction runs over (kernel row, kernel column, input channel) with
  the input channel fastest (NHWC im2col; ConvSym packs 4 input channels per kernel position), so the
  pairs are elements 2j, 2j+1 of that order, per group; an odd length ends with a zero pad.
- uint8 weights (w + 128, zero point 128) there: MlasGemmU8U8KernelAvx2 zero-extends both operands to 16
  bits (VPMOVZXBW) and sums pairs with VPMADDWD into int32: |pair| <= 2 * 255 * 255, never saturates.
- depthwise convolutions: exact with either type (MlasConvDepthwiseKernelAvx2 and
  MlasConvSymDepthwiseKernelAvx2 widen every product to 32 bits).
- VNNI (VPDPBUSD) and AMX sum 8-bit products in int32: exact; ARM's dot-product kernels as well.

What was verified, and what is assumed: the kernels, the pair order and the widths above are read from
the source; benchmarks/onnx_avx2.py runs onnxruntime 1.32 under `qemu-x86_64 -cpu Haswell` (AVX2 without
AVX-512 or VNNI) and compares the values it gets wrong with this model's prediction node by node (every
differing value of the first differing node was predicted, on the im2col + QGEMM and the ConvSym paths).
Assumed, not verified: the single-row GEMV kernel (MlasGemvU8S8KernelAvx2, batch 1 Gemm) pairs the
reduction the same way, and AVX-512 without VNNI (MlasGemmU8S8KernelAvx512Core, MlasGemmU8U8KernelAvx512Core)
behaves as AVX2 (qemu's TCG has no AVX-512 to emulate it).
A saturating dot product is wrong in its int32 accumulator; its requantized uint8 value usually differs
as well, so the count is the model's prediction of the values that differ (an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from potq.ir.rules import ACT_MAX, INT32_MAX
from potq.machine import cpu_facts


@dataclass(frozen=True)
class PairKernel:
    """An MLAS kernel that sums adjacent pairs of 8-bit products in a `lo`..`hi` register."""

    name: str
    lo: int
    hi: int


U8S8 = PairKernel("u8 x s8, VPMADDUBSW: pairs of products summed into a saturating int16", -(2**15), 2**15 - 1)
U8U8 = PairKernel("u8 x u8, VPMOVZXBW + VPMADDWD: pairs of products summed into int32", -INT32_MAX - 1, INT32_MAX)


def avx2_kernel(weight_dtype: np.dtype) -> PairKernel:
    """The kernel an x86-64 CPU without VNNI runs for a QLinearConv/QGemm with weights of this type."""
    return U8S8 if np.dtype(weight_dtype) == np.int8 else U8U8


@dataclass
class MacOperands:
    """A Conv or Gemm of the exported model as the integer kernel sees it."""

    node: str
    input: str  # the quantized (uint8) value it reads
    input_zero_point: int
    weight: np.ndarray  # as stored: int8 or uint8, (O, C/g, kh, kw) or (O, K)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int]
    groups: int

    @property
    def depthwise(self) -> bool:
        """One input and one output channel per group: MLAS's depthwise kernels (a channel multiplier
        above 1 runs as a grouped GEMM)."""
        return self.weight.ndim == 4 and self.groups > 1 and self.weight.shape[:2] == (self.groups, 1)


def mac_operands(model) -> list[MacOperands]:
    """Every Conv and Gemm of a potq QDQ model whose weight is a DequantizeLinear of an initializer."""
    from onnx import helper, numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm") or n.input[1] not in dq or n.input[0] not in dq:
            continue
        w_dq, x_dq = dq[n.input[1]], dq[n.input[0]]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        kh, kw = attrs.get("kernel_shape", (1, 1))
        out.append(
            MacOperands(
                node=n.name,
                input=x_dq.input[0],
                input_zero_point=int(inits[x_dq.input[2]]),
                weight=inits[w_dq.input[0]],
                kernel=(kh, kw),
                stride=tuple(attrs.get("strides", (1, 1))),
                pads=tuple(attrs.get("pads", (0, 0, 0, 0))[:2]),
                groups=int(attrs.get("group", 1)),
            )
        )
    return out


def _pairs(m: MacOperands) -> list[torch.Tensor]:
    """Per group: the stored weights in the kernel's reduction order, (O/g, K/2, 2), zero-padded to even K."""
    w = torch.from_numpy(m.weight.astype(np.int64))
    groups = []
    for g in w.chunk(m.groups, 0) if w.dim() == 4 else [w]:
        k = g.permute(0, 2, 3, 1).reshape(g.shape[0], -1) if g.dim() == 4 else g  # (kh, kw, c): c fastest
        groups.append(F.pad(k, (0, k.shape[1] % 2)).reshape(k.shape[0], -1, 2))
    return groups


def risky_pairs(m: MacOperands, kernel: PairKernel | None = None) -> torch.Tensor:
    """Per group, a mask (O/g, K/2) of the weight pairs whose sum leaves the kernel's register for SOME
    input codes in 0..255: the static part of the model (none at all for uint8 weights)."""
    kernel = kernel or avx2_kernel(m.weight.dtype)
    masks = []
    for p in _pairs(m):
        hi, lo = ACT_MAX * p.clamp(min=0).sum(-1), ACT_MAX * p.clamp(max=0).sum(-1)
        masks.append((hi > kernel.hi) | (lo < kernel.lo))
    return torch.stack(masks) if masks else torch.zeros(0)


def _columns(m: MacOperands, codes: torch.Tensor) -> torch.Tensor:
    """The uint8 codes in the kernel's reduction order: (N, groups, K, L) for Conv (padding is the zero
    point), (N, 1, K, 1) for Gemm."""
    x = codes.to(torch.float32)
    if m.weight.ndim == 2:
        return x.reshape(x.shape[0], 1, -1, 1)
    (kh, kw), (ph, pw) = m.kernel, m.pads
    x = F.pad(x, (pw, pw, ph, ph), value=float(m.input_zero_point))
    cols = F.unfold(x, (kh, kw), stride=m.stride)  # (N, C*kh*kw, L), c slowest
    n, c = x.shape[0], x.shape[1]
    cols = cols.reshape(n, m.groups, c // m.groups, kh * kw, -1).transpose(2, 3)  # input channel fastest
    return cols.reshape(n, m.groups, (c // m.groups) * kh * kw, -1)


def saturating_dot_products(m: MacOperands, codes: torch.Tensor, kernel: PairKernel | None = None) -> int:
    """How many dot products (image, output channel, position) have a pair sum outside the kernel's
    register, for these input codes (N, C, H, W) or (N, K)."""
    mask = saturating_mask(m, codes, kernel)
    return 0 if mask is None else int(mask.sum())


def _may_saturate(m: MacOperands, codes: torch.Tensor, kernel: PairKernel) -> bool:
    """A cheap bound before the im2col: |a0 w0 + a1 w1| <= (a0 + a1) max|w|. With an even number of input
    channels per group a pair is two neighbouring channels of one pixel (or the padding's zero points)."""
    w_max = int(np.abs(m.weight.astype(np.int64)).max())
    limit = min(kernel.hi, -kernel.lo - 1)
    x = codes.to(torch.int32)
    per_group = x.shape[1] // m.groups
    if per_group % 2 == 0:
        x = x.reshape(x.shape[0], x.shape[1] // 2, 2, -1)
        largest = max(int((x[:, :, 0] + x[:, :, 1]).max()), 2 * m.input_zero_point)
    else:
        largest = 2 * max(int(x.max()), m.input_zero_point)
    return largest * w_max > limit


def saturating_mask(m: MacOperands, codes: torch.Tensor, kernel: PairKernel | None = None) -> torch.Tensor | None:
    """Where (N, O, L: output positions flattened) a dot product has a pair sum outside the kernel's
    register; None where none can."""
    kernel = kernel or avx2_kernel(m.weight.dtype)
    if m.depthwise:  # widened to 32 bits on every x86-64 path
        return None
    risky = risky_pairs(m, kernel)
    if not bool(risky.any()) or not _may_saturate(m, codes, kernel):
        return None
    cols = _columns(m, codes)
    n, _, k, length = cols.shape
    cols = F.pad(cols, (0, 0, 0, k % 2)).reshape(n, cols.shape[1], -1, 2, length)
    og = risky.shape[1]
    bad = torch.zeros(n, risky.shape[0] * og, length, dtype=torch.bool)
    limit = min(kernel.hi, -kernel.lo - 1)  # |pair sum| above it: outside the register
    for g, p in enumerate(_pairs(m)):
        a = cols[:, g]  # (N, K/2, 2, L)
        # |a0 w0 + a1 w1| <= (a0 + a1) max|w|: only these pair positions can saturate (few, in trained nets)
        cand = (a[:, :, 0] + a[:, :, 1]) * int(p.abs().max()) > limit
        cand &= risky[g].any(0)[None, :, None]
        e_n, e_j, e_l = cand.nonzero(as_tuple=True)
        step = max(1, 2**22 // og)  # bounded memory: about 4 million pair sums at a time
        for s in range(0, len(e_n), step):
            en, ej, el = e_n[s : s + step], e_j[s : s + step], e_l[s : s + step]
            w = p[:, ej].to(torch.float32)  # (O/g, E, 2); exact: |sums| < 2^17
            sums = a[en, ej, 0, el][None] * w[..., 0] + a[en, ej, 1, el][None] * w[..., 1]
            o, e = (((sums > kernel.hi) | (sums < kernel.lo)) & risky[g][:, ej]).nonzero(as_tuple=True)
            bad[en[e], g * og + o, el[e]] = True
    return bad


def predict(model, record: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per Conv/Gemm node of an exported model: the kernel an AVX2-only CPU runs, its weight pairs that can
    saturate, and the dot products that do on the recorded input codes (`record`: value -> codes, as the
    golden model records them)."""
    out = {}
    for m in mac_operands(model):
        kernel = avx2_kernel(m.weight.dtype)
        out[m.node] = {
            "kernel": "depthwise, 32-bit products" if m.depthwise else kernel.name,
            "risky_weight_pairs": 0 if m.depthwise else int(risky_pairs(m, kernel).sum()),
            "saturating_dot_products": saturating_dot_products(m, record[m.input], kernel),
        }
    return out


def this_cpu() -> dict:
    """The CPU's model name and flags (potq.machine) and whether onnxruntime's u8 x s8 kernels saturate on it."""
    facts = cpu_facts()
    exact = {"avx512_vnni", "avx_vnni", "amx_int8"}  # int32 dot products: VPDPBUSD, AMX
    return {**facts, "u8s8_saturates": "avx2" in facts["flags"] and not exact & set(facts["flags"])}
