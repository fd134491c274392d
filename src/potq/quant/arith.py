"""The quantizer's arithmetic: choosing power-of-two exponents, and quantizing floats to codes.

A power-of-two scale is stored as its exponent e (scale = 2**e). Requantizing an accumulator
whose unit is 2**(e_in + e_w) to an output of scale 2**e_out is a right shift by
e_out - e_in - e_w, rounded by one of the rules of potq.ir.rules (applied by potq.ir.arith).
"""

from __future__ import annotations

import math

import torch

from potq.ir.arith import round_float, round_values
from potq.ir.codes import WeightCode, weight_values
from potq.ir.rules import Rounding

# exponents stay where float32 holds 2**e exactly; a tensor below 2**-100 is as good as zero
E_MIN, E_MAX = -100, 100


def quantize(x: torch.Tensor, scale, zp: int, lo: int, hi: int, rule: Rounding) -> torch.Tensor:
    """The codes clamp(round(x / scale) + zp, lo, hi), as floats (straight-through gradient)."""
    return torch.clamp(round_float(x / scale, rule) + zp, lo, hi)


def project_weights(x: torch.Tensor, code: WeightCode, bits: int, rule: Rounding) -> torch.Tensor:
    """Weights in units of their scale onto the nearest value of their format (potq.ir.codes), as floats with a
    straight-through gradient. int: round by the graph's rule, clamp to +-(2^(b-1) - 1) (today's INT8 at 8 bits);
    pot and apot: the nearest magnitude, a tie going to the larger one (away from zero), the sign kept."""
    if code is WeightCode.INT:
        top = (1 << (bits - 1)) - 1
        return torch.clamp(round_float(x, rule), -top, top)
    mags = torch.tensor([v for v in weight_values(code, bits) if v >= 0], dtype=x.dtype, device=x.device)
    a = x.detach().abs()
    q = mags[torch.bucketize(a, (mags[1:] + mags[:-1]) / 2, right=True)] * torch.sign(x.detach())
    return x + (q - x).detach() if x.requires_grad else q


def weight_error(w: torch.Tensor, e: torch.Tensor, code: WeightCode, bits: int, rule: Rounding) -> torch.Tensor:
    """Per row of w (rows, k), the squared error of its weights in the format at scale 2^e[row]."""
    s = torch.exp2(e.double())[:, None]
    return ((project_weights(w / s, code, bits, rule) * s - w) ** 2).sum(1)


def mse_weight_exponents(
    w: torch.Tensor, top: torch.Tensor, code: WeightCode, bits: int, rule: Rounding, steps: int = 4
) -> torch.Tensor:
    """Per row, the exponent among the never-clipping one (top) and the `steps` - 1 finer ones with the least
    squared error: below 8 bits the largest weight is worth clipping to resolve the many small ones."""
    candidates = torch.stack([top - k for k in range(steps)])  # (steps, rows)
    errors = torch.stack([weight_error(w, e, code, bits, rule) for e in candidates])
    return candidates.gather(0, errors.argmin(0, keepdim=True))[0]


# ---- choosing power-of-two exponents ------------------------------------------------------------


def pot_exponents(max_abs: torch.Tensor, qmax: float, mode: str) -> torch.Tensor:
    """Per element, the exponent e such that 2**e is the scale mapping max_abs onto qmax.

    ceil never clips (qmax * 2**e >= max_abs); round takes the nearest power of two in log space,
    and may clip. A zero range gets scale 1 (e = 0), as the reference report sets; the caller
    handles inf and NaN (see `finite_max`).
    """
    if mode not in ("ceil", "round"):
        raise ValueError(f"unknown exponent mode {mode!r}")
    max_abs = max_abs.double()
    safe = torch.where(max_abs > 0, max_abs, torch.ones_like(max_abs))
    ideal = torch.log2(safe) - math.log2(qmax)
    if mode == "ceil":
        e = torch.ceil(ideal)
        # guard against log2 rounding error at exact powers of two
        e = torch.where(qmax * torch.exp2(e - 1) >= safe, e - 1, e)
    else:
        e = torch.round(ideal)
    e = torch.where(max_abs > 0, e, torch.zeros_like(e))
    return e.clamp(E_MIN, E_MAX).to(torch.int64)


def pot_exponent(max_abs: float, qmax: float, mode: str) -> int:
    """`pot_exponents` for one value."""
    return int(pot_exponents(torch.tensor([float(max_abs)], dtype=torch.float64), qmax, mode)[0])


def seed_exponent(min_val: float, max_val: float, qmax: float) -> int:
    """The reference lab's rule: scale = 2**round(log2(2 * max|x| / qmax)).

    As in its observer: an infinite range gets scale 1.0, and so does a zero range (its
    Overflow section: 'scale = 1.0, zero_point = 0' when min == max).
    """
    max_abs = max(abs(min_val), abs(max_val))
    if max_abs == 0 or math.isinf(max_abs) or min_val == max_val:
        return 0
    return min(max(round(math.log2(2 * max_abs) - math.log2(qmax)), E_MIN), E_MAX)


def finite_max(x: torch.Tensor, what: str) -> float:
    """max |x| over finite values; NaN is an error naming `what`, inf saturates (ignored here)."""
    from potq.errors import UserError

    if torch.isnan(x).any():
        raise UserError(f"{what}: NaN values, can't quantize")
    finite = x[torch.isfinite(x)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def quant_error(x: torch.Tensor, e: int, lo: int, hi: int, zp: int, rule: Rounding) -> float:
    """Mean squared error of quantizing x with scale 2**e."""
    s = 2.0**e
    q = (round_values(x / s, rule) + zp).clamp(lo, hi)
    return float(((q - zp) * s - x).pow(2).mean())


def mse_exponent(x: torch.Tensor, max_abs: float, lo: int, hi: int, zp: int, rule: Rounding) -> int:
    """The exponent among ceil and the two below it with the least quantization MSE on x.

    Power-of-two scales leave only a handful of sensible choices: one step coarser than ceil
    only wastes resolution, while finer ones clip more and more of the range.
    """
    qmax = hi - zp
    top = pot_exponent(max_abs, qmax, "ceil")
    x = x[torch.isfinite(x)].double()
    if x.numel() == 0:
        return top
    errors = {e: quant_error(x, e, lo, hi, zp, rule) for e in (top, top - 1, top - 2) if e >= E_MIN}
    return min(errors, key=lambda e: (errors[e], -e))


def choose_exponent(
    x: torch.Tensor, lo: int, hi: int, zp: int, mode: str, rule: Rounding, what: str, max_abs: float | None = None
) -> int:
    """One scale rule for every tensor: weights, per-channel slices, calibration samples."""
    if max_abs is None:
        max_abs = finite_max(x, what)
    if mode == "mse":
        return mse_exponent(x, max_abs, lo, hi, zp, rule)
    return pot_exponent(max_abs, hi - zp, mode)
