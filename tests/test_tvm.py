"""TVM as a checked consumer: potq's model.onnx imported by the Relax ONNX frontend, built for llvm, every
quantized value and the logits against the golden model (skipped where apache-tvm is not installed)."""

import builtins
import importlib.util
import json
import shutil

import numpy as np
import pytest

from potq.cli import main
from tests.test_deploy import LABEL, graph_of
from tests.test_graph import EXAMPLE

pytest.importorskip("onnx")
have_tvm = pytest.mark.skipif(
    importlib.util.find_spec("tvm") is None, reason="apache-tvm is not installed: pip install 'potq[tvm]'"
)


@have_tvm
@pytest.mark.parametrize("name,scheme", [("tiny", "pot-channel"), ("seed", "pot-tensor")])
def test_tvm_is_bit_exact_with_half_even_rounding(name, scheme):
    from potq.deploy.consumers import check_tvm

    graph, images = graph_of(name, scheme, "half-even", n=6)
    r = check_tvm(graph, images, np.zeros(len(images), dtype=np.int64), batch=4)  # a padded last batch too
    assert r["mismatches"] == 0, r["mismatch_kinds"]
    assert r["compared_values"] > len(images) * 10 and r["class_agreement"] == 1.0


@have_tvm
def test_tvm_mismatches_of_another_rounding_are_explained():
    from potq.deploy.consumers import check_tvm

    graph, images = graph_of(EXAMPLE, "pot-channel", "half-up", n=16)
    r = check_tvm(graph, images, np.zeros(len(images), dtype=np.int64))
    assert r["mismatches"] > 0 and r["unexplained"] == 0
    assert any("TVM rounds half to even" in c for k in r["mismatch_kinds"] for c in k["causes"])


@have_tvm
def test_verify_tvm_command(tiny_run, tmp_path, capfd):
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    q = ["quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "50", "--rounding", "half-even"]
    assert main(q) == 0
    assert main(["verify", "--run", str(run), "--scheme", LABEL, "--tvm"]) == 0
    out, err = capfd.readouterr()
    assert "TVM 0." in out and "third-party.log" in out
    # TVM's own C++ warnings (issue 31: "Fast mode segfaults when there are out-of-bounds indices") go to the
    # run's log, not to the user's output
    assert "Fast mode" not in err and "Warning" not in err, err
    assert "TVM, " + LABEL in (run / "third-party.log").read_text()
    saved = json.loads((run / f"deploy_{LABEL}.json").read_text())
    assert saved["tvm"]["mismatches"] == 0 and saved["tvm"]["compared_values"] > 0


def test_verify_tvm_without_tvm_is_one_line(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_tvm(name, *args, **kwargs):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tvm)
    from potq.deploy.consumers import require_tvm, tvm_installed
    from potq.errors import UserError

    assert not tvm_installed()
    with pytest.raises(UserError, match=r"pip install 'potq\[tvm\]'"):
        require_tvm()
