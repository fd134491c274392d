"""The simulated quantized model: BatchNorm folded, fake quantization at every tensor.

A `QuantNet` is a flat list of ops (QLayer, max pool, flatten) built from a zoo `ConvNet`.
Each QLayer fake-quantizes its weights (int8, symmetric), its bias (int32 at scale s_in * s_w)
and its output (uint8 with a zero point; ReLU is the lower clamp), so its forward pass computes
exactly what the integer golden model computes, in float. In eval mode it runs in float64,
where sums of integers times powers of two are exact; in train mode (QAT) in float32 with a
straight-through gradient.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from potq.errors import UserError
from potq.quant.arith import (
    INT32_MAX,
    check_rounding,
    choose_exponent,
    finite_max,
    pot_exponents,
    round_float,
    seed_exponent,
)

W_MIN, W_MAX = -127, 127  # never -128: |w| <= 127 keeps products symmetric
A_MIN, A_MAX = 0, 255


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


@dataclass(frozen=True)
class QuantSettings:
    scheme: str = "pot-channel"
    exponent: str = "ceil"  # ceil | round | mse; ceil measured best (benchmarks/RESULTS.md)
    rounding: str = "half-up"
    max_shift: int | None = None

    @property
    def spec(self) -> Scheme:
        return SCHEMES[self.scheme]

    def check(self) -> None:
        if self.scheme not in SCHEMES:
            raise UserError(f"unknown scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")
        if self.exponent not in ("ceil", "round", "mse"):
            raise UserError(f"unknown exponent rule {self.exponent!r}; choose from ceil, round, mse")
        check_rounding(self.rounding)
        if self.max_shift is not None and self.max_shift < 0:
            raise UserError(f"--max-shift must be >= 0, got {self.max_shift}")


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zp: int, lo: int, hi: int, rule: str) -> torch.Tensor:
    """Quantize then dequantize: (clamp(round(x / s) + zp, lo, hi) - zp) * s."""
    q = torch.clamp(round_float(x / scale, rule) + zp, lo, hi)
    return (q - zp) * scale


def codes(x: torch.Tensor, scale: torch.Tensor, zp: int) -> torch.Tensor:
    """The integer codes of an already fake-quantized tensor (exact on its grid)."""
    return torch.round(x / scale).to(torch.int64) + zp


class QLayer(nn.Module):
    """Conv2d or Linear with folded BatchNorm, fused ReLU, and fake quantization."""

    def __init__(
        self,
        kind: str,
        weight: torch.Tensor,
        bias: torch.Tensor,
        relu: bool,
        last: bool,
        stride: int = 1,
        padding: int = 0,
        name: str = "",
    ):
        super().__init__()
        self.kind, self.relu, self.last, self.stride, self.padding, self.name = kind, relu, last, stride, padding, name
        # float64 storage: int32 biases times their scale are exact only there
        self.weight = nn.Parameter(weight.detach().clone().double())
        self.bias = nn.Parameter(bias.detach().clone().double())
        out = weight.shape[0]
        self.register_buffer("w_scale", torch.ones(out, dtype=torch.float64))
        self.register_buffer("in_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("out_scale", torch.ones((), dtype=torch.float64))
        self.in_zp = self.out_zp = 0
        self.out_lo, self.out_hi = A_MIN, A_MAX
        self.track_weights: QuantSettings | None = None  # QAT: re-derive weight scales every step

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (self.weight.dim() - 1)))

    def int_weight(self, rule: str) -> torch.Tensor:
        w = self.weight.detach() / self._view(self.w_scale)
        return torch.clamp(round_float(w, rule), W_MIN, W_MAX).to(torch.int8)

    def int_bias(self, rule: str) -> torch.Tensor:
        b = self.bias.detach() / self.bias_scale()
        return torch.clamp(round_float(b, rule), -INT32_MAX, INT32_MAX).to(torch.int32)

    def bias_scale(self) -> torch.Tensor:
        return self.in_scale * self.w_scale

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return nn.functional.conv2d(x, w, b, self.stride, self.padding)
        return nn.functional.linear(x, w, b)

    def forward(self, x: torch.Tensor, rule: str | None) -> torch.Tensor:
        """rule=None: the plain float layer (for calibration); else fake-quantized by that rounding."""
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if rule is None:
            y = self._linear(x, w, b)
            return torch.relu(y) if self.relu else y
        if self.track_weights is not None:
            set_weight_scale(self, self.track_weights)
        ws, bs = self._view(self.w_scale).to(x.dtype), self.bias_scale().to(x.dtype)
        wq = fake_quant(w, ws, 0, W_MIN, W_MAX, rule)
        bq = fake_quant(b, bs, 0, -INT32_MAX, INT32_MAX, rule)
        y = self._linear(x, wq, bq)
        if self.last:
            return y  # int32 logits at scale s_in * s_w: no requantization
        return fake_quant(y, self.out_scale.to(x.dtype), self.out_zp, self.out_lo, self.out_hi, rule)

    def out_codes(self, y: torch.Tensor) -> torch.Tensor:
        if self.last:  # the int32 accumulator, one scale per output channel
            return torch.round(y / self.bias_scale().to(y.dtype)).to(torch.int64)
        return codes(y, self.out_scale.to(y.dtype), self.out_zp)


class MaxPool(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor, rule: str | None = None) -> torch.Tensor:
        return nn.functional.max_pool2d(x, self.k)


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor, rule: str | None = None) -> torch.Tensor:
        return torch.flatten(x, 1)


class QuantNet(nn.Module):
    def __init__(self, ops: list[nn.Module], settings: QuantSettings):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.settings = settings
        self.register_buffer("in_scale", torch.ones((), dtype=torch.float64))
        self.in_zp = 128  # a normalized image is signed
        self.quantize = True  # False: the folded float model, for calibration

    @property
    def layers(self) -> list[QLayer]:
        return [op for op in self.ops if isinstance(op, QLayer)]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized image -> fake-quantized input (uint8 codes with zero point 128)."""
        return fake_quant(x, self.in_scale.to(x.dtype), self.in_zp, A_MIN, A_MAX, self.settings.rounding)

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """Logits. With `record`, appends the integer codes of the input and of every op's output."""
        if not self.training:
            x = x.double()  # exact: see the module docstring
        rule = self.settings.rounding if self.quantize else None
        if rule is not None:
            x = self.quantize_input(x)
            if record is not None:
                record.append(codes(x, self.in_scale.to(x.dtype), self.in_zp))
        scale, zp = self.in_scale, self.in_zp
        for op in self.ops:
            x = op(x, rule)
            if record is not None:
                if isinstance(op, QLayer):
                    scale, zp = op.out_scale, op.out_zp
                    record.append(op.out_codes(x))
                else:
                    record.append(codes(x, scale.to(x.dtype), zp))
        return x


# ---- building: fold BatchNorm, walk the zoo model -------------------------------------------------


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of a convolution that computes bn(conv(x)) with the running statistics."""
    with torch.no_grad():
        factor = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
        w = conv.weight.double() * factor.view(-1, 1, 1, 1)
        b = (bias - bn.running_mean.double()) * factor + bn.bias.double()
    return w, b


def build_quantnet(model: nn.Module, settings: QuantSettings) -> QuantNet:
    """Flatten a zoo ConvNet (features, flatten, classifier) into QuantNet ops."""
    settings.check()
    named = [(f"features.{n}", m) for n, m in model.features.named_children()]
    named += [("flatten", None)]
    named += [(f"classifier.{n}", m) for n, m in model.classifier.named_children()]
    ops: list[nn.Module] = []
    i = 0
    while i < len(named):
        name, m = named[i]
        if m is None:
            ops.append(Flatten())
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise UserError(f"layer {name} ({m}): potq quantizes only plain convolutions (groups=1, dilation=1)")
            w, b = m.weight, m.bias if m.bias is not None else torch.zeros(m.out_channels)
            if i + 1 < len(named) and isinstance(named[i + 1][1], nn.BatchNorm2d):
                w, b = fold_batchnorm(m, named[i + 1][1])
                i += 1
            relu = i + 1 < len(named) and isinstance(named[i + 1][1], nn.ReLU)
            i += relu
            ops.append(QLayer("conv", w, b, relu, False, m.stride[0], m.padding[0], name))
        elif isinstance(m, nn.Linear):
            relu = i + 1 < len(named) and isinstance(named[i + 1][1], nn.ReLU)
            i += relu
            b = m.bias if m.bias is not None else torch.zeros(m.out_features)
            ops.append(QLayer("linear", m.weight, b, relu, False, name=name))
        elif isinstance(m, nn.MaxPool2d) and m.kernel_size == m.stride and m.padding == 0:
            ops.append(MaxPool(m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]))
        else:
            raise UserError(f"layer {name} ({type(m).__name__}) can't be quantized by potq")
        i += 1
    if not isinstance(ops[-1], QLayer):
        raise UserError("the model must end with a Linear layer")
    ops[-1].last = True
    return QuantNet(ops, settings)


# ---- scales ------------------------------------------------------------------------------------


def set_weight_scale(layer: QLayer, settings: QuantSettings) -> None:
    """The weight scale(s) of `layer` by the scheme's rule, then the --max-shift limit."""
    spec = settings.spec
    w = layer.weight.detach().double()
    # the logits share one scale, so that the integer argmax compares like with like
    rows = w.flatten(1) if spec.per_channel and not layer.last else w.flatten()[None]
    what = f"weights of {layer.name}"
    if spec.seed:
        e = seed_exponent(float(w.min()), float(w.max()), W_MAX)
        scales = torch.full((1,), 2.0**e, dtype=torch.float64)
    elif spec.pot and settings.exponent != "mse":  # one vectorized call: QAT runs this every step
        scales = torch.exp2(pot_exponents(row_max_abs(rows, what), W_MAX, settings.exponent).double())
    elif spec.pot:
        exps = [choose_exponent(r, W_MIN, W_MAX, 0, settings.exponent, settings.rounding, what) for r in rows]
        scales = torch.tensor([2.0**e for e in exps], dtype=torch.float64)
    else:
        maxes = torch.tensor([finite_max(r, what) for r in rows], dtype=torch.float64)
        scales = torch.where(maxes > 0, maxes / W_MAX, torch.ones_like(maxes))
    if spec.pot and settings.max_shift is not None and not layer.last:
        # a shift longer than the shifter allows: coarsen the weight scale until it fits
        floor = layer.out_scale / layer.in_scale / 2.0**settings.max_shift
        scales = torch.maximum(scales, floor)
    layer.w_scale.copy_(scales.expand_as(layer.w_scale))


def row_max_abs(rows: torch.Tensor, what: str) -> torch.Tensor:
    """max |x| of each row over finite values; NaN is an error naming `what` (as `finite_max`)."""
    if torch.isnan(rows).any():
        raise UserError(f"{what}: NaN values, can't quantize")
    return torch.where(torch.isfinite(rows), rows.abs(), torch.zeros_like(rows)).amax(1)


def act_params(settings: QuantSettings, signed: bool) -> tuple[int, int]:
    """(zero point, lower clamp before ReLU) of an activation."""
    if settings.spec.seed or signed:
        return 128, A_MIN
    return 0, A_MIN


def act_scale(
    sample: torch.Tensor, max_abs: float, min_val: float, max_val: float, zp: int, settings: QuantSettings
) -> float:
    spec = settings.spec
    if spec.seed:
        return 2.0 ** seed_exponent(min_val, max_val, A_MAX)
    if spec.pot:
        return 2.0 ** choose_exponent(
            sample, A_MIN, A_MAX, zp, settings.exponent, settings.rounding, "", max_abs=max_abs
        )
    return max_abs / (A_MAX - zp) if max_abs > 0 else 1.0


class _Stats:
    """Running min, max and a bounded random sample of one activation tensor."""

    def __init__(self, keep: int = 1 << 16):
        self.min, self.max, self.keep, self.parts = float("inf"), float("-inf"), keep, []

    def add(self, x: torch.Tensor, what: str, g: torch.Generator) -> None:
        if torch.isnan(x).any():
            raise UserError(f"{what}: NaN in the calibration activations")
        finite = x[torch.isfinite(x)].flatten()
        if finite.numel():
            self.min, self.max = min(self.min, float(finite.min())), max(self.max, float(finite.max()))
            idx = torch.randint(0, finite.numel(), (min(self.keep, finite.numel()),), generator=g)
            self.parts.append(finite[idx].double())

    def sample(self) -> torch.Tensor:
        return torch.cat(self.parts) if self.parts else torch.zeros(1, dtype=torch.float64)

    @property
    def max_abs(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.parts else 0.0


@torch.no_grad()
def calibrate(net: QuantNet, x: torch.Tensor, batch: int = 250) -> None:
    """Set the input and activation scales from the float model's activations on x (normalized)."""
    s = net.settings
    net.eval()
    net.quantize = False
    g = torch.Generator().manual_seed(0)
    stats = [_Stats() for _ in range(len(net.ops) + 1)]
    for i in range(0, len(x), batch):
        h = x[i : i + batch].double()
        stats[0].add(h, "input", g)
        for k, op in enumerate(net.ops):
            h = op(h, None)
            if isinstance(op, QLayer):
                stats[k + 1].add(h, f"output of {op.name}", g)
    net.quantize = True
    zp, _ = act_params(s, signed=True)
    st = stats[0]
    net.in_scale.fill_(act_scale(st.sample(), st.max_abs, st.min, st.max, zp, s))
    net.in_zp = zp
    scale, zp = net.in_scale.clone(), net.in_zp
    for k, op in enumerate(net.ops):
        if not isinstance(op, QLayer):
            continue
        op.in_scale.copy_(scale)
        op.in_zp = zp
        if not op.last:
            st = stats[k + 1]
            op.out_zp, _ = act_params(s, signed=not op.relu)
            op.out_scale.fill_(act_scale(st.sample(), st.max_abs, st.min, st.max, op.out_zp, s))
            op.out_lo = op.out_zp if op.relu else A_MIN
            scale, zp = op.out_scale.clone(), op.out_zp
        set_weight_scale(op, s)


# ---- saving and loading ----------------------------------------------------------------------------


def export_state(net: QuantNet) -> dict:
    """Integers and scales only: what the hardware needs, and all that the saved file holds."""
    ops = []
    rule = net.settings.rounding
    for op in net.ops:
        if isinstance(op, QLayer):
            ops.append(
                {
                    "type": op.kind,
                    "name": op.name,
                    "weight": op.int_weight(rule),
                    "bias": op.int_bias(rule),
                    "w_scale": op.w_scale.clone(),
                    "in_scale": float(op.in_scale),
                    "in_zp": op.in_zp,
                    "out_scale": float(op.out_scale),
                    "out_zp": op.out_zp,
                    "out_lo": op.out_lo,
                    "out_hi": op.out_hi,
                    "relu": op.relu,
                    "last": op.last,
                    "stride": op.stride,
                    "padding": op.padding,
                }
            )
        elif isinstance(op, MaxPool):
            ops.append({"type": "maxpool", "kernel": op.k})
        else:
            ops.append({"type": "flatten"})
    return {"settings": asdict(net.settings), "in_scale": float(net.in_scale), "in_zp": net.in_zp, "ops": ops}


def import_state(state: dict) -> QuantNet:
    settings = QuantSettings(**state["settings"])
    ops: list[nn.Module] = []
    for d in state["ops"]:
        if d["type"] == "maxpool":
            ops.append(MaxPool(d["kernel"]))
        elif d["type"] == "flatten":
            ops.append(Flatten())
        else:
            ws = d["w_scale"].double()
            view = ws.view(-1, *([1] * (d["weight"].dim() - 1)))
            w = d["weight"].double() * view
            b = d["bias"].double() * d["in_scale"] * ws
            layer = QLayer(d["type"], w, b, d["relu"], d["last"], d["stride"], d["padding"], d["name"])
            layer.w_scale.copy_(ws)
            layer.in_scale.fill_(d["in_scale"])
            layer.out_scale.fill_(d["out_scale"])
            layer.in_zp, layer.out_zp, layer.out_lo, layer.out_hi = d["in_zp"], d["out_zp"], d["out_lo"], d["out_hi"]
            ops.append(layer)
    net = QuantNet(ops, settings)
    net.in_scale.fill_(state["in_scale"])
    net.in_zp = state["in_zp"]
    return net.eval()
