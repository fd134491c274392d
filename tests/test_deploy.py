"""The exports' consumers: the QDQ ONNX model in onnxruntime and the C99 runtime compiled with gcc, each
against the golden model, on every op type and every rounding rule."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from potq.cli import main
from potq.data import load_dataset
from potq.deploy.c_runtime import C_KERNELS
from potq.deploy.consumers import check_c, check_onnx
from potq.deploy.onnx_qdq import ONNX_KERNELS, OPSET, to_onnx
from potq.ir.capture import capture
from potq.ir.graph import Graph, OpType
from potq.ir.tensor import normalize
from potq.models import build_model
from potq.quant.lower import calibrate, lower
from potq.quant.scheme import QuantSettings
from tests.test_graph import EXAMPLE, MEAN, STD
from tests.test_quant import randomized

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (CI installs gcc)")
ROUNDINGS = ["half-up", "half-even", "floor"]
LABEL = "pot-channel"  # pot-channel quantized with --rounding half-even: the default rule, no label part


def graph_of(
    name: str, scheme: str = "pot-channel", rounding: str = "half-even", n: int = 16
) -> tuple[Graph, np.ndarray]:
    torch.manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    fgraph = capture(randomized(build_model(name)), (3, 32, 32), MEAN, STD)
    settings = QuantSettings.parse(scheme, rounding=rounding)
    return lower(fgraph, calibrate(fgraph, normalize(images, MEAN, STD), settings), settings), images.numpy()


def test_every_op_type_has_an_onnx_and_a_c_kernel():
    for kernels in (ONNX_KERNELS, C_KERNELS):
        assert set(kernels) == set(OpType)


# ---- ONNX ---------------------------------------------------------------------------------------


def test_onnx_is_standard_power_of_two_qdq():
    graph, _ = graph_of(EXAMPLE)
    model = to_onnx(graph)  # runs onnx.checker (full) and strict shape inference itself
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import] == [OPSET]
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "Add", "AveragePool", "Concat"} <= ops
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = [v for k, v in inits.items() if k.endswith(".scale")]
    assert scales and all(np.all(np.log2(s) == np.round(np.log2(s))) for s in scales)  # exact powers of two
    conv = next(n for n in graph.nodes if n.op is OpType.CONV)
    w = inits[f"{conv.name}.weight"]  # uint8 holding w + 128, zero point 128: the golden model's integers
    assert w.dtype == np.uint8 and inits[f"{conv.name}.bias"].dtype == np.int32
    assert np.array_equal(w.astype(np.int64) - 128, conv.tensors["weight"].numpy())
    assert np.all(inits[f"{conv.name}.weight.zero_point"] == 128)
    old = {t.name: onnx.numpy_helper.to_array(t) for t in to_onnx(graph, weights="int8").graph.initializer}
    assert old[f"{conv.name}.weight"].dtype == np.int8 and np.all(old[f"{conv.name}.weight.zero_point"] == 0)
    assert inits[f"{conv.name}.weight.scale"].shape == (conv.tensors["weight"].shape[0],)  # per channel
    dq = next(n for n in model.graph.node if n.input and n.input[0] == f"{conv.name}.weight")
    assert dq.op_type == "DequantizeLinear" and dq.attribute[0].name == "axis" and dq.attribute[0].i == 0
    assert inits[f"{graph.nodes[1].output}.zero_point"].dtype == np.uint8


@pytest.mark.parametrize(
    "name,scheme",
    [("seed", "pot-channel"), ("seed", "pot-seed"), ("resnet20", "pot-tensor"), ("mobilenet-cifar", "pot-channel"),
     (EXAMPLE, "pot-channel"), (EXAMPLE, "pot-seed")],
)  # fmt: skip
def test_onnxruntime_is_bit_exact_with_half_even_rounding(name, scheme):
    graph, images = graph_of(name, scheme)
    r = check_onnx(graph, images, np.zeros(len(images), dtype=np.int64))
    assert r["mismatches"] == 0, r["mismatch_kinds"]
    assert r["compared_values"] == len(images) * sum(math.prod(graph.shapes[n.output]) for n in graph.nodes)
    assert r["class_agreement"] == 1.0


def test_onnxruntime_mismatches_of_another_rounding_are_explained():
    graph, images = graph_of(EXAMPLE, "pot-channel", "half-up", n=32)
    r = check_onnx(graph, images, np.zeros(len(images), dtype=np.int64))
    assert r["mismatches"] > 0 and r["unexplained"] == 0
    assert any("half to even" in c for k in r["mismatch_kinds"] for c in k["causes"])


def test_a_broken_onnx_kernel_shows_as_unexplained_mismatches(monkeypatch):
    from potq.deploy import onnx_qdq

    graph, images = graph_of(EXAMPLE, "pot-seed")  # zero point 128: the clamp at ReLU's 0 is not the type's

    def add_without_relu(b, n):  # forget the fused activation clamp
        a, c = (b.dequantized(v) for v in n.inputs)
        scale, zp = b.qparams(n.output)
        b.node(
            "QuantizeLinear", [b.node("Add", [a, c], f"{n.output}.real", n.name), scale, zp], n.output, f"{n.name}.q"
        )

    monkeypatch.setitem(onnx_qdq.ONNX_KERNELS, OpType.ADD, add_without_relu)
    r = check_onnx(graph, images, np.zeros(len(images), dtype=np.int64))
    assert r["unexplained"] > 0


# ---- C ------------------------------------------------------------------------------------------


@needs_cc
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("name", ["seed", EXAMPLE])
def test_c_runtime_is_bit_exact(name, rounding):
    graph, images = graph_of(name, "pot-channel" if name == "seed" else "pot-seed", rounding, n=12)
    r = check_c(graph, images)
    assert (r["vectors"], r["logit_mismatches"], r["class_mismatches"], r["exit_status"]) == (12, 0, 0, 0)


@needs_cc
def test_c_runtime_under_address_and_undefined_behaviour_sanitizers():
    graph, images = graph_of("mobilenet-cifar", "pot-channel", "half-up", n=4)  # depthwise, strides, avgpool
    r = check_c(graph, images, sanitize=True)
    assert (r["logit_mismatches"], r["exit_status"]) == (0, 0)


@needs_cc
def test_c_runtime_catches_a_wrong_integer(tmp_path):
    from potq.deploy import consumers as deploy_check

    graph, images = graph_of(EXAMPLE, n=4)
    from potq.golden import IntegerModel

    logits = IntegerModel(graph).run(torch.from_numpy(images)).numpy().astype(np.int32)
    logits[2, 3] += 1  # a golden model that differs by one
    from potq.deploy.c_runtime import c_files
    from potq.deploy.export import build_model_json, c_header

    desc, arrays = build_model_json(graph, IntegerModel(graph), (3, 32, 32), [])
    (tmp_path / "model.h").write_text(c_header(desc, arrays))
    for name, text in c_files(graph, images, logits).items():
        (tmp_path / name).write_text(text)
    r = deploy_check.run_c(deploy_check.build_c(tmp_path))
    assert (r["logit_mismatches"], r["exit_status"]) == (1, 1)


# ---- the commands -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("deploy") / "tiny"
    shutil.copytree(tiny_run, run)
    assert (
        main(["quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "50", "--rounding", "half-even"])
        == 0
    )
    return run


@needs_cc
def test_export_formats_and_verify_consumers(quantized_run, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["export", "--run", str(quantized_run), "--scheme", LABEL, "--format", "all", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "potq_model.c", "potq_model.h", "main.c", "potq_vectors.h", "model.h", "hex", "rtl"} <= names
    desc = json.loads((out / "model.json").read_text())
    assert desc["formats"] == ["hw", "c", "onnx", "rtl"] and desc["onnx"]["opset"] == OPSET
    assert desc["onnx"]["weights"] == "uint8"  # exact in onnxruntime on every CPU (tests/test_saturation.py)
    src = desc["quantized_model"]  # which quantized model this is, and the weights it came from
    assert (src["label"], src["scheme"], src["rounding"], src["exponent"]) == (
        LABEL,
        "pot-channel",
        "half-even",
        "ceil",
    )
    assert len(src["weights_sha256"]) == 64 and src["calib_images"] == 50
    from potq.deploy.consumers import build_c, run_c

    assert run_c(build_c(out))["logit_mismatches"] == 0  # the exported folder builds and passes as shipped
    c_only = tmp_path / "c"
    assert main(["export", "--run", str(quantized_run), "--scheme", LABEL, "--format", "c", "--out", str(c_only)]) == 0
    assert not (c_only / "model.onnx").exists() and not (c_only / "hex").exists()
    assert main(["verify", "--run", str(quantized_run), "--scheme", LABEL, "--onnx", "--c", "--c-vectors", "20"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime: 0 mismatching values" in text and "0 mismatching logits in 20 test images" in text
    saved = json.loads((quantized_run / f"deploy_{LABEL}.json").read_text())
    assert saved["onnx"]["mismatches"] == 0 and saved["c"]["logit_mismatches"] == 0
    from potq.data import vector_indices

    labels = np.array(load_dataset(json.loads((quantized_run / "config.json").read_text())["data"]).test_y)
    assert saved["c"]["test_indices"] == vector_indices(labels, 20).tolist()  # the export's class-spread draw
    assert len(set(labels[saved["c"]["test_indices"]])) == len(set(labels))


def test_export_format_bad_input(quantized_run, tmp_path, capsys, monkeypatch):
    base = ["export", "--run", str(quantized_run), "--scheme", LABEL]
    assert main([*base, "--format", "verilog", "--out", str(tmp_path / "x")]) == 2
    assert "--format 'verilog': choose from hw, c, onnx, rtl, all" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main([*base, "--format", "c", "--out", str(afile)]) == 2
    assert afile.read_text() == "mine"
    assert main(["quantize", "--run", str(quantized_run), "--scheme", "float-channel", "--calib", "50"]) == 0
    assert (
        main(
            [
                "export",
                "--run",
                str(quantized_run),
                "--scheme",
                "float-channel",
                "--format",
                "c",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 2
    )
    assert "not powers of two" in capsys.readouterr().err
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main([*base, "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'potq[onnx]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not list(Path(tmp_path).glob(".o.*"))
