import json

import pytest
import torch
from torch import nn

from potq.cli import main
from potq.errors import UserError
from potq.models import build_model
from potq.quant.pipeline import compare, load_quantized, quantize_run
from potq.quant.qnet import (
    SCHEMES,
    QuantSettings,
    build_quantnet,
    calibrate,
    export_state,
    fold_batchnorm,
    import_state,
)


def random_bn_model(name="tiny", seed=0):
    torch.manual_seed(seed)
    m = build_model(name).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m


def test_batchnorm_folding_keeps_outputs():
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.eval()
    x = torch.randn(4, 3, 8, 8)
    w, b = fold_batchnorm(conv, bn)
    torch.testing.assert_close(nn.functional.conv2d(x, w.float(), b.float(), padding=1), bn(conv(x)))


def test_folded_float_net_equals_the_model():
    m = random_bn_model()
    net = build_quantnet(m, QuantSettings())
    net.eval()
    net.quantize = False
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(net(x).float(), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_stays_close_to_float(scheme):
    m = random_bn_model()
    x = torch.randn(64, 3, 32, 32)
    net = build_quantnet(m, QuantSettings(scheme=scheme))
    calibrate(net, x)
    ref = m(x).double()
    out = net(x)
    assert (out - ref).abs().max() < 0.15 * ref.abs().max()
    state = export_state(net)
    if SCHEMES[scheme].pot:
        scales = [state["in_scale"]] + [float(s) for op in state["ops"] if "w_scale" in op for s in op["w_scale"]]
        assert all(s == 2.0 ** round(torch.log2(torch.tensor(s)).item()) for s in scales)
    for op in state["ops"]:
        if "weight" in op:
            assert op["weight"].dtype == torch.int8 and op["weight"].min() >= -127
            assert op["bias"].dtype == torch.int32
    assert torch.equal(import_state(state)(x), out)


def test_seed_scheme_uses_zero_point_128_and_relu_clamp():
    net = build_quantnet(random_bn_model(), QuantSettings(scheme="pot-seed"))
    calibrate(net, torch.randn(16, 3, 32, 32))
    hidden = [layer for layer in net.layers if not layer.last]
    assert all(layer.out_zp == 128 and layer.out_lo == 128 for layer in hidden)
    default = build_quantnet(random_bn_model(), QuantSettings(scheme="pot-tensor"))
    calibrate(default, torch.randn(16, 3, 32, 32))
    assert all(layer.out_zp == 0 for layer in default.layers if not layer.last) and default.in_zp == 128


def test_max_shift_limits_every_shift():
    net = build_quantnet(random_bn_model(), QuantSettings(scheme="pot-channel", max_shift=6))
    calibrate(net, torch.randn(16, 3, 32, 32))
    from potq.quant.pipeline import layer_table

    for row in layer_table(net):
        if row["shift"]:
            assert max(row["shift"]) <= 6


def test_unquantizable_layer_is_named():
    m = build_model("tiny")
    m.features[2] = nn.Dropout()
    with pytest.raises(UserError, match=r"features\.2 \(Dropout\)"):
        build_quantnet(m, QuantSettings())


def test_nan_weights_name_the_layer():
    m = random_bn_model()
    with torch.no_grad():
        m.classifier[0].weight[0, 0] = float("nan")
    net = build_quantnet(m, QuantSettings())
    with pytest.raises(UserError, match="classifier.0"):
        calibrate(net, torch.randn(4, 3, 32, 32))


def test_quantize_command_end_to_end(tiny_run, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-channel", "--calib", "50"]) == 0
    r = json.loads((tiny_run / "quant_pot-channel.json").read_text())
    for key in ("scheme", "test_accuracy", "fp32_test_accuracy", "accuracy_drop", "model_size_mb", "layers"):
        assert key in r
    assert r["accuracy_drop"] == pytest.approx(100 * (r["fp32_test_accuracy"] - r["test_accuracy"]))
    assert r["model_size_mb"] == pytest.approx((tiny_run / "quant_pot-channel.pt").stat().st_size / 1e6)
    assert all(isinstance(e, int) for e in r["layers"][0]["weight_exponent"])
    assert r["layers"][0]["shift"] is not None
    state, cfg = load_quantized(tiny_run, "pot-channel")
    assert cfg.model == "tiny" and len(import_state(state).layers) == 4


def test_qat_and_compare(tiny_run, capsys):
    quantize_run(tiny_run, QuantSettings(scheme="pot-seed"), calib=50)
    r = quantize_run(tiny_run, QuantSettings(scheme="pot-tensor"), calib=50, qat_epochs=1)
    assert r["label"] == "pot-tensor-qat" and r["qat_epochs"] == 1
    assert r["test_accuracy"] > 0.8
    table = compare(tiny_run)
    assert "| FP32 |" in table and "| pot-tensor-qat |" in table and "| pot-seed |" in table
    assert (tiny_run / "compare.md").exists() and (tiny_run / "compare.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheme", "int3-magic"], "unknown scheme"),
        (["--calib", "0"], "--calib must be at least 1"),
        (["--calib", "100000"], "more than the"),
        (["--rounding", "stochastic"], "unknown rounding"),
    ],
)
def test_quantize_bad_input(tiny_run, args, message, capsys):
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["quantize", "--run", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_quantize_run_without_weights(tmp_path, capsys):
    assert main(["quantize", "--run", str(tmp_path)]) == 2
    assert "no trained weights" in capsys.readouterr().err
