import json
import math

import pytest
import torch
from torch import nn

from potq.cli import main
from potq.errors import UserError
from potq.ir.capture import capture
from potq.ir.graph import OpType
from potq.jobs.quantize import compare, quantize_run
from potq.models import build_model
from potq.quant.lower import calibrate, lower
from potq.quant.pipeline import layer_table
from potq.quant.scheme import SCHEMES, QuantSettings
from potq.quant.simulate import SimNet, simulated
from potq.runs.quantized import load_quantized

MEAN, STD = [0.0] * 3, [1.0] * 3


def randomized(model: nn.Module, seed: int | None = 0) -> nn.Module:
    """BatchNorm statistics and affine parameters as training would leave them, in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def random_bn_model(name="tiny", seed=0):
    torch.manual_seed(seed)
    return randomized(build_model(name), None)


def quantize(model, x, settings):
    graph = capture(model, tuple(x.shape[1:]), MEAN, STD)
    return lower(graph, calibrate(graph, x, settings), settings)


def test_batchnorm_folding_keeps_outputs():
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    model = nn.Sequential(conv, bn).eval()
    graph = capture(model, (3, 8, 8), MEAN, STD)
    assert [n.op for n in graph.nodes] == [OpType.INPUT, OpType.CONV]  # BatchNorm folded away
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(SimNet(graph).eval()(x).float(), model(x))


def test_folded_float_net_equals_the_model():
    m = random_bn_model()
    x = torch.randn(8, 3, 32, 32)
    net = SimNet(capture(m, (3, 32, 32), MEAN, STD)).eval()
    torch.testing.assert_close(net(x).float(), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_stays_close_to_float(scheme):
    m = random_bn_model()
    x = torch.randn(64, 3, 32, 32)
    graph = quantize(m, x, QuantSettings(scheme=scheme))
    ref = m(x).double()
    out = simulated(graph)(x)
    assert (out - ref).abs().max() < 0.15 * ref.abs().max()
    if SCHEMES[scheme].pot:
        assert all(q.scale == 2.0**q.exponent for q in graph.q.values())
        assert all("w_exp" in n.tensors for n in graph.mac_nodes())
    for n in graph.mac_nodes():
        assert n.tensors["weight"].dtype == torch.int8 and n.tensors["weight"].min() >= -127
        assert n.tensors["bias"].dtype == torch.int32


def test_seed_scheme_uses_zero_point_128_and_relu_clamp():
    x = torch.randn(16, 3, 32, 32)
    graph = quantize(random_bn_model(), x, QuantSettings(scheme="pot-seed"))
    hidden = [n for n in graph.mac_nodes() if n.requant]
    assert all(graph.q[n.output].zero_point == 128 and graph.q[n.output].lo == 128 for n in hidden)
    default = quantize(random_bn_model(), x, QuantSettings(scheme="pot-tensor"))
    assert all(default.q[n.output].zero_point == 0 for n in default.mac_nodes() if n.requant)
    assert default.q["input"].zero_point == 128


def test_max_shift_limits_every_shift():
    graph = quantize(random_bn_model(), torch.randn(16, 3, 32, 32), QuantSettings(scheme="pot-channel", max_shift=6))
    for row in layer_table(graph):
        if row["shift"]:
            assert max(row["shift"]) <= 6


def test_unquantizable_layer_is_named():
    m = build_model("tiny")
    m.features[2] = nn.GELU()
    with pytest.raises(UserError, match=r"features\.2: module GELU is not supported"):
        capture(m, (3, 32, 32), MEAN, STD)


def test_nan_weights_name_the_layer():
    m = random_bn_model()
    with torch.no_grad():
        m.classifier[0].weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="classifier.0"):
        quantize(m, torch.randn(4, 3, 32, 32), QuantSettings())


def test_quantize_command_end_to_end(tiny_run, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-channel", "--calib", "50"]) == 0
    r = json.loads((tiny_run / "quant_pot-channel.json").read_text())
    for key in ("scheme", "test_accuracy", "fp32_test_accuracy", "accuracy_drop", "model_size_mb", "layers"):
        assert key in r
    assert r["accuracy_drop"] == pytest.approx(100 * (r["fp32_test_accuracy"] - r["test_accuracy"]))
    assert r["model_size_mb"] == pytest.approx((tiny_run / "quant_pot-channel.pt").stat().st_size / 1e6)
    conv = next(row for row in r["layers"] if row["type"] == "conv")
    assert all(isinstance(e, int) for e in conv["weight_exponent"]) and conv["shift"] is not None
    graph, cfg = load_quantized(tiny_run, "pot-channel")
    assert cfg.model == "tiny" and len(graph.mac_nodes()) == 4


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
        (["--scheme", "int3-magic"], "invalid choice"),
        (["--calib", "0"], "--calib must be at least 1"),
        (["--calib", "100000"], "more than the"),
        (["--rounding", "stochastic"], "invalid choice"),
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


def test_a_quantized_model_of_another_run_is_refused(tiny_run, tmp_path, capsys):
    import shutil

    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    (other / "weights.pt").write_bytes((other / "weights.pt").read_bytes() + b"\0")  # other weights
    verify_file = other / "verify_pot-tensor.json"
    before = verify_file.read_text() if verify_file.exists() else None
    capsys.readouterr()
    assert main(["verify", "--run", str(other), "--scheme", "pot-tensor"]) == 2
    err = capsys.readouterr().err
    assert "made from other weights" in err and err.count("\n") == 1
    assert (verify_file.read_text() if verify_file.exists() else None) == before


@pytest.mark.parametrize(
    "name, content",
    [("config.json", "{not json"), ("config.json", "[1]"), ("config.json", '{"model": "tiny", "bogus": 1}')],
)
def test_corrupt_run_files_are_one_line(tiny_run, tmp_path, capsys, name, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / name).write_text(content)
    assert main(["quantize", "--run", str(run), "--calib", "10"]) == 2
    err = capsys.readouterr().err
    assert str(run / name) in err and err.count("\n") == 1


def test_corrupt_quantized_json_in_compare(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "quant_pot-x.json").write_text("{cut")
    assert main(["compare", "--run", str(run)]) == 2
    assert "quant_pot-x.json" in capsys.readouterr().err


def test_data_of_another_shape_is_refused(tiny_run, tmp_path, capsys):
    from tests.conftest import write_image_folder

    other = write_image_folder(tmp_path / "big", per_class=30, size=40)
    assert main(["quantize", "--run", str(tiny_run), "--calib", "5", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "images of shape [3, 40, 40]" in err and "trained on [3, 32, 32]" in err and err.count("\n") == 1


def test_every_distinct_setting_has_its_own_label_and_records_its_rule(tiny_run, tmp_path, capsys):
    import json
    import shutil

    from potq.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for p in run.glob("quant_*"):  # what other tests quantized into the shared fixture
        p.unlink()
    base = ["quantize", "--run", str(run), "--calib", "50"]
    settings = [
        ["--scheme", "pot-channel"],
        ["--scheme", "pot-channel", "--rounding", "floor"],
        ["--scheme", "pot-channel", "--exponent", "round"],
        ["--scheme", "pot-channel", "--max-shift", "12"],
        ["--scheme", "pot-seed"],
        ["--scheme", "pot-seed", "--exponent", "mse"],  # pot-seed has its own rule: the same model
    ]
    for s in settings:
        assert main([*base, *s]) == 0
    labels = sorted(p.name[len("quant_") : -len(".json")] for p in run.glob("quant_*.json"))
    assert labels == ["pot-channel", "pot-channel-floor", "pot-channel-round", "pot-channel-shift12", "pot-seed"]
    seed = json.loads((run / "quant_pot-seed.json").read_text())
    assert seed["exponent"] == "seed"  # the report's rule, not the --exponent default
    assert json.loads((run / "quant_pot-channel-round.json").read_text())["exponent"] == "round"


def test_quantize_refuses_a_bias_that_int32_cannot_hold(tiny_run, tmp_path, capsys):
    """A vanishing layer (outputs ~1e-10) gives the next layer an input scale near 2^-35; its bias would
    saturate at +-(2^31 - 1): quantize must stop naming the layer and the cause, and write nothing."""
    import shutil

    from potq.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for p in run.glob("quant_*"):
        p.unlink()
    weights = torch.load(run / "weights.pt", weights_only=True)
    weights["features.1.weight"] *= 1e-10  # BatchNorm's scale and shift of the first block
    weights["features.1.bias"] = weights["features.1.bias"].abs() * 1e-10
    torch.save(weights, run / "weights.pt")
    capsys.readouterr()
    assert main(["quantize", "--run", str(run), "--scheme", "pot-tensor", "--calib", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features.4" in err and "beyond int32" in err and "near zero" in err
    assert not list(run.glob("quant_*"))


def test_a_garbage_quantized_file_is_one_line(tiny_run, tmp_path, capsys):
    """torch.load's own error is several lines of advice: potq prints one."""
    import shutil

    from potq.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "quant_pot-channel.pt").write_bytes(b"\x80\x02crandom\nstuff\n")
    (run / "quant_pot-channel.json").write_text("{}")
    capsys.readouterr()
    assert main(["verify", "--run", str(run), "--scheme", "pot-channel"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "quant_pot-channel.pt" in err


def test_schemes_sharing_calibration_statistics_get_the_same_models():
    from potq.ir import io
    from potq.models import build_model
    from potq.quant.pipeline import quantize_graph

    model = randomized(build_model("tiny"))
    x = torch.randn(64, 3, 32, 32)
    mean, std = [0.5] * 3, [0.25] * 3
    cache: dict = {}
    for scheme in ("pot-seed", "pot-tensor", "pot-channel"):
        settings = QuantSettings(scheme)
        _, shared = quantize_graph(model, (3, 32, 32), mean, std, x, settings, cache)
        _, alone = quantize_graph(model, (3, 32, 32), mean, std, x, settings)
        d1, t1 = io.to_dict(shared)
        d2, t2 = io.to_dict(alone)
        assert d1 == d2 and all(torch.equal(t1[k], t2[k]) for k in t1)
    assert len(cache) == 1  # collected once


def test_calibration_stats_fast_path_draws_what_the_masked_path_draws():
    """A finite batch skips the finite-value mask (issue 22): the same min, max and sample as masking would
    give, in any memory layout; a batch with inf takes the masked path, and NaN is still refused."""
    from potq.quant.lower import Stats

    x = torch.randn(4, 3, 8, 8) * 5
    fast = Stats(keep=50)
    fast.add(x.contiguous(memory_format=torch.channels_last), "x", torch.Generator().manual_seed(1))
    idx = torch.randint(0, x.numel(), (50,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(fast.sample(), x.flatten()[idx].double())
    assert (fast.min, fast.max) == (float(x.min()), float(x.max()))
    with_inf = x.clone()
    with_inf[0, 0, 0, 0] = float("inf")
    masked = Stats(keep=50)
    masked.add(with_inf, "x", torch.Generator().manual_seed(1))
    assert masked.max == float(x.flatten()[1:].max()) and torch.isfinite(masked.sample()).all()
    with_inf[0, 0, 0, 1] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        Stats().add(with_inf, "x", torch.Generator())


def test_calibration_sample_is_drawn_in_logical_order_in_any_layout():
    """Stats.add gathers its sample with torch.take (issue 22): the values that indexing by unravelled
    logical positions gives, in a contiguous, a channels-last and a strided (non-dense) tensor."""
    from potq.quant.lower import Stats

    base = torch.randn(3, 8, 6, 5)
    for x in (base, base.contiguous(memory_format=torch.channels_last), base[:, ::2].transpose(2, 3)):
        st = Stats(keep=40)
        st.add(x, "x", torch.Generator().manual_seed(2))
        idx = torch.randint(0, x.numel(), (40,), generator=torch.Generator().manual_seed(2))
        assert torch.equal(st.sample(), x[torch.unravel_index(idx, x.shape)].double())


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("exponent", ["ceil", "round", "mse"])
def test_float32_calibration_gives_the_float64_models(scheme, exponent):
    """Calibration runs the float graph in float32, as the FP32 model computes (issue 22); the float64 path
    it replaced gives the same integer graph on a model with BatchNorm, for every scheme and exponent rule,
    while its statistics do differ in the last bits (so the two paths really are different)."""
    from potq.ir import io
    from potq.quant.lower import collect_stats

    model = random_bn_model("tiny", seed=3)
    x = torch.randn(96, 3, 32, 32)
    graph = capture(model, (3, 32, 32), [0.5] * 3, [0.25] * 3)
    s32, s64 = collect_stats(graph, x, batch=40), collect_stats(graph, x, batch=40, dtype=torch.float64)
    assert any(s32[v].max != s64[v].max for v in s32)
    for v in s32:  # the float32 values are the float64 ones to float32's precision
        assert math.isclose(s32[v].max, s64[v].max, rel_tol=1e-5, abs_tol=1e-5)
    settings = QuantSettings(scheme, exponent=exponent)
    g32 = lower(graph, calibrate(graph, x, settings, s32), settings)
    g64 = lower(graph, calibrate(graph, x, settings, s64), settings)
    if not SCHEMES[scheme].pot:  # float scales take max|x| itself: equal to float32's precision
        assert all(math.isclose(g32.q[v].scale, g64.q[v].scale, rel_tol=1e-5) for v in g32.q)
        return
    d32, t32 = io.to_dict(g32)
    d64, t64 = io.to_dict(g64)
    assert d32 == d64 and all(torch.equal(t32[k], t64[k]) for k in t32)


@pytest.mark.parametrize("exponent", ["ceil", "round"])
def test_closed_form_activation_exponent_is_choose_exponent(exponent):
    """activation_scale skips the sample for the closed-form exponent rules: the exponent choose_exponent
    gives with the sample, for signed and unsigned zero points, on ranges across powers of two."""
    from potq.quant.arith import choose_exponent
    from potq.quant.lower import Stats
    from potq.quant.scheme import A_MAX, A_MIN, activation_scale

    settings = QuantSettings("pot-tensor", exponent=exponent)
    for scale in (1e-3, 0.37, 1.0, 2.0, 255.0, 3e4):
        st = Stats()
        st.add(torch.randn(2, 3, 4, 4) * scale, "x", torch.Generator().manual_seed(0))
        for zp in (0, 128):
            e = choose_exponent(st.sample(), A_MIN, A_MAX, zp, exponent, settings.rounding, "", max_abs=st.max_abs)
            assert activation_scale(st, zp, settings) == (2.0**e, e)


def test_range_only_statistics_give_the_same_models_and_refuse_a_sample():
    """Rules that read only min and max skip the sample (issue 22): the same ranges and the same QTypes as
    with it, for every scheme but mse; asking such statistics for a sample is an error, and a shared cache
    collects again (with the sample) when an mse scheme comes after one that needed none."""
    from potq.quant.lower import collect_stats
    from potq.quant.pipeline import quantize_graph

    model = random_bn_model("tiny", seed=4)
    x = torch.randn(48, 3, 32, 32)
    graph = capture(model, (3, 32, 32), MEAN, STD)
    full, ranges = collect_stats(graph, x, batch=20), collect_stats(graph, x, batch=20, sample=False)
    assert all((full[v].min, full[v].max) == (ranges[v].min, ranges[v].max) for v in full)
    with pytest.raises(ValueError, match="without a sample"):
        ranges[graph.output].sample()
    for scheme in SCHEMES:
        settings = QuantSettings(scheme, exponent="round")
        assert calibrate(graph, x, settings, full) == calibrate(graph, x, settings, ranges)
    cache: dict = {}
    quantize_graph(model, (3, 32, 32), MEAN, STD, x, QuantSettings("pot-tensor"), cache)
    mse = QuantSettings("pot-tensor", exponent="mse")
    _, shared = quantize_graph(model, (3, 32, 32), MEAN, STD, x, mse, cache)
    _, alone = quantize_graph(model, (3, 32, 32), MEAN, STD, x, mse)
    assert shared.q == alone.q and all(st.keep for st in next(iter(cache.values())).values())


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.tanh(self.conv(x)).flatten(1)


def test_capture_records_source_lines_only_for_its_errors():
    """capture traces without stack traces (recording them imports torch._dynamo: seconds per process, issue
    22) and traces again with them only to word an error: the same graphs, and the message names the line."""
    import inspect

    from potq.ir import capture as cap
    from potq.ir.io import to_dict

    for name in ("tiny", "resnet20"):
        model = random_bn_model(name)
        fast = cap._Builder(cap._traced(model, (3, 32, 32), False), (3, 32, 32), MEAN, STD).build()
        slow = cap._Builder(cap._traced(model, (3, 32, 32), True), (3, 32, 32), MEAN, STD).build()
        (d1, t1), (d2, t2) = to_dict(fast), to_dict(slow)
        assert d1 == d2 and all(torch.equal(t1[k], t2[k]) for k in t1)
    line = inspect.getsourcelines(_Tanh.forward)[1] + 1
    with pytest.raises(UserError, match=rf"model node tanh \(test_quant.py:{line}\): function torch.tanh\(\)"):
        capture(_Tanh(), (3, 8, 8), MEAN, STD)
