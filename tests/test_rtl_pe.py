"""The standalone PEs of low-bit weights (potq.deploy.rtl.pe) under Verilator, against potq.ir.codes: the
shift-add PE (potq_pe_shift.sv) on every storage code of every pot and apot format, the multiplier PE
(potq_pe_mac.sv) on int weights of 2, 4 and 8 bits, and the shipped INT8 potq_pe beside them, each times every
x - zp that the 9-bit port holds (-256..255). Three phases in one run: every product on its own (`last` every
cycle), sums over random folds with a random out_in climbing the output chain, and one long fold of the
largest products that wraps the int32 accumulator. A shift PE that drops the sign bit is caught on exactly the
negative weights. All formats share one Verilator build (cached, like tests/test_rtl.py's)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from potq.deploy.rtl.pe import build_pe_tb, pe_params, pe_shift_params, pe_testbench, run_pe_tb
from potq.ir.codes import WEIGHT_BITS, WeightCode, apot_fields, decode_weights, encode_weights, weight_values

needs_verilator = pytest.mark.skipif(
    shutil.which("verilator") is None, reason="Verilator is not installed (apt-get install verilator; CI installs it)"
)
SIGNLESS_PE = Path(__file__).parent / "fixtures" / "rtl" / "signless_shift_pe.sv"
INT, POT, APOT = WeightCode.INT, WeightCode.POT, WeightCode.APOT
SHIFT_FORMATS = [(c, b) for c in (POT, APOT) for b in WEIGHT_BITS[c]]
# one harness instance per format; the shipped potq_pe (INT8 values) last
FORMATS = [*SHIFT_FORMATS, (INT, 2), (INT, 4), (INT, 8), (INT, 8)]
PES = [pe_params(c, b) for c, b in FORMATS[:-1]] + [("potq_pe", {})]
IDS = [f"{m}-{c.value}{b}" for (m, _), (c, b) in zip(PES, FORMATS, strict=True)]
XS = np.arange(-256, 256)  # every x - zp of the 9-bit port (8-bit codes give -255..255)
FOLD_CYCLES, WRAP_CYCLES = 30_000, 70_000


def stimulus(seed: int = 0) -> tuple[dict, dict[str, slice]]:
    """x, last, out_in and each PE's codes w (PEs, cycles) for the three phases, and each phase's cycles."""
    rng = np.random.default_rng(seed)
    n_codes = np.array([1 << b for _, b in FORMATS])
    t = np.arange(n_codes.max() * len(XS))  # products: every code of every format against every x
    products = {"x": XS[t % len(XS)], "last": np.ones_like(t), "w": (t // len(XS)) % n_codes[:, None]}
    last = rng.random(FOLD_CYCLES) < 1 / 8
    last[-1] = True
    folds = {"x": rng.integers(-256, 256, FOLD_CYCLES), "last": last.astype(np.int64)}
    folds["w"] = rng.integers(0, n_codes[:, None], (len(FORMATS), FOLD_CYCLES))
    # one fold of the largest products: 70,000 x (-256 * -127) passes 2^31 for INT8 (the int32 wraps)
    lowest = [int(encode_weights(np.array([weight_values(c, b)[0]]), c, b)[0]) for c, b in FORMATS]
    wrap = {"x": np.full(WRAP_CYCLES, -256), "last": np.eye(1, WRAP_CYCLES, WRAP_CYCLES - 1, dtype=np.int64)[0]}
    wrap["w"] = np.repeat(np.array(lowest)[:, None], WRAP_CYCLES, axis=1)
    phases = {"products": products, "folds": folds, "wrap": wrap}
    stim = {k: np.concatenate([p[k] for p in phases.values()], axis=-1) for k in ("x", "last", "w")}
    stim["out_in"] = rng.integers(-(1 << 31), 1 << 31, stim["x"].shape[0])
    bounds = np.cumsum([0, *(p["x"].shape[0] for p in phases.values())])
    return stim, {k: slice(int(a), int(b)) for k, a, b in zip(phases, bounds[:-1], bounds[1:], strict=True)}


def expected_out(x: np.ndarray, last: np.ndarray, out_in: np.ndarray, w_values: np.ndarray) -> np.ndarray:
    """The out register after each cycle by potq_pe's rule: last ? acc + w * x (acc restarting at 0) : out_in,
    wrapped to int32. acc is the product sum of the fold so far: a fold ends where `last` is high."""
    cs = np.cumsum(w_values * x)
    fold = np.concatenate([[0], np.cumsum(last[:-1])])  # each cycle's fold
    starts = np.concatenate([[0], np.flatnonzero(last[:-1]) + 1])
    total = cs - np.concatenate([[0], cs])[starts][fold]
    out = np.where(last == 1, total, out_in)
    return (out + (1 << 31)) % (1 << 32) - (1 << 31)


def values(i: int, codes: np.ndarray) -> np.ndarray:
    return decode_weights(codes, *FORMATS[i])


@pytest.fixture(scope="module")
def sweep():
    stim, phases = stimulus()
    exe, _ = build_pe_tb(PES)
    return stim, phases, run_pe_tb(exe, stim["x"], stim["last"], stim["out_in"], stim["w"])


# ---- without Verilator ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "bits"), SHIFT_FORMATS, ids=lambda v: getattr(v, "value", v))
def test_shift_pe_parameters_decode_as_potq_ir_codes(code, bits):
    """The PE's decoding (its header's formulas) with pe_shift_params' values gives codes' value of every code."""
    p = pe_shift_params(code, bits)
    assert p["WCODE"] == code.value and p["W_BITS"] == bits
    mags = []
    for field in range(1 << (bits - 1)):
        if code is POT:
            mags.append(1 << (field - 1) if field else 0)
        else:
            f1, f2 = field >> p["M2"], field & ((1 << p["M2"]) - 1)
            assert (p["M1"], p["M2"], p["TOP"]) == apot_fields(bits) and p["M1"] + p["M2"] == bits - 1
            mags.append((1 << (p["TOP"] + 2 - 2 * f1) if f1 else 0) + (1 << (p["TOP"] + 1 - 2 * f2) if f2 else 0))
    want = decode_weights(np.arange(1 << bits), code, bits)
    assert (np.array([*mags, *(-m for m in mags)]) == want).all()


def test_pe_params_pick_the_module():
    assert pe_params("int", 4) == ("potq_pe_mac", {"X_BITS": 8, "W_BITS": 4})
    assert pe_params("pot", 4) == ("potq_pe_shift", {"WCODE": "pot", "W_BITS": 4})
    assert pe_params(APOT, 5) == ("potq_pe_shift", {"WCODE": "apot", "W_BITS": 5, "M1": 2, "M2": 2, "TOP": 5})
    for bad in (("int", 4, "shift"), ("pot", 5, "pe"), ("apot", 2, "pe")):
        with pytest.raises(ValueError):
            (pe_shift_params if bad[2] == "shift" else pe_params)(bad[0], bad[1])
    assert '.WCODE("apot"), .W_BITS(5), .M1(2), .M2(2), .TOP(5)' in pe_testbench([pe_params("apot", 5)])


# ---- under Verilator -------------------------------------------------------------------------------


@needs_verilator
@pytest.mark.parametrize("i", range(len(FORMATS)), ids=IDS)
def test_every_code_times_every_x_and_their_sums(sweep, i):
    stim, phases, got = sweep
    want = expected_out(stim["x"], stim["last"], stim["out_in"], values(i, stim["w"][i]))
    for name, cycles in phases.items():
        bad = np.flatnonzero(got["out"][i, cycles] != want[cycles])
        assert bad.size == 0, (name, [(int(stim["x"][cycles][k]), int(stim["w"][i, cycles][k])) for k in bad[:5]])
    products = phases["products"]
    seen = set(zip(stim["w"][i, products].tolist(), stim["x"][products].tolist(), strict=True))
    assert len(seen) == (1 << FORMATS[i][1]) * len(XS)  # every (code, x) pair on its own
    assert (got["x_out"][i] == stim["x"]).all() and (got["w_out"][i] == stim["w"][i]).all()  # passed on
    if FORMATS[i] == (INT, 8):  # the long fold wraps the int32 as potq_pe's accumulator does
        total = int(values(i, stim["w"][i, phases["wrap"]]).astype(np.int64) @ stim["x"][phases["wrap"]])
        assert total >= 1 << 31 and got["out"][i, phases["wrap"]][-1] == total - (1 << 32)


@needs_verilator
def test_a_shift_pe_that_drops_the_sign_is_caught():
    stim, phases = stimulus(seed=1)
    exe, _ = build_pe_tb(PES, shift_pe=SIGNLESS_PE)
    got = run_pe_tb(exe, stim["x"], stim["last"], stim["out_in"], stim["w"])
    products = phases["products"]
    x = stim["x"][products]
    for i, (code, _) in enumerate(FORMATS):
        w = values(i, stim["w"][i, products])
        want = expected_out(x, stim["last"][products], stim["out_in"][products], w)
        wrong = got["out"][i, products] != want
        if code is INT:  # the multiplier PEs are potq's own
            assert not wrong.any(), IDS[i]
        else:  # exactly the products of a negative weight and x != 0
            assert (wrong == ((w < 0) & (x != 0))).all() and wrong.any(), IDS[i]
