import pytest
import torch

from potq.cli import main
from potq.errors import UserError
from potq.golden import FLOAT32_EXACT, IntegerModel, exact_gemm
from potq.ir.bounds import analyse
from potq.ir.capture import capture
from potq.ir.graph import Graph, Node, OpType, QType
from potq.ir.tensor import normalize
from potq.quant.lower import calibrate, lower
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import simulated
from tests.test_quant import random_bn_model

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def quantized(scheme, rounding, max_shift=None, model="tiny", seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    settings = QuantSettings.parse(scheme, "mse", rounding, max_shift)
    graph = capture(random_bn_model(model, seed), (3, 32, 32), MEAN, STD)
    return lower(graph, calibrate(graph, normalize(images[:32], MEAN, STD), settings), settings), images


def compare(graph, images):
    g_rec, s_rec = {}, {}
    g_logits = IntegerModel(graph).run(images, g_rec)
    s_logits = simulated(graph)(normalize(images, MEAN, STD), s_rec)
    assert g_rec.keys() == s_rec.keys() == {n.output for n in graph.nodes}
    for v in g_rec:
        assert torch.equal(g_rec[v].long(), s_rec[v]), v
    assert torch.equal(g_logits.argmax(1), s_logits.argmax(1))
    return g_rec


@pytest.mark.parametrize("scheme", ["pot-seed", "pot-tensor", "pot-channel"])
@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
def test_golden_equals_simulated_bit_for_bit(scheme, rounding):
    graph, images = quantized(scheme, rounding)
    rec = compare(graph, images)
    assert rec["input"].min() >= 0 and rec["input"].max() <= 255


@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
@pytest.mark.parametrize("model", ["tiny", "resnet20", "mobilenet-cifar"])  # + depthwise and strided
@pytest.mark.parametrize("scheme", ["pot-channel", "pot-seed"])  # zero points 0 and 128 after ReLU
def test_float32_fast_path_gives_the_integer_paths_numbers(model, rounding, scheme):
    """Nodes whose worst case stays below 2^24 run in float32, the shift folded into the weights; the int64
    reference path agrees on every value."""
    graph, images = quantized(scheme, rounding, model=model)
    fast, slow = IntegerModel(graph), IntegerModel(graph, float32=False)
    assert fast.float32 and not slow.float32
    r_fast, r_slow = {}, {}
    fast.run(images, r_fast)
    slow.run(images, r_slow)
    for v in r_slow:
        assert torch.equal(r_fast[v], r_slow[v]), v


@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
@pytest.mark.parametrize("model", ["tiny", "resnet20"])
@pytest.mark.parametrize("scheme", ["pot-channel", "pot-seed"])
def test_simulated_float32_path_gives_the_float64_numbers(model, rounding, scheme):
    """A quantized net whose every node stays below 2^24 steps evaluates in float32, the output scale folded
    into the weights: the same codes."""
    graph, images = quantized(scheme, rounding, model=model)
    fast, slow = simulated(graph), simulated(graph)
    slow._all_float32 = False  # force the float64 path
    assert fast.all_float32()
    r_fast, r_slow = {}, {}
    x = normalize(images, MEAN, STD)
    assert torch.equal(fast(x, r_fast).argmax(1), slow(x, r_slow).argmax(1))
    for v in r_slow:
        assert torch.equal(r_fast[v], r_slow[v]), v


def test_golden_data_path_is_integer():
    graph, images = quantized("pot-channel", "half-up")
    rec = {}
    IntegerModel(graph).run(images, rec)
    assert all(not t.is_floating_point() for t in rec.values())


def test_max_shift_is_honoured_by_the_golden_model():
    graph, images = quantized("pot-channel", "half-up", max_shift=5)
    assert max(int(n.tensors["shift"].max()) for n in graph.nodes if "shift" in n.tensors) <= 5
    compare(graph, images)


def test_float_scales_are_refused():
    graph, _ = quantized("float-channel", "half-up")
    with pytest.raises(UserError, match="not powers of two"):
        IntegerModel(graph)


def linear_graph(weight: torch.Tensor, bias: torch.Tensor, in_zp: int = 0) -> Graph:
    """x (uint8, zero point in_zp) -> Linear -> int32 logits, by hand."""
    n_out, n_in = weight.shape
    node = Node(
        "fc",
        OpType.LINEAR,
        ["x"],
        "fc",
        {"requant": False},
        {"weight": weight, "bias": bias, "w_exp": torch.zeros(n_out, dtype=torch.int64)},
    )
    q = {"x": QType(in_zp, 0, 255, 1.0, 0), "fc": QType(0, -(2**31) + 1, 2**31 - 1, 1.0, 0, bits=32)}
    return Graph([node], {"x": (n_in,), "fc": (n_out,)}, "x", "fc", q, "half-up", "pot-tensor")


def test_accumulator_bound_and_exact_gemm_choice():
    graph = linear_graph(torch.full((2, 100), 127, dtype=torch.int8), torch.tensor([5, -7], dtype=torch.int32))
    assert analyse(graph) == {"fc": 255 * 127 * 100 + 7}
    assert exact_gemm(graph.nodes[0], 255).dtype == torch.float32
    big = linear_graph(torch.full((1, 1000), 127, dtype=torch.int8), torch.zeros(1, dtype=torch.int32))
    assert 255 * 127 * 1000 >= FLOAT32_EXACT
    g = exact_gemm(big.nodes[0], 255)
    assert g.dtype == torch.float32 and len(g.slices) == 2  # two exact float32 halves


def test_split_gemm_is_exact_where_one_float32_gemm_is_not():
    torch.manual_seed(0)
    w = torch.randint(100, 128, (4, 256, 3, 3), dtype=torch.int8)  # 255 * 127 * 2304 >> 2**24
    node = Node(
        "c",
        OpType.CONV,
        ["x"],
        "c",
        {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "groups": 1, "requant": False},
        {"weight": w, "bias": torch.zeros(4, dtype=torch.int32), "w_exp": torch.zeros(4, dtype=torch.int64)},
    )
    q = {"x": QType(0, 0, 255, 1.0, 0), "c": QType(0, -(2**31) + 1, 2**31 - 1, 1.0, 0, bits=32)}
    graph = Graph([node], {"x": (256, 5, 5), "c": (4, 5, 5)}, "x", "c", q, "half-up", "pot-tensor")
    model = IntegerModel(graph)
    assert len(model.gemms["c"].slices) > 1 and model.gemms["c"].dtype == torch.float32
    x = torch.randint(200, 256, (2, 256, 5, 5), dtype=torch.int32)
    exact = torch.nn.functional.conv2d(x.double(), w.double(), padding=1).to(torch.int64)
    assert torch.equal(model.run(x).to(torch.int64), exact)
    one_gemm = torch.nn.functional.conv2d(x.float(), w.float(), padding=1).to(torch.int64)
    assert not torch.equal(one_gemm, exact)  # the split is needed


def test_accumulator_overflow_is_refused_naming_the_node():
    graph = linear_graph(torch.full((1, 70_000), 127, dtype=torch.int8), torch.zeros(1, dtype=torch.int32))
    with pytest.raises(UserError, match="fc: worst-case linear accumulator .* overflows int32"):
        analyse(graph)


def test_verify_command(tiny_run, capsys):
    assert (
        main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50", "--rounding", "half-up"])
        == 0
    )
    capsys.readouterr()
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-tensor-half-up"]) == 0
    out = capsys.readouterr().out
    assert "pot-tensor-half-up: 0 mismatching values" in out and "int32 headroom" in out


def test_verify_without_quantized_model(tiny_run, capsys):
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-nothing"]) == 2
    assert "no quantized model" in capsys.readouterr().err


def test_a_label_of_potq_04_for_todays_default_rounding_names_the_new_one(tiny_run, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    capsys.readouterr()
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-tensor-half-even"]) == 2
    assert "half-even is the default rounding since potq 0.5: its label is pot-tensor" in capsys.readouterr().err


def test_count_mismatches_counts_integers_across_dtypes():
    from potq.jobs.verify import count_mismatches

    codes = torch.tensor([[0.0, 255.0], [17.0, -0.0]])
    assert count_mismatches(codes, codes.clone()) == 0
    assert count_mismatches(codes, torch.tensor([[0, 255], [17, 0]], dtype=torch.int64)) == 0
    assert count_mismatches(codes, torch.tensor([[0.0, 254.0], [17.0, 1.0]])) == 2
    big = torch.tensor([2**24 + 1], dtype=torch.int32)  # an int32 beyond float32's integers
    assert count_mismatches(big, torch.tensor([2**24], dtype=torch.int64)) == 1
