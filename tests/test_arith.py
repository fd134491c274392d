"""Property and hand-computed tests of the quantization arithmetic."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from potq.errors import UserError
from potq.ir.arith import round_float, shift_round, shift_round_float32
from potq.ir.rules import Rounding
from potq.quant.arith import (
    E_MIN,
    choose_exponent,
    finite_max,
    pot_exponent,
    seed_exponent,
)
from potq.quant.simulate import fake_quant

HU = Rounding.HALF_UP
positive = st.floats(min_value=0, max_value=1e30, exclude_min=True, allow_nan=False, allow_infinity=False)
values = st.lists(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False), min_size=1, max_size=64)


@given(positive, st.sampled_from([127, 255]), st.sampled_from(["ceil", "round"]))
def test_scale_is_a_power_of_two(max_abs, qmax, mode):
    scale = 2.0 ** pot_exponent(max_abs, qmax, mode)
    mantissa, _ = math.frexp(scale)
    assert mantissa == 0.5


@given(positive, st.sampled_from([127, 255]))
def test_ceil_never_clips_and_is_tight(max_abs, qmax):
    e = pot_exponent(max_abs, qmax, "ceil")
    assert qmax * 2.0**e >= max_abs
    assert e == E_MIN or qmax * 2.0 ** (e - 1) < max_abs  # one step finer would clip


@given(values, st.sampled_from(list(Rounding)))
def test_ceil_scale_keeps_every_calibration_value_in_range(xs, rule):
    x = torch.tensor(xs, dtype=torch.float64)
    e = choose_exponent(x, -127, 127, 0, "ceil", rule, "t")
    q = round_float(x / 2.0**e, Rounding.HALF_EVEN)
    assert q.abs().max() <= 127


@given(values, st.sampled_from([HU, Rounding.HALF_EVEN]), st.sampled_from(["ceil", "round", "mse"]))
def test_dequantize_quantize_within_half_a_step(xs, rule, mode):
    x = torch.tensor(xs, dtype=torch.float64)
    e = choose_exponent(x, -127, 127, 0, mode, rule, "t")
    s = torch.tensor(2.0**e, dtype=torch.float64)
    y = fake_quant(x, s, 0, -127, 127, rule)
    inside = x.abs() <= 127 * 2.0**e  # values that do not clip
    assert ((y - x).abs()[inside] <= s / 2).all()


@given(values)
def test_symmetric_weights_never_hit_minus_128(xs):
    x = torch.tensor(xs, dtype=torch.float64) * 1000  # force clipping too
    for mode in ("ceil", "round", "mse"):
        e = choose_exponent(x / 1000, -127, 127, 0, mode, HU, "w")  # scale chosen on the unscaled tensor
        q = torch.clamp(round_float(x / 2.0**e, HU), -127, 127)
        assert q.min() >= -127


@given(st.integers(-(2**40), 2**40), st.integers(-6, 20), st.sampled_from(list(Rounding)))
def test_integer_shift_matches_float_rounding(acc, shift, rule):
    """The golden model's shifter and the simulated model's rounding agree on every accumulator."""
    integer = shift_round(torch.tensor([acc]), shift, rule).item()
    real = round_float(torch.tensor([acc * 2.0**-shift], dtype=torch.float64), rule).item()
    assert integer == real


@pytest.mark.parametrize(
    "acc, shift, rule, expected",
    [
        (5, 1, HU, 3),
        (5, 1, Rounding.HALF_EVEN, 2),
        (5, 1, Rounding.FLOOR, 2),  # 2.5
        (7, 1, HU, 4),
        (7, 1, Rounding.HALF_EVEN, 4),
        (7, 1, Rounding.FLOOR, 3),  # 3.5
        (-5, 1, HU, -2),
        (-5, 1, Rounding.HALF_EVEN, -2),
        (-5, 1, Rounding.FLOOR, -3),  # -2.5
        (-7, 1, HU, -3),
        (-7, 1, Rounding.HALF_EVEN, -4),
        (-7, 1, Rounding.FLOOR, -4),  # -3.5
        (6, 2, HU, 2),
        (6, 2, Rounding.HALF_EVEN, 2),
        (6, 2, Rounding.FLOOR, 1),  # 1.5
        (-6, 2, HU, -1),
        (-6, 2, Rounding.HALF_EVEN, -2),
        (-6, 2, Rounding.FLOOR, -2),  # -1.5
        (9, 3, HU, 1),
        (11, 3, Rounding.HALF_EVEN, 1),
        (13, 3, HU, 2),  # 1.125, 1.375, 1.625
        (3, 0, HU, 3),
        (3, -2, Rounding.FLOOR, 12),  # no shift, left shift
    ],
)
def test_shift_by_hand(acc, shift, rule, expected):
    assert shift_round(torch.tensor([acc]), shift, rule).item() == expected


@pytest.mark.parametrize("rule", [HU, Rounding.HALF_EVEN, Rounding.FLOOR])
def test_saturation_beyond_uint8(rule):
    acc = torch.tensor([-100_000, -3, 0, 255 * 16 + 7, 100_000])
    q = (shift_round(acc, 4, rule) + 0).clamp(0, 255)
    assert q.tolist() == [0, 0, 0, 255, 255]


def test_straight_through_gradient():
    x = torch.tensor([0.3, 1.7, -2.5], requires_grad=True)
    round_float(x, HU).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_degenerate_tensors_get_defined_scales():
    zeros = torch.zeros(10)
    assert choose_exponent(zeros, -127, 127, 0, "mse", HU, "w") == 0  # scale 1, no division by zero
    three = choose_exponent(torch.full((5,), 3.0), -127, 127, 0, "ceil", HU, "w")
    assert three == pot_exponent(3, 127, "ceil")
    with_inf = torch.tensor([1.0, float("inf"), -2.0])
    assert finite_max(with_inf, "x") == 2.0  # inf saturates; the scale follows the finite values
    e = choose_exponent(with_inf, -127, 127, 0, "mse", HU, "x")
    assert math.isfinite(2.0**e)
    q = fake_quant(with_inf, torch.tensor(2.0**e), 0, -127, 127, HU)
    assert torch.isfinite(q).all() and q[1] == 127 * 2.0**e


def test_nan_is_an_error_naming_the_tensor():
    with pytest.raises(UserError, match="conv3"):
        finite_max(torch.tensor([1.0, float("nan")]), "weights of conv3")


def test_reference_rule():
    # scale = 2**round(log2(2 * max|x| / qmax)); zero and infinite ranges give scale 1
    assert seed_exponent(-0.5, 0.25, 127) == round(math.log2(1 / 127))
    assert seed_exponent(0.0, 6.0, 255) == round(math.log2(12 / 255))
    assert seed_exponent(0.0, 0.0, 255) == 0
    assert seed_exponent(2.0, 2.0, 255) == 0
    assert seed_exponent(0.0, float("inf"), 255) == 0


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=8, max_size=64))
def test_mse_never_worse_than_ceil(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    from potq.quant.arith import quant_error

    e_mse = choose_exponent(x, -127, 127, 0, "mse", HU, "t")
    e_ceil = choose_exponent(x, -127, 127, 0, "ceil", HU, "t")
    assert quant_error(x, e_mse, -127, 127, 0, HU) <= quant_error(x, e_ceil, -127, 127, 0, HU)


@given(
    st.lists(
        st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=3, max_size=3),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["ceil", "round"]),
)
def test_vectorized_exponents_equal_the_scalar_rule(rows, mode):
    from potq.quant.arith import pot_exponents

    x = torch.tensor(rows, dtype=torch.float64)
    vector = pot_exponents(x.abs().amax(1), 127, mode).tolist()
    assert vector == [choose_exponent(r, -127, 127, 0, mode, HU, "w") for r in x]


def exact_round(acc: int, shift: int, rule: str) -> int:
    """acc * 2**-shift rounded by rule, in Python's unbounded integers."""
    if shift <= 0:
        return acc << -shift
    q, rem = acc >> shift, acc & ((1 << shift) - 1)  # floor and the non-negative remainder
    half = 1 << (shift - 1)
    if rule == Rounding.FLOOR:
        return q
    if rule == HU:
        return q + (rem >= half)
    return q + (rem > half or (rem == half and q & 1 == 1))


@given(st.integers(-(2**31) + 1, 2**31 - 1), st.integers(0, 200), st.sampled_from(list(Rounding)))
def test_shift_round_is_exact_for_every_shift_amount(acc, shift, rule):
    """Shifts at or beyond the accumulator's width (degenerate scales make them) round exactly too."""
    assert shift_round(torch.tensor([acc], dtype=torch.int32), shift, rule).item() == exact_round(acc, shift, rule)


@pytest.mark.parametrize("rule, expected", [(HU, 0), (Rounding.HALF_EVEN, 0), (Rounding.FLOOR, -1)])
def test_long_shift_of_a_negative_accumulator(rule, expected):
    assert shift_round(torch.tensor([-5], dtype=torch.int32), 33, rule).item() == expected


@given(st.integers(-(2**23), 2**23), st.integers(-8, 62), st.sampled_from(list(Rounding)))
def test_float32_shift_equals_the_integer_shift_within_its_bound(acc, shift, rule):
    """The golden model's float32 path: exact wherever |acc| * 2^max(0, -s) + 2^(s-1) < 2^24."""
    bound = abs(acc) * 2 ** max(0, -shift) + (2 ** (shift - 1) if shift > 0 else 0)
    if bound >= 2**24:
        return
    got = shift_round_float32(torch.tensor([float(acc)], dtype=torch.float32), torch.tensor([shift]), rule)
    expected = exact_round(acc, shift, rule) if shift >= 0 else acc * 2**-shift
    assert int(got.item()) == expected
