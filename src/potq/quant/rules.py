"""The names of potq's quantization choices, defined once and torch-free (so --help answers at once):
rounding rules, exponent rules, schemes, and the settings object that holds a choice of each."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from potq.errors import UserError
from potq.ir.codes import WEIGHT_BITS, WeightCode, check_act_bits, check_weight_format
from potq.ir.rules import CODE_BITS, ROUNDING, Rounding  # noqa: F401  (the quantizer's choices name the graph's rules)

EXPONENT_ROUND_MODES = ("ceil", "round")  # closed-form rules; mse searches
EXPONENT_RULES = (*EXPONENT_ROUND_MODES, "mse")


@dataclass(frozen=True)
class Scheme:
    pot: bool  # power-of-two scales
    per_channel: bool  # a weight scale per output channel
    seed: bool  # the reference lab's rule: zero point 128 everywhere, scale 2**round(log2(2*max/qmax))
    note: str


SCHEMES: dict[str, Scheme] = {
    "float-tensor": Scheme(False, False, False, "float scales, per tensor (needs a multiplier per output)"),
    "float-channel": Scheme(False, True, False, "float scales, per output channel"),
    "pot-seed": Scheme(True, False, True, "the reference report's power-of-two rule, zero point 128"),
    "pot-tensor": Scheme(True, False, False, "power-of-two, per tensor, zero point 0 after ReLU"),
    "pot-channel": Scheme(True, True, False, "power-of-two, per output channel, zero point 0 after ReLU"),
}
POT_SCHEMES = tuple(name for name, s in SCHEMES.items() if s.pot)
# calibration images, the first of the training split (`--calib`): the default of every figure in
# benchmarks/RESULTS.md (section 2's sweep chose the other defaults with it)
CALIB_IMAGES = 1000

# `potq mixed` (potq.quant.mixed): its methods, the costs it can budget, the method's default cost, its menu
MIXED_METHODS = ("potq", "hawq")
MIXED_OBJECTIVES = ("energy", "latency", "size", "compute", "bops")
MIXED_OBJECTIVE = {"potq": "energy", "hawq": "bops"}
MIXED_MENU = (2, 3, 4, 8)  # weight bits, crossed with the codes that each width can hold
MIXED_ACT_MENU = (4, 8)  # activation bits of a searched node's input (8 alone: a search of weights only)
MIXED_CODES = tuple(WeightCode)
MIXED_CALIB = 256  # calibration images: the statistics, and each choice's measured sensitivity on them


@dataclass(frozen=True)
class QuantSettings:
    """One choice of every quantization setting; its field defaults are potq's defaults (the CLI, `potq run`
    and the API read them from here). Build it from user strings with `parse`."""

    scheme: str = "pot-channel"
    exponent: str = "ceil"  # ceil | round | mse; ceil measured best (benchmarks/RESULTS.md)
    rounding: Rounding = Rounding.HALF_EVEN  # what onnxruntime, TVM and torch do: every consumer exact
    max_shift: int | None = None
    w_bits: int = CODE_BITS  # --bits W/A: the weights' and the activations' widths (2-8)
    a_bits: int = CODE_BITS
    weights: WeightCode = WeightCode.INT  # --weights: int, pot or apot (potq.ir.codes)
    bits_all: bool = False  # --bits-all: the first and the last layer too (else they stay 8-bit int)
    # --precision FILE: per node (name, w_bits, w_code label, a_bits of its output), over the above
    precision: tuple[tuple[str, int, str, int], ...] = ()

    @classmethod
    def parse(
        cls,
        scheme: str = scheme,  # the defaults are the fields' own
        exponent: str = exponent,
        rounding: str = rounding.label,
        max_shift: int | None = None,
        bits: str = f"{CODE_BITS}/{CODE_BITS}",
        weights: str = WeightCode.INT.value,
        bits_all: bool = False,
        precision: tuple[tuple[str, int, str, int], ...] = (),
    ) -> QuantSettings:
        """Settings from a user's words (CLI, API, a run's records), checked: one UserError naming the bad one."""
        if rounding not in ROUNDING:
            raise UserError(f"unknown rounding {rounding!r}; choose from {', '.join(ROUNDING)}")
        w_bits, a_bits = parse_bits(bits)
        try:
            code = WeightCode.of(weights)
        except ValueError as e:
            raise UserError(f"--weights: {e}") from None
        entries = tuple(sorted((str(n), int(w), str(c), int(a)) for n, w, c, a in precision))  # one label per choice
        settings = cls(scheme, exponent, Rounding.of(rounding), max_shift, w_bits, a_bits, code, bits_all, entries)
        settings.check()
        return settings

    @property
    def low_bit(self) -> bool:
        """Whether any node may take other than 8-bit int weights and 8-bit activations."""
        default = (CODE_BITS, CODE_BITS, WeightCode.INT)
        return (self.w_bits, self.a_bits, self.weights) != default or any(
            (w, a, WeightCode.of(c)) != default for _, w, c, a in self.precision
        )

    @property
    def spec(self) -> Scheme:
        return SCHEMES[self.scheme]

    @property
    def exponent_rule(self) -> str | None:
        """The exponent rule actually used: pot-seed's is the report's ("seed"); float scales have none."""
        if not self.spec.pot:
            return None
        return "seed" if self.spec.seed else self.exponent

    def label(self, qat: bool = False) -> str:
        """The name of a quantized model in its run folder (quant_<label>.pt): the scheme, then every setting
        that differs from the default, so that no two settings share a label: pot-channel,
        pot-channel-half-even, pot-tensor-mse-shift8, pot-channel-qat, ..."""
        default = QuantSettings()
        parts = [self.scheme]
        if self.spec.pot and not self.spec.seed and self.exponent != default.exponent:
            parts.append(self.exponent)
        if self.rounding is not default.rounding:
            parts.append(self.rounding.label)
        if self.max_shift is not None:
            parts.append(f"shift{self.max_shift}")
        if (self.w_bits, self.a_bits) != (CODE_BITS, CODE_BITS) or self.weights is not WeightCode.INT:
            parts.append(f"w{self.w_bits}a{self.a_bits}" + ("-all" if self.bits_all else ""))
        if self.weights is not WeightCode.INT:
            parts.append(self.weights.value)
        if self.precision:
            parts.append("mixed-" + hashlib.sha256(repr(self.precision).encode()).hexdigest()[:8])
        return "-".join(parts + (["qat"] if qat else []))

    def check(self) -> None:
        if self.scheme not in SCHEMES:
            raise UserError(f"unknown scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")
        if self.exponent not in EXPONENT_RULES:
            raise UserError(f"unknown exponent rule {self.exponent!r}; choose from {', '.join(EXPONENT_RULES)}")
        if not isinstance(self.rounding, Rounding):
            raise UserError(f"unknown rounding {self.rounding!r}; choose from {', '.join(ROUNDING)}")
        if self.max_shift is not None and self.max_shift < 0:
            raise UserError(f"--max-shift must be >= 0, got {self.max_shift}")
        try:
            check_weight_format(self.weights, self.w_bits)
            check_act_bits(self.a_bits)
        except ValueError as e:
            raise UserError(f"--bits {self.w_bits}/{self.a_bits} --weights {self.weights.value}: {e}") from None
        if self.low_bit and not self.spec.pot:
            raise UserError(f"--bits and --weights: power-of-two schemes only (pot-*), not {self.scheme}")


def parse_bits(text: str) -> tuple[int, int]:
    """--bits W/A: the weights' and the activations' widths, as two integers (their ranges are checked later)."""
    try:
        w, a = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise UserError(f"--bits {text}: give the weights' and the activations' bits as W/A, e.g. 4/4") from None
    return w, a


def check_menu(menu: tuple[int, ...]) -> None:
    """--menu: weight bits, each a width some weight code takes (int's 2-8 hold every code's)."""
    widths = WEIGHT_BITS[WeightCode.INT]
    if not menu:
        raise UserError("--menu: give at least one width of weights, e.g. 2,3,4,8")
    bad = [b for b in menu if b not in widths]
    if bad:
        given = ",".join(map(str, menu))
        raise UserError(f"--menu {given}: weights take {widths.start} to {widths.stop - 1} bits, not {bad[0]}")


def parse_menu(text: str) -> tuple[int, ...]:
    """--menu 2,3,4,8: the weight widths `potq mixed` may give a node, checked."""
    try:
        menu = tuple(sorted({int(v) for v in str(text).split(",")}))
    except ValueError:
        raise UserError(f"--menu {text}: give weight bits as a comma-separated list, e.g. 2,3,4,8") from None
    check_menu(menu)
    return menu


def parse_act_menu(text: str) -> tuple[int, ...]:
    """--act-menu 4,8: the activation widths `potq mixed` may give a searched node's input, checked."""
    try:
        menu = tuple(sorted({int(v) for v in str(text).split(",")}))
    except ValueError:
        raise UserError(f"--act-menu {text}: give activation bits as a comma-separated list, e.g. 4,8") from None
    check_act_menu(menu)
    return menu


def check_act_menu(menu: tuple[int, ...]) -> None:
    """--act-menu: activation widths, 8 among them (the values a search leaves alone stay 8-bit codes)."""
    text = ",".join(map(str, menu))
    if CODE_BITS not in menu:
        raise UserError(f"--act-menu {text}: include 8 (the values the search leaves alone stay 8-bit codes)")
    for b in menu:
        try:
            check_act_bits(b)
        except ValueError as e:
            raise UserError(f"--act-menu {text}: {e}") from None


def parse_codes(text: str) -> tuple[WeightCode, ...]:
    """--codes int,pot,apot: the weight codes `potq mixed` may give a node."""
    try:
        return tuple(dict.fromkeys(WeightCode.of(v.strip()) for v in str(text).split(",")))
    except ValueError as e:
        raise UserError(f"--codes {text}: {e}") from None
