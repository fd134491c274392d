"""The names of potq's quantization choices, defined once and torch-free (so --help answers at once):
rounding rules, exponent rules, schemes, and the settings object that holds a choice of each."""

from __future__ import annotations

from dataclasses import dataclass

from potq.errors import UserError
from potq.ir.rules import ROUNDING, Rounding  # noqa: F401  (the quantizer's choices name the graph's rules)

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


@dataclass(frozen=True)
class QuantSettings:
    """One choice of every quantization setting; its field defaults are potq's defaults (the CLI, `potq run`
    and the API read them from here). Build it from user strings with `parse`."""

    scheme: str = "pot-channel"
    exponent: str = "ceil"  # ceil | round | mse; ceil measured best (benchmarks/RESULTS.md)
    rounding: Rounding = Rounding.HALF_UP
    max_shift: int | None = None

    @classmethod
    def parse(
        cls,
        scheme: str = scheme,  # the defaults are the fields' own
        exponent: str = exponent,
        rounding: str = rounding.label,
        max_shift: int | None = None,
    ) -> QuantSettings:
        """Settings from a user's words (CLI, API, a run's records), checked: one UserError naming the bad one."""
        if rounding not in ROUNDING:
            raise UserError(f"unknown rounding {rounding!r}; choose from {', '.join(ROUNDING)}")
        settings = cls(scheme, exponent, Rounding.of(rounding), max_shift)
        settings.check()
        return settings

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
