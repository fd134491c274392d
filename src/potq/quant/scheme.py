"""Quantization schemes and the rules that pick every scale and zero point, each defined once.

- Weights: int8 in [-127, 127] (never -128, so products are symmetric), zero point 0, a scale per
  tensor or per output channel; the node that makes the logits always has one weight scale, so the
  integer argmax compares like with like.
- Activations: uint8 codes. The zero-point policy (`zero_point`): 0 for a value that a ReLU clamps
  at 0, 128 for a signed one, 128 everywhere in `pot-seed` (the reference report's rule).
- Power-of-two exponents: `--exponent ceil` (never clips; the default), `round` or `mse`.
"""

from __future__ import annotations

import math

import torch

from potq.errors import UserError
from potq.ir.arith import round_values
from potq.ir.bounds import nonnegative
from potq.ir.codes import WeightCode, weight_max
from potq.ir.graph import Graph, QType
from potq.ir.rules import (  # noqa: F401 (W_MIN, SIGNED_ZERO_POINT: named here for the quantizer)
    ACT_MAX,
    ACT_MIN,
    CODE_BITS,
    SIGNED_ZERO_POINT,
    W_MAX,
    W_MIN,
    act_range,
    act_zero_point,
)
from potq.quant.arith import (
    choose_exponent,
    finite_max,
    mse_weight_exponents,
    pot_exponent,
    pot_exponents,
    seed_exponent,
)
from potq.quant.rules import EXPONENT_ROUND_MODES, POT_SCHEMES, SCHEMES, QuantSettings, Scheme  # noqa: F401

A_MIN, A_MAX = ACT_MIN, ACT_MAX


def zero_point(settings: QuantSettings, signed: bool, bits: int = CODE_BITS) -> int:
    """The zero-point policy, for every activation: the middle code (128 at 8 bits) where values can be negative
    (and everywhere in pot-seed), else 0 (ReLU's output: double the resolution, no zero-point subtraction)."""
    return act_zero_point(bits, settings.spec.seed or signed)


def policy_zero_points(graph: Graph, act_zero_point: int | None = None) -> dict[str, int] | None:
    """Zero points to cost a graph with (potq.energy): None, the graph's own, where it is quantized and none
    is asked for; else potq's policy (act_zero_point None or 0: 0 after ReLU, 128 for signed values) or
    the reference report's convention (128: everywhere)."""
    if graph.quantized and act_zero_point is None:
        return None
    settings = QuantSettings("pot-seed" if act_zero_point else "pot-channel")
    return {v: zero_point(settings, not nn) for v, nn in nonnegative(graph).items()}


def needs_sample(settings: QuantSettings) -> bool:
    """Whether the activation scales read the calibration sample (the mse search), not only min and max."""
    spec = settings.spec
    return spec.pot and not spec.seed and (settings.exponent not in EXPONENT_ROUND_MODES or settings.low_bit)


def activation_scale(stats, zp: int, settings: QuantSettings, bits: int = CODE_BITS) -> tuple[float, int | None]:
    """(scale, exponent or None) of an activation from its calibration statistics; below 8 bits a power-of-two
    exponent is chosen by mse (the never-clipping ceil leaves a 4-bit ReLU output a handful of codes)."""
    spec = settings.spec
    lo, hi = act_range(bits)
    if spec.seed:
        e = seed_exponent(stats.min, stats.max, hi)
        return 2.0**e, e
    rule = "mse" if bits < CODE_BITS else settings.exponent
    if spec.pot and rule in EXPONENT_ROUND_MODES:
        # choose_exponent's closed form, which reads max|x| only: no sample to concatenate (issue 22)
        e = pot_exponent(stats.max_abs, hi - zp, rule)
        return 2.0**e, e
    if spec.pot:
        e = choose_exponent(stats.sample(), lo, hi, zp, rule, settings.rounding, "", max_abs=stats.max_abs)
        return 2.0**e, e
    return (stats.max_abs / (hi - zp) if stats.max_abs > 0 else 1.0), None


def clamp_codes(
    zp: int, scale: float, act: tuple[float, float] | None, rounding: str, bits: int = CODE_BITS
) -> tuple[int, int]:
    """A fused activation clamp in code space. round(clamp(y, lo, hi) / s) = clamp(round(y / s),
    round(lo / s), round(hi / s)) for any monotone rounding, so the clamp moves onto the codes."""
    c_min, c_max = act_range(bits)
    if act is None:
        return c_min, c_max
    lo = c_min if math.isinf(act[0]) else zp + int(round_values(torch.tensor(act[0] / scale), rounding))
    hi = c_max if math.isinf(act[1]) else zp + int(round_values(torch.tensor(act[1] / scale), rounding))
    return max(c_min, lo), min(c_max, hi)


def activation_qtype(stats, signed: bool, act, settings: QuantSettings, bits: int = CODE_BITS) -> QType:
    zp = zero_point(settings, signed, bits)
    scale, e = activation_scale(stats, zp, settings, bits)
    lo, hi = clamp_codes(zp, scale, act, settings.rounding, bits)
    return QType(zp, lo, hi, scale, e, bits)


def row_max_abs(rows: torch.Tensor, what: str) -> torch.Tensor:
    """max |x| of each row over finite values; NaN is an error naming `what` (as `finite_max`)."""
    if torch.isnan(rows).any():
        raise UserError(f"{what}: NaN values, can't quantize")
    return torch.where(torch.isfinite(rows), rows.abs(), torch.zeros_like(rows)).amax(1)


def weight_scales(
    w: torch.Tensor,
    settings: QuantSettings,
    per_channel: bool,
    what: str,
    min_exponent: torch.Tensor | None = None,
    fmt: tuple[int, WeightCode] = (CODE_BITS, WeightCode.INT),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale per output channel, exponent per output channel or None) of a weight tensor in format `fmt`
    (bits, code: the node's w_bits and w_code). Below 8-bit int each channel's exponent is chosen by mse among
    the never-clipping one and three finer ones (mse_weight_exponents), whatever --exponent says.

    `min_exponent` (power-of-two schemes, --max-shift): the finest exponent each channel may take so
    that its requantization shift fits the shifter; coarser weights are the only freedom there."""
    spec = settings.spec
    w = w.detach().double()
    out = w.shape[0]
    rows = w.flatten(1) if per_channel and spec.per_channel else w.flatten()[None]
    bits, code = fmt
    w_max = weight_max(code, bits)
    if spec.seed:
        exps = torch.tensor([seed_exponent(float(w.min()), float(w.max()), w_max)], dtype=torch.int64)
    elif spec.pot and fmt != (CODE_BITS, WeightCode.INT):  # vectorized, as QAT runs it every step
        top = pot_exponents(row_max_abs(rows, what), w_max, "ceil")
        exps = mse_weight_exponents(rows, top, code, bits, settings.rounding)
    elif spec.pot and settings.exponent in EXPONENT_ROUND_MODES:  # vectorized: QAT runs this every step
        exps = pot_exponents(row_max_abs(rows, what), W_MAX, settings.exponent)
    elif spec.pot:
        exps = torch.tensor(
            [choose_exponent(r, W_MIN, W_MAX, 0, settings.exponent, settings.rounding, what) for r in rows],
            dtype=torch.int64,
        )
    else:
        maxes = torch.tensor([finite_max(r, what) for r in rows], dtype=torch.float64)
        scales = torch.where(maxes > 0, maxes / W_MAX, torch.ones_like(maxes))
        return scales.expand(out).clone(), None
    exps = exps.expand(out).clone()
    if min_exponent is not None:
        exps = torch.maximum(exps, min_exponent)
    return torch.exp2(exps.double()), exps
