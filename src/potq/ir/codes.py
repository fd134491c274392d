"""The number formats of the integer graph, each defined once and torch-free (the RTL's PE parameters are
generated from here, and tests/test_codes.py checks docs/graph-format.md's table against it): what a stored
integer may be at each bit width, how it is stored, how hex files pack it.

Activations: b-bit codes, 2 <= b <= 8, unsigned in [0, 2^b - 1]. Zero point 0 after a ReLU (every code a
non-negative value); 2^(b-1) for a value that can be negative (a signed b-bit number stored with an offset).

Weights: integers w in units of their output channel's power-of-two scale 2^e, by code:
- `int`:  uniform, w in [-(2^(b-1) - 1), 2^(b-1) - 1] (symmetric: never -2^(b-1)), b in 2..8; today's INT8 is b = 8.
- `pot`:  w = 0 or +-2^k with k in 0..2^(b-1) - 2: a sign and an exponent, so w * x is a shift of x; b in 2..4
          (at 5 bits k would reach 2^14, past the int8 container that every interpreter reads).
- `apot`: w = +-(t1 + t2), APoT's additive form (Li et al., ICLR 2020): t1 from {0, 2^T, 2^(T-2), ...} and t2
          from {0, 2^(T-1), 2^(T-3), ...}, two interleaved power-of-two sets, so w * x is two shifts and an add;
          b in 3..5. The sign takes one bit, t1's field m1 = ceil((b-1)/2) bits and t2's m2 = floor((b-1)/2): a
          field f is 0 for an absent term, else the f-th power from the top. T is the least exponent that puts
          the smallest term at 2^0 (T = max(2(2^m1 - 2), 2(2^m2 - 2) + 1)): the values are integers.
The graph holds every weight as its value w in an int8 tensor, whatever its code: every interpreter computes
with the values and needs no decoder. The storage code (hex files, the RTL's weight memory) is:
- int: b-bit two's complement;  pot: sign bit (the MSB, 1 = negative), then m = 0 for zero, k + 1 for 2^k;
- apot: sign bit, then f1, then f2 (the LSBs).
Packed hex: the codes of a tensor, in row-major order, LSB first into 32-bit words, floor(32 / b) codes per
word (no code straddles two words), the last word padded with zero bits.
"""

from __future__ import annotations

from enum import Enum
from functools import cache

import numpy as np

from potq.ir.rules import ACT_BITS, act_range, act_zero_point  # noqa: F401 (the formats' module names them)

WORD_BITS = 32  # packed hex words


class WeightCode(Enum):
    """How a node's weights are restricted; its value is the label the CLI, the graph and model.json carry."""

    INT = "int"
    POT = "pot"
    APOT = "apot"

    @classmethod
    def of(cls, label: str) -> WeightCode:
        for c in cls:
            if c.value == label:
                return c
        raise ValueError(f"unknown weight code {label!r}; choose from {', '.join(c.value for c in cls)}")


WEIGHT_BITS = {WeightCode.INT: range(2, 9), WeightCode.POT: range(2, 5), WeightCode.APOT: range(3, 6)}
WEIGHT_CODE_NOTES = {
    WeightCode.INT: "uniform integers in [-(2^(b-1) - 1), 2^(b-1) - 1]",
    WeightCode.POT: "0 or +-2^k, k in 0..2^(b-1) - 2: a shift per product",
    WeightCode.APOT: "+-(t1 + t2), t1 and t2 from interleaved power-of-two sets: two shifts and an add",
}


def check_weight_format(code: WeightCode, bits: int) -> None:
    """ValueError unless `bits` can hold `code`."""
    ok = WEIGHT_BITS[code]
    if bits not in ok:
        raise ValueError(f"{code.value} weights take {ok.start} to {ok.stop - 1} bits, not {bits}")


def check_act_bits(bits: int) -> None:
    if bits not in ACT_BITS:
        raise ValueError(f"activations take {ACT_BITS.start} to {ACT_BITS.stop - 1} bits, not {bits}")


def _apot_fields(bits: int) -> tuple[int, int, int]:
    """(m1, m2, T) of b-bit APoT weights."""
    m1, m2 = bits // 2, (bits - 1) // 2  # ceil((b-1)/2), floor((b-1)/2)
    top = max(2 * ((1 << m1) - 2), 2 * ((1 << m2) - 2) + 1)
    return m1, m2, top


def apot_fields(bits: int) -> tuple[int, int, int]:
    """(m1, m2, T) of b-bit APoT weights: the widths of the f1 and f2 fields and t1's top exponent (the RTL's
    shift-add PE takes them as parameters: potq.deploy.rtl.pe)."""
    check_weight_format(WeightCode.APOT, bits)
    return _apot_fields(bits)


def _magnitudes(code: WeightCode, bits: int) -> dict[int, int]:
    """Storage field (the code without its sign bit) -> magnitude, for pot and apot."""
    if code is WeightCode.POT:
        return {m: (1 << (m - 1)) if m else 0 for m in range(1 << (bits - 1))}
    m1, m2, top = _apot_fields(bits)
    out = {}
    for f1 in range(1 << m1):
        for f2 in range(1 << m2):
            t1 = 1 << (top - 2 * (f1 - 1)) if f1 else 0
            t2 = 1 << (top - 1 - 2 * (f2 - 1)) if f2 else 0
            out[(f1 << m2) | f2] = t1 + t2
    return out


@cache
def weight_values(code: WeightCode, bits: int) -> tuple[int, ...]:
    """Every value a b-bit weight of this code can take, ascending (symmetric about 0)."""
    check_weight_format(code, bits)
    if code is WeightCode.INT:
        top = (1 << (bits - 1)) - 1
        return tuple(range(-top, top + 1))
    mags = sorted(set(_magnitudes(code, bits).values()))
    return tuple(sorted({-m for m in mags} | set(mags)))


def weight_max(code: WeightCode, bits: int) -> int:
    return weight_values(code, bits)[-1]


def encode_weights(values: np.ndarray, code: WeightCode, bits: int) -> np.ndarray:
    """The storage codes (unsigned, b bits) of weight values; ValueError for a value the format can't hold."""
    v = np.asarray(values, dtype=np.int64)
    bad = ~np.isin(v, weight_values(code, bits))
    if bad.any():
        raise ValueError(f"{int(v[bad][0])} is not a {bits}-bit {code.value} weight")
    if code is WeightCode.INT:
        return v & ((1 << bits) - 1)
    field_of = {}
    for field, mag in sorted(_magnitudes(code, bits).items(), reverse=True):
        field_of[mag] = field  # the smallest field of each magnitude (apot's 0 has one)
    fields = np.vectorize(field_of.__getitem__, otypes=[np.int64])(np.abs(v)) if v.size else v
    return np.where(v < 0, 1 << (bits - 1), 0) | fields


def decode_weights(codes: np.ndarray, code: WeightCode, bits: int) -> np.ndarray:
    """The values of storage codes: the inverse of encode_weights."""
    c = np.asarray(codes, dtype=np.int64)
    sign_bit = 1 << (bits - 1)
    if code is WeightCode.INT:
        return np.where(c & sign_bit, c - (1 << bits), c)
    mags = _magnitudes(code, bits)
    mag = np.vectorize(mags.__getitem__, otypes=[np.int64])(c & (sign_bit - 1)) if c.size else c
    return np.where(c & sign_bit, -mag, mag)


def codes_per_word(bits: int) -> int:
    return WORD_BITS // bits


def pack_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """b-bit unsigned codes packed LSB first, floor(32 / b) to a 32-bit word, the last word zero-padded."""
    c = np.asarray(codes, dtype=np.uint64).reshape(-1)
    per = codes_per_word(bits)
    padded = np.zeros(-(-len(c) // per) * per, dtype=np.uint64)
    padded[: len(c)] = c
    shifts = np.arange(per, dtype=np.uint64) * np.uint64(bits)
    return (padded.reshape(-1, per) << shifts).sum(1).astype(np.uint32)


def unpack_words(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of packed words: the inverse of pack_words."""
    w = np.asarray(words, dtype=np.uint64).reshape(-1, 1)
    shifts = np.arange(codes_per_word(bits), dtype=np.uint64) * np.uint64(bits)
    return ((w >> shifts) & np.uint64((1 << bits) - 1)).reshape(-1)[:count].astype(np.int64)


def packed_bytes(count: int, bits: int) -> int:
    """Bytes of `count` b-bit codes packed into 32-bit words."""
    return -(-count // codes_per_word(bits)) * (WORD_BITS // 8)


def code_bytes(count: int, bits: int) -> int:
    """Bytes of `count` b-bit activation codes packed densely (8 bits: one byte each): what the cost models move."""
    return -(-count * bits // 8)


def weight_bytes(count: int, bits: int) -> int:
    """Bytes of `count` weights as a weight memory holds them, the one rule every cost model reads: below 8 bits
    their storage codes packed into 32-bit words (what the export writes), at 8 bits one byte each (as in 0.4)."""
    return packed_bytes(count, bits) if bits < 8 else count * bits // 8

