import math
import warnings

import pytest
import torch
from torch import nn

from potq.ir.rules import Rounding
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
        want = choose_exponent(conv_out.double().flatten(), 0, 255, 0, rule, Rounding.HALF_UP, "conv")
        assert float(converted.conv.scale) == 2.0**want and converted.conv.zero_point == 0
        w_want = choose_exponent(
            fused.conv[0].weight.detach().double().flatten(), -127, 127, 0, rule, Rounding.HALF_UP, "w"
        )
        assert converted.conv.weight().q_scale() == 2.0**w_want
        assert converted.quant.zero_point == 128  # the input is signed
    else:
        assert converted.conv.zero_point == 128
    assert converted(x).shape == (16, 5)


# ---- the reference report's own QConfig, verbatim -----------------------------------------------------

from enum import Enum  # noqa: E402


class CustomQConfig(Enum):  # as written in the reference report
    POWER2 = tq.QConfig(
        activation=PowerOfTwoObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric),
        weight=PowerOfTwoObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    )
    DEFAULT = None


class SeedLike(nn.Module):
    """Two conv blocks of the seed net (Conv-BN-ReLU-MaxPool) and its classifier's shape."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(torch.flatten(self.features(x), 1))))


class Stubbed(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.quant, self.net, self.dequant = tq.QuantStub(), net, tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.net(self.quant(x)))


def test_the_reference_reports_qconfig_reproduces_its_rule_and_pot_seed():
    import potq
    from tests.test_quant import randomized

    torch.manual_seed(0)
    net = randomized(SeedLike())
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    x = potq.quantize(net, images, "pot-seed", mean=mean, std=std)  # potq's pot-seed on the same weights
    graph = x.graph

    model = Stubbed(net).eval()
    tq.fuse_modules(model.net, [["features.0", "features.1", "features.2"], ["features.4", "features.5", "features.6"],
                                ["fc1", "relu"]], inplace=True)  # fmt: skip
    model.qconfig = CustomQConfig.POWER2.value  # the report's enum: torch needs the QConfig itself
    prepared = tq.prepare(model)
    with torch.no_grad():
        prepared(x.normalize(images))
    converted = tq.convert(prepared)

    def qparams(mod) -> tuple[float, int]:
        return float(mod.scale), int(mod.zero_point)

    values = [n.output for n in graph.nodes]
    conv1, conv2, fc1 = (graph.q[v] for v in (values[1], values[3], values[6]))
    for mod, q in [(converted.net.features[0], conv1), (converted.net.features[4], conv2), (converted.net.fc1, fc1)]:
        assert qparams(mod) == (q.scale, 128)  # the report: zero point 128 after every ReLU
        assert q.zero_point == 128
    assert qparams(converted.quant) == (graph.q[values[0]].scale, 128)
    macs = graph.mac_nodes()
    for mod, node in zip([converted.net.features[0], converted.net.features[4], converted.net.fc1], macs, strict=False):
        w = mod.weight()
        assert w.q_zero_point() == 0 and w.q_scale() == 2.0 ** int(node.tensors["w_exp"].reshape(-1)[0])
        assert torch.equal(w.int_repr(), node.tensors["weight"].reshape(w.shape))


def test_the_readmes_torch_ao_example_runs_as_written():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "CustomQConfig" in b)
    model = Stubbed(SeedLike()).eval()
    tq.fuse_modules(model.net, [["features.0", "features.1", "features.2"], ["fc1", "relu"]], inplace=True)
    scope = {"model": model, "calibration_batch": torch.randn(8, 3, 32, 32)}
    exec(code, scope)
    assert scope["int8_model"].net.features[0].zero_point == 128
