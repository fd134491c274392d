"""The integer rules of potq.ir.rules applied to tensors: rounding, rounding shifts, and the float32 forms that
compute the same integers (exact where potq.ir.bounds proves the values stay below 2^24).

`round_float` applies a rule to float tensors (with a straight-through gradient, for QAT) and
`shift_round` to integer tensors; for values on the 2**-s grid both give the same integers.
"""

from __future__ import annotations

import torch

from potq.ir.rules import SHIFT_CAP, Rounding


def round_inplace(x: torch.Tensor, rule: Rounding) -> torch.Tensor:
    """Round x in place by `rule`: half-up floor(x + 1/2), half-even, floor."""
    if rule is Rounding.HALF_UP:
        return x.add_(0.5).floor_()
    if rule is Rounding.HALF_EVEN:
        return x.round_()
    if rule is Rounding.FLOOR:
        return x.floor_()
    raise TypeError(f"rounding rule {rule!r} is not a Rounding (parse labels with Rounding.of at the edge)")


def round_values(x: torch.Tensor, rule: Rounding) -> torch.Tensor:
    return round_inplace(x.clone(), rule)


def round_float(x: torch.Tensor, rule: Rounding) -> torch.Tensor:
    """Round by `rule`; the gradient passes straight through (STE)."""
    r = round_values(x.detach(), rule)
    return x + (r - x).detach() if x.requires_grad else r


def shift_round(acc: torch.Tensor, shift: torch.Tensor | int, rule: Rounding) -> torch.Tensor:
    """Integer acc * 2**-shift, rounded by `rule`, exactly for every shift amount; a negative shift is
    an exact left shift (the caller's bound analysis proves it fits). Computed in int64: an int32
    accumulator shifted by SHIFT_CAP or more rounds to the same result as by any larger amount."""
    if not isinstance(rule, Rounding):
        raise TypeError(f"rounding rule {rule!r} is not a Rounding (parse labels with Rounding.of at the edge)")
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


def shift_round_float32(acc: torch.Tensor, shift: torch.Tensor, rule: Rounding) -> torch.Tensor:
    """shift_round of an integer-valued float32 acc, in place and in float32: exact while
    |acc| * 2^max(0, -shift) + 2^(shift-1) < 2^24 (the caller's bound proves it). Scaling by a power of
    two is exact in binary floating point, and so is each rounding rule on the scaled value."""
    return round_inplace(acc.mul_(torch.exp2(-shift.to(torch.float32))), rule)


def fold_requant(
    weight: torch.Tensor, bias: torch.Tensor, exponent: torch.Tensor, rule: Rounding, shift_min: int
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
    if rule is Rounding.HALF_UP and shift_min >= 1:
        b, rule = b + 0.5, Rounding.FLOOR
    return w.float(), b.float(), rule
