"""The number formats of potq.ir.codes: every code's value set as docs/graph-format.md states it, storage codes
that round-trip, and packed words that an outsider unpacks with shifts and masks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from potq.ir.codes import (
    WEIGHT_BITS,
    WeightCode,
    act_range,
    act_zero_point,
    check_weight_format,
    decode_weights,
    encode_weights,
    pack_words,
    packed_bytes,
    unpack_words,
    weight_values,
)

FORMATS = [(c, b) for c in WeightCode for b in WEIGHT_BITS[c]]


@pytest.mark.parametrize(("code", "bits"), FORMATS, ids=lambda v: getattr(v, "value", v))
def test_every_value_round_trips_through_a_distinct_storage_code(code, bits):
    values = np.array(weight_values(code, bits))
    stored = encode_weights(values, code, bits)
    assert (decode_weights(stored, code, bits) == values).all()
    assert stored.min() >= 0 and stored.max() < 1 << bits and len(set(stored.tolist())) == len(values)
    assert (values == -values[::-1]).all() and abs(values).max() <= 127  # symmetric, inside the int8 container


def test_the_value_sets_as_documented():
    assert weight_values(WeightCode.INT, 8) == tuple(range(-127, 128))  # today's INT8
    assert weight_values(WeightCode.INT, 2) == (-1, 0, 1)
    assert weight_values(WeightCode.POT, 4)[7:] == (0, 1, 2, 4, 8, 16, 32, 64)
    assert weight_values(WeightCode.POT, 2) == (-1, 0, 1)
    assert weight_values(WeightCode.APOT, 4)[7:] == (0, 1, 4, 8, 9, 12, 16, 24)
    apot5 = weight_values(WeightCode.APOT, 5)[15:]
    assert len(apot5) == 16 and max(apot5) == 48
    for v in apot5:  # at most one even and one odd power of two
        assert bin(v & 0x55).count("1") <= 1 and bin(v & 0xAA).count("1") <= 1


def test_storage_codes_of_pot_and_apot():
    assert encode_weights(np.array([0, 1, -1, 64, -64]), WeightCode.POT, 4).tolist() == [0, 1, 9, 7, 15]
    # apot 4 bits: sign | f1 (2 bits: 16, 4, 1) | f2 (1 bit: 8)
    assert encode_weights(np.array([24, -9, 1]), WeightCode.APOT, 4).tolist() == [0b0011, 0b1111, 0b0110]


def test_a_value_outside_the_format_is_refused():
    with pytest.raises(ValueError, match="3 is not a 4-bit pot weight"):
        encode_weights(np.array([3]), WeightCode.POT, 4)
    for code, bits in [(WeightCode.INT, 1), (WeightCode.INT, 9), (WeightCode.POT, 5), (WeightCode.APOT, 2)]:
        with pytest.raises(ValueError, match="weights take"):
            check_weight_format(code, bits)


def test_activation_codes():
    assert act_range(8) == (0, 255) and act_range(4) == (0, 15)
    assert act_zero_point(8, signed=True) == 128 and act_zero_point(4, signed=True) == 8
    assert act_zero_point(4, signed=False) == 0


@given(st.integers(2, 8), st.lists(st.integers(0, 255), max_size=200))
def test_packed_words_unpack_with_shifts_and_masks(bits, raw):
    codes = np.array(raw, dtype=np.int64) & ((1 << bits) - 1)
    words = pack_words(codes, bits)
    per = 32 // bits
    assert len(words) * 4 == packed_bytes(len(codes), bits)
    for i, c in enumerate(codes):  # what a reader does: word i // per, bits (i % per) * b upward
        assert (int(words[i // per]) >> ((i % per) * bits)) & ((1 << bits) - 1) == c
    assert (unpack_words(words, bits, len(codes)) == codes).all()


def test_the_docs_table_is_the_formats():
    """docs/graph-format.md's "Weight formats" table, parsed, against weight_values for every (code, bits)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "graph-format.md").read_text()
    rows = re.findall(r"^\| `(int|pot|apot)` \| (\d) \| \+-\{([^}]*)\} \|$", text, flags=re.M)
    assert {(c, int(b)) for c, b, _ in rows} == {(c.value, b) for c, b in FORMATS}
    for code, bits, cell in rows:
        if ".." in cell:
            lo, hi = (int(v) for v in cell.split(".."))
            documented = list(range(lo, hi + 1))
        else:
            documented = [int(v) for v in cell.split(", ")]
        assert [v for v in weight_values(WeightCode.of(code), int(bits)) if v >= 0] == documented, (code, bits)
