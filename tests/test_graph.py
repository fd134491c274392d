"""The integer graph: registry, capture, every op's integer rule by hand, golden = simulated on every
kind of net, and one kernel per op type in every interpreter."""

from pathlib import Path

import pytest
import torch
from torch import nn

from potq.cli import main
from potq.deploy.export import OP_RULES
from potq.energy import ENERGY_KERNELS
from potq.errors import UserError
from potq.golden import GOLDEN_KERNELS, IntegerModel
from potq.ir import io
from potq.ir.capture import capture
from potq.ir.graph import (
    MAC_OPS,
    OP_SPEC,
    POOL_OPS,
    RELU_FUSING_OPS,
    REQUANT_OPS,
    SHARED_QTYPE_OPS,
    SIGN_KEEPING_OPS,
    WINDOW_OPS,
    Graph,
    Node,
    OpType,
    QType,
    _window_shape,
)
from potq.ir.rules import Rounding
from potq.ir.tensor import normalize
from potq.models import ZOO, build_model
from potq.quant.lower import calibrate, lower
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import SIM_KERNELS, simulated
from tests.test_quant import randomized

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "user_resnet.py") + ":build"
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def test_every_op_type_has_a_row_in_the_op_table_and_a_kernel_in_every_interpreter():
    from potq.accel.workload import WORKLOAD_KERNELS
    from potq.deploy.c_runtime import C_KERNELS
    from potq.deploy.onnx_qdq import ONNX_KERNELS
    from potq.deploy.rtl.program import DESC_KERNELS

    assert set(OP_SPEC) == set(OpType)
    for kernels in (
        SIM_KERNELS,
        GOLDEN_KERNELS,
        ENERGY_KERNELS,
        OP_RULES,
        C_KERNELS,
        ONNX_KERNELS,
        WORKLOAD_KERNELS,
        DESC_KERNELS,
    ):
        assert set(kernels) == set(OP_SPEC)


def test_op_groups_come_from_the_op_table():
    assert MAC_OPS == (OpType.CONV, OpType.LINEAR)
    assert set(REQUANT_OPS) == {OpType.INPUT, OpType.CONV, OpType.LINEAR, OpType.ADD, OpType.AVGPOOL}
    assert set(SHARED_QTYPE_OPS) == {OpType.MAXPOOL, OpType.FLATTEN, OpType.CONCAT}
    assert {op for op, s in OP_SPEC.items() if s.arity != 1} == {OpType.ADD, OpType.CONCAT}
    assert WINDOW_OPS == (OpType.CONV, OpType.MAXPOOL, OpType.AVGPOOL)
    assert {op for op, s in OP_SPEC.items() if s.shape is _window_shape} == set(WINDOW_OPS)
    assert POOL_OPS == (OpType.MAXPOOL, OpType.AVGPOOL) == tuple(op for op in WINDOW_OPS if op not in MAC_OPS)
    assert set(SIGN_KEEPING_OPS) == {OpType.MAXPOOL, OpType.AVGPOOL, OpType.FLATTEN, OpType.CONCAT}
    assert RELU_FUSING_OPS == (OpType.CONV, OpType.LINEAR, OpType.ADD)  # this order in capture's error message


def params(name: str) -> int:
    return sum(p.numel() for p in build_model(name).parameters())


def test_registry():
    assert {"seed", "seed-slim", "seed-wide", "tiny", "resnet20", "resnet32", "resnet44", "mobilenet-cifar"} <= set(ZOO)
    assert params("seed") == 660_554 and params("seed-slim") == 164_170 and params("tiny") == 18_010
    for name, target in (("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6)):
        assert abs(params(name) / target - 1) < 0.03, name
    assert params("mobilenet-cifar") < 0.5e6


def test_seed_graph_is_the_chain():
    g = capture(build_model("seed"), (3, 32, 32), MEAN, STD)
    ops = [n.op.value for n in g.nodes]
    assert ops == [
        "input",
        "conv",
        "maxpool",
        "conv",
        "maxpool",
        "conv",
        "conv",
        "conv",
        "maxpool",
        "flatten",
        "linear",
        "linear",
        "linear",
    ]
    assert [n.act is not None for n in g.mac_nodes()] == [True] * 7 + [False]


def test_resnet_and_mobilenet_graphs():
    g = capture(build_model("resnet20"), (3, 32, 32), MEAN, STD)
    adds = [n for n in g.nodes if n.op is OpType.ADD]
    assert len(adds) == 9 and all(n.act == (0.0, float("inf")) for n in adds)
    assert sum(1 for n in g.nodes if n.op is OpType.CONV and n.attrs["stride"] == [2, 2]) == 4  # 2 convs, 2 shortcuts
    pool = next(n for n in g.nodes if n.op is OpType.AVGPOOL)
    assert pool.attrs["kernel"] == [8, 8]
    m = capture(build_model("mobilenet-cifar"), (3, 32, 32), MEAN, STD)
    dw = [n for n in m.nodes if n.op is OpType.CONV and n.attrs["groups"] > 1]
    assert len(dw) == 8 and all(n.tensors["weight"].shape[1] == 1 for n in dw)


class Unsupported(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        y = self.conv(x)
        if self.kind == "sigmoid":
            y = torch.sigmoid(y)
        elif self.kind == "relu-after-pool":
            return self.fc(torch.flatten(torch.relu(self.pool(y)), 1))
        elif self.kind == "bn-after-pool":
            return self.fc(torch.flatten(self.bn(self.pool(y)), 1))
        elif self.kind == "cat-dim2":
            y = torch.cat([y, y], dim=2)[:, :, :32]
        elif self.kind == "scale":
            y = y * 2
        elif self.kind == "control-flow" and x.sum() > 0:
            y = -y
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.mark.parametrize(
    "kind, message",
    [
        ("sigmoid", r"model node sigmoid \(test_graph.py:\d+\): function .*sigmoid\(\) is not supported"),
        ("relu-after-pool", r"relu .*potq fuses it into the conv/linear/add that feeds only it .*maxpool"),
        ("bn-after-pool", r"model node bn: BatchNorm2d is not supported"),
        ("cat-dim2", r"torch.cat on dim 2 is not supported"),
        ("scale", r"function .*mul\(\) is not supported"),
        ("control-flow", r"torch.fx can't trace"),
    ],
)
def test_unsupported_operations_are_named(kind, message):
    with pytest.raises(UserError, match=message):
        capture(Unsupported(kind), (3, 32, 32), MEAN, STD)


def test_non_power_of_two_average_pool_is_refused_naming_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(4 * 10 * 10, 2))
    graph = capture(model, (3, 32, 32), MEAN, STD)
    settings = QuantSettings()
    q = calibrate(graph, torch.randn(8, 3, 32, 32), settings)
    with pytest.raises(UserError, match=r"^2: average pooling over 9 values"):
        lower(graph, q, settings)


# ---- each new op's integer rule, by hand ------------------------------------------------------------


def kernel(op: OpType, node: Node, q: dict[str, QType], inputs: list[torch.Tensor], rounding="half-up", fast=()):
    """Run one golden kernel on hand-made codes; `fast`: the float32 paths to take ("float32", "three_pass")."""
    model = IntegerModel.__new__(IntegerModel)
    rounding = Rounding.of(rounding)
    model.graph = Graph([node], {}, "x", node.output, q, rounding, "pot-tensor")
    model.rounding, model.gemms, model._tensors, model._folded = rounding, {}, {}, {}
    model.float32 = {node.name} if "float32" in fast else set()
    model.three_pass_adds = {node.name} if "three_pass" in fast else set()
    return GOLDEN_KERNELS[op](model, node, inputs)


def test_add_aligns_different_exponents():
    # a: codes 130, 120, 124 at 2^-3 with zero point 128 -> 0.25, -1.0, -0.5
    # b: codes 10, 0, 1 at 2^-5 with zero point 0       -> 0.3125, 0, 0.03125
    # common exponent -5: a << 2 -> 8, -32, -16; sums 18, -32, -15 (units 2^-5); out 2^-4, zero point 128:
    # shift 1 -> 9, -16, -7.5 (half-up -7) -> codes 137, 112, 121
    q = {"a": QType(128, 0, 255, 2**-3, -3), "b": QType(0, 0, 255, 2**-5, -5), "y": QType(128, 0, 255, 2**-4, -4)}
    node = Node("add", OpType.ADD, ["a", "b"], "y", {}, {"align": torch.tensor([2, 0]), "shift": torch.tensor([1])})
    a, b = torch.tensor([130, 120, 124], dtype=torch.int32), torch.tensor([10, 0, 1], dtype=torch.int32)
    for fast in ((), ("float32",), ("float32", "three_pass")):  # int64, float32, three-pass float32
        assert kernel(OpType.ADD, node, q, [a, b], fast=fast).tolist() == [137, 112, 121], fast
    assert kernel(OpType.ADD, node, q, [a, b], "floor").tolist() == [137, 112, 120]  # -7.5 -> -8
    q["y"] = QType(128, 128, 255, 2**-4, -4)  # a ReLU after the add: the lower clamp at the zero point
    assert kernel(OpType.ADD, node, q, [a, b]).tolist() == [137, 128, 128]


def test_average_pool_divides_by_a_shift():
    # window 2x2 of codes 1, 2, 3, 5 (zero point 0, 2^-2): sum 11; out 2^-2: shift = 0 + log2(4) = 2 -> 2.75 -> 3
    q = {"x": QType(0, 0, 255, 0.25, -2), "y": QType(0, 0, 255, 0.25, -2)}
    node = Node(
        "pool",
        OpType.AVGPOOL,
        ["x"],
        "y",
        {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]},
        {"shift": torch.tensor([2])},
    )
    x = torch.tensor([[[[1, 2], [3, 5]]]], dtype=torch.int32)
    assert kernel(OpType.AVGPOOL, node, q, [x]).flatten().tolist() == [3]
    assert kernel(OpType.AVGPOOL, node, q, [x], "floor").flatten().tolist() == [2]


def test_depthwise_convolution_by_hand():
    # two channels, 1x1 depthwise weights 2 and -3, biases 1 and 0: acc 21 and -60; shift 1 -> 10.5 -> 11, -30 -> 0
    q = {"x": QType(0, 0, 255, 1.0, 0), "y": QType(0, 0, 255, 2.0, 1)}
    node = Node(
        "dw",
        OpType.CONV,
        ["x"],
        "y",
        {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0], "groups": 2},
        {
            "weight": torch.tensor([2, -3], dtype=torch.int8).view(2, 1, 1, 1),
            "bias": torch.tensor([1, 0], dtype=torch.int32),
            "shift": torch.tensor([1, 1]),
        },
    )
    model = IntegerModel.__new__(IntegerModel)
    from potq.golden import exact_gemm

    model.graph, model.rounding = Graph([node], {}, "x", "y", q, Rounding.HALF_UP, "pot-tensor"), Rounding.HALF_UP
    model.gemms, model._tensors, model._folded = {"dw": exact_gemm(node, 255)}, {}, {}
    x = torch.tensor([10, 20], dtype=torch.int32).view(1, 2, 1, 1)
    for float32 in (set(), {"dw"}):  # the int64 shift and the float32 path
        model.float32 = float32
        assert GOLDEN_KERNELS[OpType.CONV](model, node, [x]).flatten().tolist() == [11, 0]


# ---- golden = simulated, every value, on every kind of net ------------------------------------------


def check_bit_exact(model: nn.Module, settings: QuantSettings, n: int = 24) -> Graph:
    torch.manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    fgraph = capture(model, (3, 32, 32), MEAN, STD)
    graph = lower(fgraph, calibrate(fgraph, normalize(images, MEAN, STD), settings), settings)
    g_rec, s_rec = {}, {}
    IntegerModel(graph).run(images, g_rec)
    simulated(graph)(normalize(images, MEAN, STD), s_rec)
    for v in g_rec:
        assert torch.equal(g_rec[v].long(), s_rec[v]), v
    return graph


@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
def test_user_residual_net_is_bit_exact(rounding):
    model = randomized(build_model(EXAMPLE))
    for scheme in ("pot-channel", "pot-seed"):
        graph = check_bit_exact(model, QuantSettings.parse(scheme, rounding=rounding))
        ops = {n.op for n in graph.nodes}
        assert {OpType.ADD, OpType.CONCAT, OpType.AVGPOOL} <= ops
        cat = next(n for n in graph.nodes if n.op is OpType.CONCAT)
        assert len({(graph.q[v].zero_point, graph.q[v].exponent) for v in [*cat.inputs, cat.output]}) == 1


@pytest.mark.parametrize("name", ["resnet20", "mobilenet-cifar"])
def test_zoo_nets_are_bit_exact(name):
    graph = check_bit_exact(
        randomized(build_model(name)), QuantSettings.parse("pot-channel", rounding="half-even"), n=8
    )
    assert any("align" in n.tensors and int(n.tensors["align"].max()) > 0 for n in graph.nodes) or name != "resnet20"


def test_graph_file_round_trip():
    graph = check_bit_exact(randomized(build_model(EXAMPLE)), QuantSettings(), n=8)
    desc, tensors = io.to_dict(graph)
    again = io.from_dict(desc, tensors.__getitem__)
    assert [n.name for n in again.nodes] == [n.name for n in graph.nodes] and again.q == graph.q
    desc["version"] = 1
    with pytest.raises(ValueError, match="version 1"):
        io.from_dict(desc, tensors.__getitem__)


def test_user_model_commands(capsys, tmp_path):
    assert main(["summary", "--model", EXAMPLE]) == 0
    assert "| Conv2d | [-1, 16, 32, 32] | 1,216 |" in capsys.readouterr().out  # the 5x5 stem: 3*25*16 + 16
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef build(shape, classes):\n    return torch.nn.Sequential(torch.nn.GELU())\n")
    assert main(["energy", "--model", f"{bad}:build"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "module GELU is not supported" in err
    for spec, message in (
        (f"{tmp_path}/none.py:build", "no such file"),
        (f"{bad}:nothing", "no function"),
        ("no_such_package_xyz:build", "can't import"),
    ):
        assert main(["summary", "--model", spec]) == 2
        assert message in capsys.readouterr().err


def test_python_api(tmp_path):
    import potq

    model = randomized(build_model(EXAMPLE))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    q = potq.quantize(model, images, "pot-tensor", rounding="floor")
    g_rec, s_rec = {}, {}
    logits = q.golden().run(images, g_rec)
    q.simulated()(q.normalize(images), s_rec)
    assert logits.dtype == torch.int32 and all(torch.equal(g_rec[v].long(), s_rec[v]) for v in g_rec)
    table = q.energy()
    assert {row["type"] for row in table["layers"]} == {"Conv2d", "Linear", "Add", "AvgPool"}
    r = q.export(tmp_path / "e", images[:2])
    assert r["vectors"] == 2 and (tmp_path / "e" / "model.json").exists()
    with pytest.raises(UserError, match="uint8"):
        potq.quantize(model, images.float())
