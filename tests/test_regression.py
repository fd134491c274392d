"""Regression: the integer graph reproduces potq 0.1's export of a small trained seed model exactly.

tests/fixtures/seed_regression holds the trained FP32 weights (1 epoch on 2,000 images of the JPEG copy
of CIFAR-10) and the hashes of every integer tensor, shift and test vector that potq 0.1's chain code
exported from it (pot-channel with half-up rounding, pot-seed with floor). The redesigned path, run on
the same weights and data, must export the same integers.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from potq.cli import main
from potq.quant.rules import QuantSettings

FIXTURE = Path(__file__).parent / "fixtures" / "seed_regression"


def digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a).astype(np.int64))
    return f"{list(a.shape)}:" + hashlib.sha256(a.tobytes()).hexdigest()[:32]


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory, real_data):
    run = tmp_path_factory.mktemp("regression") / "run"
    shutil.copytree(FIXTURE, run)
    return run


@pytest.mark.parametrize("scheme", ["pot-channel", "pot-seed"])
def test_export_matches_potq_0_1(fixture_run, real_data, scheme, tmp_path):
    expected = json.loads((FIXTURE / "expected.json").read_text())[scheme]
    data = ["--data", str(real_data)]
    args = ["--run", str(fixture_run), "--scheme", scheme]
    assert main(["quantize", *args, "--calib", "1000", "--rounding", expected["rounding"], *data]) == 0
    label = QuantSettings.parse(scheme, rounding=expected["rounding"]).label()
    out = tmp_path / "export"
    assert (
        main(["export", "--run", str(fixture_run), "--scheme", label, "--out", str(out), "--vectors", "4", *data]) == 0
    )
    model = json.loads((out / "model.json").read_text())
    tensors = np.load(out / "weights.npz")
    # potq 0.1 exported the first 4 test images; potq now draws its vectors across the classes, so
    # the same golden model runs on those 4 images here
    from potq.data import load_dataset
    from potq.deploy.export import write_export
    from potq.runs.quantized import load_quantized

    graph, _ = load_quantized(fixture_run, label)
    ds = load_dataset(str(real_data))
    first = tmp_path / "first4"
    write_export(graph, first, np.array(ds.test_x[:4]), np.array(ds.test_y[:4]), [str(c) for c in range(10)])
    vectors = np.load(first / "vectors.npz")
    exported = json.loads((out / "model.json").read_text())["vectors"]["test_indices"]
    assert len(exported) == 4 and len({int(ds.test_y[i]) for i in exported}) == 4  # four classes
    nodes = model["nodes"]
    assert digest(tensors[nodes[0]["tensors"]["lut"]]) == expected["lut"]
    macs = [n for n in nodes if n["op"] in ("conv", "linear")]
    assert [n["name"] for n in macs] == [layer["name"] for layer in expected["layers"]]
    for node, layer in zip(macs, expected["layers"], strict=True):
        refs = node["tensors"]
        assert digest(tensors[refs["weight"]]) == layer["weight"], node["name"]
        assert digest(tensors[refs["bias"]]) == layer["bias"], node["name"]
        if layer["shift"] is not None:
            assert digest(tensors[refs["shift"]]) == layer["shift"], node["name"]
    assert digest(vectors[model["input"]]) == expected["vectors_input"]
    got = [digest(vectors[n["output"]]) for n in nodes]
    assert got == expected["vectors"]
    assert digest(vectors[model["output"]]) == expected["logits"]
    quant = json.loads((fixture_run / f"quant_{label}.json").read_text())
    assert quant["test_accuracy"] == expected["test_accuracy"]
