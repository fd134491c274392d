"""The integer graph's own rules, torch-free (so `potq --help` answers at once, and C and SystemVerilog
constants are generated from here): the rounding rules of every shift and the widths they work in.

A power-of-two requantization is a right shift of an int32 accumulator by s bits, rounded by one of:
- half-up:   (acc + 2**(s-1)) >> s, ties towards +inf; the cheapest rounding shifter;
- half-even: ties to even, as torch.round and torch's fake quantization do;
- floor:     acc >> s, the reference lab's plain arithmetic shift (truncates towards -inf).
The kernels that apply them to tensors are in potq.ir.arith.
"""

from __future__ import annotations

from enum import IntEnum


class Rounding(IntEnum):
    """The rounding rule of every shift; its number is what the C header, model.json and the RTL carry."""

    HALF_UP = 0
    HALF_EVEN = 1
    FLOOR = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def of(cls, label: str) -> Rounding:
        """Parse a label at the edge (CLI, API, a file); inside potq a rule is always a Rounding."""
        for r in cls:
            if r.label == label:
                return r
        raise ValueError(f"unknown rounding rule {label!r}; choose from {', '.join(ROUNDING)}")


ROUNDING = tuple(r.label for r in Rounding)  # the labels, in code order
ROUNDING_DEFINITIONS = {  # acc * 2^-s for s > 0, exactly; `//` is floor division (written into model.json)
    Rounding.HALF_UP: "(acc + 2^(s-1)) // 2^s: ties go up, toward +infinity",
    Rounding.HALF_EVEN: "nearest integer to acc / 2^s; ties go to the even one",
    Rounding.FLOOR: "acc // 2^s (an arithmetic right shift): toward -infinity",
}

# every shift amount at or beyond this rounds an int32 accumulator exactly as this one does
SHIFT_CAP = 62
INT32_MAX = 2**31 - 1
FLOAT32_EXACT = 2**24  # float32 holds every integer below it exactly
FLOAT64_EXACT = 2**53  # and float64 below this

# ---- activation codes: b bits, unsigned, with a zero point (potq.ir.codes has the weights' formats) ----

ACT_BITS = range(2, 9)  # activation code widths


def act_range(bits: int) -> tuple[int, int]:
    """The codes of a b-bit activation: [0, 2^b - 1]."""
    return 0, (1 << bits) - 1


def act_zero_point(bits: int, signed: bool) -> int:
    """0 after a ReLU; 2^(b-1), the middle code, for a value that can be negative."""
    return 1 << (bits - 1) if signed else 0


# today's INT8 formats, named once: every interpreter and the C and SystemVerilog generators read these
CODE_BITS = 8  # activation codes and int weights unless a node says otherwise
ACT_MIN, ACT_MAX = act_range(CODE_BITS)  # uint8 codes
SIGNED_ZERO_POINT = act_zero_point(CODE_BITS, signed=True)  # 128: a value that can be negative
W_MAX = (1 << (CODE_BITS - 1)) - 1  # int8 weights in [-127, 127]: symmetric, never -128
W_MIN = -W_MAX

# The accumulators a cost model prices (potq.energy's adds, potq.accel's partial sums): "int32", as the reference
# report counts them and potq's RTL builds them, or "proven": each node's accumulator just as wide as its
# worst case needs, two's complement (what a dataflow accelerator that sizes each layer's datapath builds, as
# FINN does for its matrix-vector units; Colbert et al., A2Q, ICCV 2023, trains for such narrow accumulators)
ACCUMULATORS = ("int32", "proven")
INT32_BITS = 32
