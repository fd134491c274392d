import math
import warnings

import pytest
import torch
from torch import nn

from potq.quant import PowerOfTwoObserver
from potq.quant.arith import choose_exponent

warnings.filterwarnings("ignore", category=DeprecationWarning)
tq = pytest.importorskip("torch.ao.quantization")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(torch.flatten(x, 1)))


def is_pow2(s: float) -> bool:
    return math.frexp(s)[0] == 0.5


@pytest.mark.parametrize("rule", ["mse", "ceil", "seed"])
def test_qconfig_prepare_calibrate_convert_gives_power_of_two_scales(rule):
    torch.manual_seed(0)
    model = Small().eval()
    fused = tq.fuse_modules(model, [["conv", "relu"]])  # ReLU inside the conv, as potq does
    fused.qconfig = tq.QConfig(
        activation=PowerOfTwoObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric, rule=rule),
        weight=PowerOfTwoObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, rule=rule),
    )
    prepared = tq.prepare(fused)
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        prepared(x)
        conv_out = fused.conv(x)
    converted = tq.convert(prepared)
    scales = [
        converted.quant.scale,
        converted.conv.scale,
        converted.fc.scale,
        converted.conv.weight().q_scale(),
        converted.fc.weight().q_scale(),
    ]
    assert all(is_pow2(float(s)) for s in scales)
    assert converted.conv.weight().int_repr().min() >= -127
    if rule != "seed":
        # the same scale as potq's own rule on the same data
        want = choose_exponent(conv_out.double().flatten(), 0, 255, 0, rule, "half-up", "conv")
        assert float(converted.conv.scale) == 2.0**want and converted.conv.zero_point == 0
        w_want = choose_exponent(fused.conv[0].weight.detach().double().flatten(), -127, 127, 0, rule, "half-up", "w")
        assert converted.conv.weight().q_scale() == 2.0**w_want
        assert converted.quant.zero_point == 128  # the input is signed
    else:
        assert converted.conv.zero_point == 128
    assert converted(x).shape == (16, 5)
