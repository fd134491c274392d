"""The quantization arithmetic, in one place: rounding rules, power-of-two exponents, shifts.

A power-of-two scale is stored as its exponent e (scale = 2**e). Requantizing an accumulator
whose unit is 2**(e_in + e_w) to an output of scale 2**e_out is a right shift by
e_out - e_in - e_w, rounded by one of three rules:

- half-up:   (acc + 2**(s-1)) >> s, ties towards +inf; the cheapest rounding shifter.
- half-even: ties to even, as torch.round and torch's fake quantization do.
- floor:     acc >> s, the reference lab's plain arithmetic shift (truncates towards -inf).

`round_float` applies a rule to float tensors (with a straight-through gradient, for QAT) and
`shift_round` to integer tensors; for values on the 2**-s grid both give the same integers.
"""

from __future__ import annotations

import math

import torch

from potq.quant.rules import EXPONENT_ROUND_MODES, EXPONENT_RULES, ROUNDING, Rounding  # noqa: F401

# every shift amount at or beyond this rounds an int32 accumulator exactly as this one does
SHIFT_CAP = 62
INT32_MAX = 2**31 - 1
FLOAT32_EXACT = 2**24  # float32 holds every integer below it exactly
# exponents stay where float32 holds 2**e exactly; a tensor below 2**-100 is as good as zero
E_MIN, E_MAX = -100, 100


def round_inplace(x: torch.Tensor, rule: Rounding | str) -> torch.Tensor:
    """Round x in place by `rule`: half-up floor(x + 1/2), half-even, floor."""
    rule = Rounding.of(rule)
    if rule is Rounding.HALF_UP:
        return x.add_(0.5).floor_()
    return x.round_() if rule is Rounding.HALF_EVEN else x.floor_()


def round_values(x: torch.Tensor, rule: Rounding | str) -> torch.Tensor:
    return round_inplace(x.clone(), rule)


def round_float(x: torch.Tensor, rule: Rounding | str) -> torch.Tensor:
    """Round by `rule`; the gradient passes straight through (STE)."""
    r = round_values(x.detach(), rule)
    return x + (r - x).detach() if x.requires_grad else r


def shift_round(acc: torch.Tensor, shift: torch.Tensor | int, rule: Rounding | str) -> torch.Tensor:
    """Integer acc * 2**-shift, rounded by `rule`, exactly for every shift amount; a negative shift is
    an exact left shift (the caller's bound analysis proves it fits). Computed in int64: an int32
    accumulator shifted by SHIFT_CAP or more rounds to the same result as by any larger amount."""
    rule = Rounding.of(rule)
    acc = acc.to(torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64, device=acc.device)
    if bool((shift < 0).any()):
        acc = acc << (-shift).clamp(min=0)
    shift = shift.clamp(0, SHIFT_CAP)
    if rule is Rounding.FLOOR:
        return acc >> shift
    half = (torch.ones_like(shift) << shift) >> 1  # 2**(s-1), and 0 for s = 0
    if rule is Rounding.HALF_UP:
        return (acc + half) >> shift
    q = acc >> shift
    rem = acc - (q << shift)
    up = (rem > half) | ((rem == half) & (half > 0) & (q & 1 == 1))
    return q + up.to(torch.int64)


def shift_round_float32(acc: torch.Tensor, shift: torch.Tensor, rule: Rounding | str) -> torch.Tensor:
    """shift_round of an integer-valued float32 acc, in place and in float32: exact while
    |acc| * 2^max(0, -shift) + 2^(shift-1) < 2^24 (the caller's bound proves it). Scaling by a power of
    two is exact in binary floating point, and so is each rounding rule on the scaled value."""
    return round_inplace(acc.mul_(torch.exp2(-shift.to(torch.float32))), rule)


def fold_requant(
    weight: torch.Tensor, bias: torch.Tensor, exponent: torch.Tensor, rule: Rounding | str, shift_min: int
) -> tuple[torch.Tensor, torch.Tensor, Rounding]:
    """A float32-exact MAC node's weight and bias with its requantizing power of two folded in: the GEMM
    then yields the scaled accumulator itself, sparing a pass over its output. `exponent`: per output
    channel (or one), the power of two that scales the accumulator to output units; shift_min: the
    smallest right shift (output exponent minus accumulator exponent) over the channels.

    Exact where the node's bound (potq.ir.bounds) is below 2^24: every product and partial sum is an
    integer below 2^24 times a power of two either way. Under half-up with every shift at least one bit,
    the rounding half joins the bias ((b + 2^(s-1)) * 2^-s: an integer within the same bound, times
    2^-s) and floor finishes the rounding; returns (weight, bias, the rule left to apply) in float32."""
    scale = torch.exp2(exponent.double().reshape(-1))
    w = weight.double() * scale.view(-1, *[1] * (weight.dim() - 1))
    b = bias.double() * scale
    rule = Rounding.of(rule)
    if rule is Rounding.HALF_UP and shift_min >= 1:
        b, rule = b + 0.5, Rounding.FLOOR
    return w.float(), b.float(), rule


def quantize(x: torch.Tensor, scale, zp: int, lo: int, hi: int, rule: Rounding | str) -> torch.Tensor:
    """The codes clamp(round(x / scale) + zp, lo, hi), as floats (straight-through gradient)."""
    return torch.clamp(round_float(x / scale, rule) + zp, lo, hi)


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


def quant_error(x: torch.Tensor, e: int, lo: int, hi: int, zp: int, rule: str) -> float:
    """Mean squared error of quantizing x with scale 2**e."""
    s = 2.0**e
    q = (round_values(x / s, rule) + zp).clamp(lo, hi)
    return float(((q - zp) * s - x).pow(2).mean())


def mse_exponent(x: torch.Tensor, max_abs: float, lo: int, hi: int, zp: int, rule: str) -> int:
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
    x: torch.Tensor, lo: int, hi: int, zp: int, mode: str, rule: str, what: str, max_abs: float | None = None
) -> int:
    """One scale rule for every tensor: weights, per-channel slices, calibration samples."""
    if max_abs is None:
        max_abs = finite_max(x, what)
    if mode == "mse":
        return mse_exponent(x, max_abs, lo, hi, zp, rule)
    return pot_exponent(max_abs, hi - zp, mode)
