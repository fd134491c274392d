"""The integer-only golden model: the quantized net as integers, shifts and clamps alone.

The data path: uint8 image -> input lookup table (normalization and quantization folded into 256
entries per channel) -> per layer: subtract the input zero point, multiply-accumulate with int8
weights, add the int32 bias, shift right with rounding, add the output zero point, clamp (ReLU
is the lower clamp) -> ... -> int32 logits -> argmax.

Multiply-accumulates run through float GEMM, which is exact for integers as long as every partial
sum stays below 2**24 (float32) or 2**53 (float64). Each layer's worst case, from its integer
weights and its input range, picks the narrowest exact type and proves the int32 accumulator holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from potq.data import normalize
from potq.errors import UserError
from potq.quant.arith import INT32_MAX, exponent, shift_round
from potq.quant.qnet import A_MAX, A_MIN, import_state

FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53


@dataclass
class IntOp:
    type: str  # conv | linear | maxpool | flatten
    name: str = ""
    weight: torch.Tensor | None = None  # int8
    bias: torch.Tensor | None = None  # int32
    shift: torch.Tensor | None = None  # int64, one per output channel
    in_zp: int = 0
    out_zp: int = 0
    lo: int = A_MIN
    hi: int = A_MAX
    in_lo: int = A_MIN
    in_hi: int = A_MAX
    stride: int = 1
    padding: int = 0
    kernel: int = 2
    last: bool = False
    # filled by the bound analysis
    acc_bound: int = 0
    gemm_dtype: torch.dtype = torch.float64
    slices: list[tuple[int, int]] = field(default_factory=list)  # input-channel ranges, one GEMM each

    @property
    def headroom_bits(self) -> float:
        return 31 - math.log2(self.acc_bound) if self.acc_bound > 0 else 31.0


def analyse_bounds(op: IntOp) -> None:
    """Worst-case |accumulator| of a MAC layer; refuse what int32 can't hold."""
    x_max = max(abs(op.in_lo - op.in_zp), abs(op.in_hi - op.in_zp))
    l1 = op.weight.to(torch.int64).abs().flatten(1).sum(1)  # per output channel
    mac = int(x_max * l1.max())
    op.acc_bound = mac + int(op.bias.to(torch.int64).abs().max())
    if op.shift is not None and not op.last:  # the rounding shifter adds up to 2**(shift-1)
        op.acc_bound += int(1 << int(op.shift.max()) >> 1)
    if op.acc_bound > INT32_MAX:
        raise UserError(
            f"layer {op.name}: worst-case accumulator {op.acc_bound} overflows int32 "
            f"({math.log2(op.acc_bound):.1f} bits); use coarser weight scales or fewer inputs per output"
        )
    # Partial sums of a GEMM are sums of subsets of its products, so |partial| <= x_max * L1 of the
    # weights it sees. Split the input channels into as few equal slices as keep that below 2**24,
    # so that every slice runs exactly in float32; the slices' results are summed in int32.
    per_input = op.weight.to(torch.int64).abs().flatten(2).sum(2) if op.type == "conv" else op.weight.abs()
    per_input = per_input.to(torch.int64)  # (out, in): |w| summed over the kernel
    n_in = per_input.shape[1]
    for n in range(1, n_in + 1):
        edges = [round(i * n_in / n) for i in range(n + 1)]
        slices = list(zip(edges[:-1], edges[1:], strict=True))
        if all(x_max * int(per_input[:, a:b].sum(1).max()) < FLOAT32_EXACT for a, b in slices):
            op.slices, op.gemm_dtype = slices, torch.float32
            return
    op.slices, op.gemm_dtype = [(0, n_in)], torch.float64  # mac < 2**31 < 2**53: exact in float64


class IntegerModel:
    def __init__(self, lut: torch.Tensor, ops: list[IntOp], rounding: str):
        self.lut, self.ops, self.rounding = lut, ops, rounding

    @classmethod
    def from_state(cls, state: dict, mean: list[float], std: list[float]) -> IntegerModel:
        """Lower a saved quantized model (potq.quant.qnet.export_state) to an integer program."""
        exps = [exponent(state["in_scale"])]
        for d in state["ops"]:
            if d["type"] in ("conv", "linear"):
                exps += [exponent(d["in_scale"]), exponent(d["out_scale"])] + [exponent(float(s)) for s in d["w_scale"]]
        if None in exps:
            raise UserError(
                f"scheme {state['settings']['scheme']} has scales that are not powers of two: "
                "the integer model requantizes with shifts alone"
            )
        # the input lookup table: normalization and quantization of each pixel value, per channel
        net = import_state(state)
        channels = len(mean)
        pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, channels, 256, 1)
        x = net.quantize_input(normalize(pixels, mean, std).double())
        lut = (torch.round(x / net.in_scale) + net.in_zp).to(torch.int64).view(channels, 256)
        ops: list[IntOp] = []
        lo, hi = A_MIN, A_MAX
        for d in state["ops"]:
            if d["type"] in ("maxpool", "flatten"):
                ops.append(IntOp(d["type"], kernel=d.get("kernel", 2)))
                continue
            w_exp = torch.tensor([exponent(float(s)) for s in d["w_scale"]], dtype=torch.int64)
            shift = exponent(d["out_scale"]) - exponent(d["in_scale"]) - w_exp
            op = IntOp(
                d["type"],
                d["name"],
                d["weight"],
                d["bias"],
                shift,
                d["in_zp"],
                d["out_zp"],
                d["out_lo"],
                d["out_hi"],
                lo,
                hi,
                d["stride"],
                d["padding"],
                last=d["last"],
            )
            analyse_bounds(op)
            ops.append(op)
            lo, hi = op.lo, op.hi
        return cls(lut, ops, state["settings"]["rounding"])

    def quantize_input(self, images: torch.Tensor) -> torch.Tensor:
        """One table lookup per pixel: lut[channel, value]."""
        c = self.lut.shape[0]
        flat = images.to(torch.int64) + 256 * torch.arange(c).view(1, -1, 1, 1)
        return self.lut.reshape(-1)[flat].to(torch.int32)

    def _mac(self, op: IntOp, x: torch.Tensor) -> torch.Tensor:
        """Exact integer multiply-accumulate (see analyse_bounds), then the int32 bias."""
        xf, wf = (x - op.in_zp).to(op.gemm_dtype), op.weight.to(op.gemm_dtype)
        acc = op.bias.view(1, -1, *([1] * (x.dim() - 2)))
        for a, b in op.slices:
            if op.type == "conv":
                part = nn.functional.conv2d(xf[:, a:b], wf[:, a:b], None, op.stride, op.padding)
            else:
                part = nn.functional.linear(xf[:, a:b], wf[:, a:b])
            acc = acc + part.to(torch.int32)  # exact, and int32 holds the sum: see analyse_bounds
        return acc

    def run(self, images: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> int32 logits; `record` gets every op's integer output."""
        x = self.quantize_input(images)
        if record is not None:
            record.append(x)
        for op in self.ops:
            if op.type == "maxpool":
                n, c, h, w = x.shape
                k = op.kernel
                x = x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k).amax(dim=(3, 5))
            elif op.type == "flatten":
                x = x.flatten(1)
            else:
                acc = self._mac(op, x)
                if op.last:
                    x = acc
                else:
                    shift = op.shift.to(torch.int32).view(1, -1, *([1] * (acc.dim() - 2)))
                    x = (shift_round(acc, shift, self.rounding) + op.out_zp).clamp_(op.lo, op.hi)
            if record is not None:
                record.append(x)
        return x

    def bounds_table(self) -> list[dict]:
        return [
            {
                "layer": op.name,
                "worst_case_accumulator": op.acc_bound,
                "bits": math.ceil(math.log2(op.acc_bound + 1)) + 1 if op.acc_bound else 1,
                "int32_headroom_bits": round(op.headroom_bits, 2),
                "gemm": str(op.gemm_dtype).replace("torch.", "")
                + (f" x {len(op.slices)} slices" if len(op.slices) > 1 else ""),
            }
            for op in self.ops
            if op.type in ("conv", "linear")
        ]


def verify_run(run, name: str, data: str | None = None, cache=None, batch: int = 500) -> dict:
    """Run the golden model and the simulated model on the whole test set; compare every layer's integers."""
    import time
    from pathlib import Path

    import numpy as np

    from potq.data import load_dataset
    from potq.files import save_json
    from potq.quant.pipeline import load_quantized

    run = Path(run)
    state, cfg = load_quantized(run, name)
    sim = import_state(state)
    golden = IntegerModel.from_state(state, cfg.mean, cfg.std)
    ds = load_dataset(data or cfg.data, cache)
    images, labels = torch.from_numpy(np.array(ds.test_x)), torch.from_numpy(np.array(ds.test_y))
    mismatches, values, golden_correct, sim_correct = 0, 0, 0, 0
    t_golden = t_sim = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x, y = images[i : i + batch], labels[i : i + batch]
            t0 = time.perf_counter()
            g_rec: list = []
            g_logits = golden.run(x, g_rec)
            t1 = time.perf_counter()
            s_rec: list = []
            s_logits = sim(normalize(x, cfg.mean, cfg.std), s_rec)
            t_sim += time.perf_counter() - t1
            t_golden += t1 - t0
            for g, s in zip(g_rec, s_rec, strict=True):
                mismatches += int((g != s).sum())
                values += g.numel()
            golden_correct += int((g_logits.argmax(1) == y).sum())
            sim_correct += int((s_logits.argmax(1) == y).sum())
    result = {
        "label": name,
        "images": len(images),
        "compared_values": values,
        "mismatches": mismatches,
        "golden_accuracy": golden_correct / len(images),
        "simulated_accuracy": sim_correct / len(images),
        "golden_seconds": t_golden,
        "simulated_seconds": t_sim,
        "rounding": golden.rounding,
        "accumulators": golden.bounds_table(),
    }
    save_json(result, run / f"verify_{name}.json")
    return result
