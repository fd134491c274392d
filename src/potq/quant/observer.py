"""`PowerOfTwoObserver`: potq's scale rule as a torch.ao.quantization observer.

A thin adapter for people on torch's eager QConfig API (deprecated in recent torch, hence kept out
of potq's own path): it records what it sees, then hands torch the scale that potq's rule gives.

    QConfig(activation=PowerOfTwoObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric),
            weight=PowerOfTwoObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))

With exactly the reference report's arguments it reproduces the report's rule (potq's `pot-seed`):
scale 2**round(log2(2*max|x|/qmax)), weights int8 in [-127, 127] with zero point 0, activations uint8
with zero point 128. `rule=` picks potq's better rules instead: "ceil" (potq's `pot-tensor`: the
finest scale that never clips, activation zero point 0 when everything seen is non-negative, as after
ReLU, else 128), "mse" or "round".
"""

from __future__ import annotations

import torch
from torch.ao.quantization.observer import MinMaxObserver

from potq.ir.rules import ACT_MAX, ACT_MIN, SIGNED_ZERO_POINT, W_MAX, W_MIN
from potq.quant.arith import choose_exponent, seed_exponent
from potq.quant.lower import Stats
from potq.quant.rules import QuantSettings, Rounding


class PowerOfTwoObserver(MinMaxObserver):
    def __init__(
        self,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_symmetric,
        rule: str = "seed",
        rounding: str = QuantSettings.rounding.label,  # potq's default rule
        **kwargs,
    ):
        if dtype == torch.qint8:
            kwargs.setdefault("quant_min", W_MIN)  # symmetric: never -128
            kwargs.setdefault("quant_max", W_MAX)
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)
        self.rule, self.rounding = rule, Rounding.of(rounding)
        self._stats = Stats()
        self._g = torch.Generator().manual_seed(0)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel():
            self._stats.add(x_orig.detach().double(), "PowerOfTwoObserver input", self._g)
        return super().forward(x_orig)

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) by potq's rule for everything observed so far."""
        st = self._stats
        weight = self.dtype == torch.qint8
        lo, hi = (W_MIN, W_MAX) if weight else (ACT_MIN, ACT_MAX)
        if self.rule == "seed":
            zp = 0 if weight else SIGNED_ZERO_POINT
            return 2.0 ** seed_exponent(st.min if st.seen else 0.0, st.max if st.seen else 0.0, hi), zp
        zp = 0 if weight or st.min >= 0 else SIGNED_ZERO_POINT
        e = choose_exponent(st.sample(), lo, hi, zp, self.rule, self.rounding, "observed tensor", max_abs=st.max_abs)
        return 2.0**e, zp

    @torch.jit.export
    def calculate_qparams(self):
        scale, zp = self.qparams()
        return torch.tensor([scale], dtype=torch.float32), torch.tensor([zp], dtype=torch.int32)
