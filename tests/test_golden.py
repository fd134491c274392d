import pytest
import torch

from potq.cli import main
from potq.data import normalize
from potq.errors import UserError
from potq.golden import FLOAT32_EXACT, IntegerModel, IntOp, analyse_bounds
from potq.quant.qnet import QuantSettings, build_quantnet, calibrate, export_state
from tests.test_quant import random_bn_model

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def quantized(scheme, rounding, max_shift=None, model="tiny", seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    net = build_quantnet(random_bn_model(model, seed), QuantSettings(scheme, "mse", rounding, max_shift))
    calibrate(net, normalize(images[:32], MEAN, STD))
    return net, images


@pytest.mark.parametrize("scheme", ["pot-seed", "pot-tensor", "pot-channel"])
@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
def test_golden_equals_simulated_bit_for_bit(scheme, rounding):
    net, images = quantized(scheme, rounding)
    golden = IntegerModel.from_state(export_state(net), MEAN, STD)
    g_rec, s_rec = [], []
    g_logits = golden.run(images, g_rec)
    s_logits = net(normalize(images, MEAN, STD), s_rec)
    assert len(g_rec) == len(s_rec) == len(net.ops) + 1
    for g, s in zip(g_rec, s_rec, strict=True):
        assert torch.equal(g, s)
    assert g_rec[0].min() >= 0 and g_rec[0].max() <= 255 and g_rec[1].max() <= 255
    assert torch.equal(g_logits.argmax(1), s_logits.argmax(1))


def test_golden_data_path_is_integer():
    net, images = quantized("pot-channel", "half-up")
    rec = []
    IntegerModel.from_state(export_state(net), MEAN, STD).run(images, rec)
    assert all(not t.is_floating_point() for t in rec)


def test_max_shift_is_honoured_by_the_golden_model():
    net, images = quantized("pot-channel", "half-up", max_shift=5)
    golden = IntegerModel.from_state(export_state(net), MEAN, STD)
    assert max(int(op.shift.max()) for op in golden.ops if op.shift is not None and not op.last) <= 5
    g_rec, s_rec = [], []
    golden.run(images, g_rec)
    net(normalize(images, MEAN, STD), s_rec)
    assert all(torch.equal(g, s) for g, s in zip(g_rec, s_rec, strict=True))


def test_float_scales_are_refused():
    net, _ = quantized("float-channel", "half-up")
    with pytest.raises(UserError, match="not powers of two"):
        IntegerModel.from_state(export_state(net), MEAN, STD)


def test_accumulator_bound_and_exact_gemm_choice():
    w = torch.full((2, 100), 127, dtype=torch.int8)
    op = IntOp("linear", "fc", w, torch.tensor([5, -7], dtype=torch.int32), in_zp=0, in_lo=0, in_hi=255)
    analyse_bounds(op)
    assert op.acc_bound == 255 * 127 * 100 + 7
    assert op.gemm_dtype == torch.float32
    big = IntOp("linear", "fc", torch.full((1, 1000), 127, dtype=torch.int8), torch.zeros(1, dtype=torch.int32))
    analyse_bounds(big)
    assert 255 * 127 * 1000 >= FLOAT32_EXACT
    assert big.gemm_dtype == torch.float32 and len(big.slices) == 2  # two exact float32 halves


def test_split_gemm_is_exact_where_one_float32_gemm_is_not():
    torch.manual_seed(0)
    w = torch.randint(100, 128, (4, 256, 3, 3), dtype=torch.int8)  # 255 * 127 * 2304 >> 2**24
    op = IntOp(
        "conv",
        "c",
        w,
        torch.zeros(4, dtype=torch.int32),
        shift=torch.zeros(4, dtype=torch.int64),
        in_zp=0,
        in_lo=0,
        in_hi=255,
        padding=1,
        last=True,
    )
    analyse_bounds(op)
    assert len(op.slices) > 1 and op.gemm_dtype == torch.float32
    x = torch.randint(200, 256, (2, 256, 5, 5), dtype=torch.int32)
    model = IntegerModel(torch.zeros(1, 256, dtype=torch.int64), [op], "half-up")
    exact = torch.nn.functional.conv2d(x.double(), w.double(), padding=1).to(torch.int64)
    assert torch.equal(model._mac(op, x).to(torch.int64), exact)
    one_gemm = torch.nn.functional.conv2d(x.float(), w.float(), padding=1).to(torch.int64)
    assert not torch.equal(one_gemm, exact)  # the split is needed


def test_accumulator_overflow_is_refused_naming_the_layer():
    w = torch.full((1, 70_000), 127, dtype=torch.int8)  # 255 * 127 * 70000 > 2**31
    op = IntOp("linear", "classifier.0", w, torch.zeros(1, dtype=torch.int32))
    with pytest.raises(UserError, match="classifier.0.*overflows int32"):
        analyse_bounds(op)


def test_verify_command(tiny_run, capsys):
    assert (
        main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50", "--rounding", "half-even"])
        == 0
    )
    capsys.readouterr()
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-tensor"]) == 0
    out = capsys.readouterr().out
    assert "pot-tensor: 0 mismatching values" in out and "int32 headroom" in out


def test_verify_without_quantized_model(tiny_run, capsys):
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-nothing"]) == 2
    assert "no quantized model" in capsys.readouterr().err
