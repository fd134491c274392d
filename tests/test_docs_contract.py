"""Issue 31, item 4: what the docs state about the files and the data, checked against the code that makes them:
the graph format's version (no potq version that goes stale), the ONNX weights' type and zero point, potq_pkg.sv
shipped by the RTL export, how each hex file reads, the worst-case accumulator's max |x - zp| over [lo, hi], and
the order of an image folder's test set."""

import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from potq import __version__
from potq.ir import io

ROOT = Path(__file__).resolve().parents[1]
GRAPH_FORMAT = (ROOT / "docs" / "graph-format.md").read_text()
RTL = (ROOT / "docs" / "rtl.md").read_text()


def test_the_graph_format_doc_states_the_version_potq_reads():
    assert GRAPH_FORMAT.splitlines()[0].endswith(f"(`{io.FORMAT}`, version {io.VERSION})")
    assert f"reads version {io.VERSION} only (`potq.ir.io.VERSION`" in GRAPH_FORMAT
    # no statement about what "potq 0.N" does: it went stale once (potq 0.2 in potq 0.4)
    assert not re.search(r"potq \d+\.\d+ (reads|writes)", GRAPH_FORMAT)
    assert not re.search(r"\(potq \d+\.\d+\b", GRAPH_FORMAT), "a heading tied to a potq version"
    from potq.deploy.export import FORMAT_NOTE

    assert FORMAT_NOTE.startswith(f"{io.FORMAT} version {io.VERSION}:") and __version__


def test_the_onnx_section_states_the_weights_potq_writes():
    pytest.importorskip("onnx")
    from onnx import numpy_helper

    from potq.deploy.formats import WEIGHT_FORMS
    from potq.deploy.onnx_qdq import UINT8_WEIGHT_ZERO_POINT, to_onnx
    from tests.test_deploy import graph_of

    assert WEIGHT_FORMS[0] == "uint8" and UINT8_WEIGHT_ZERO_POINT == 128
    assert "weights are **uint8** holding `w + 128` with zero point 128 (the default" in GRAPH_FORMAT
    assert "n.weight` (int8)" not in GRAPH_FORMAT
    graph, _ = graph_of("tiny", "pot-channel", "half-even", n=2)
    inits = {t.name: numpy_helper.to_array(t) for t in to_onnx(graph).graph.initializer}
    node = graph.mac_nodes()[0].name
    weight, zero = inits[f"{node}.weight"], inits[f"{node}.weight.zero_point"]
    assert weight.dtype == np.uint8 and zero.dtype == np.uint8 and (zero == 128).all()
    assert (weight.astype(np.int16) - 128 == graph.mac_nodes()[0].tensors["weight"].numpy()).all()


def test_the_rtl_export_ships_potq_pkg_as_the_doc_says(tmp_path):
    from potq.deploy.export import write_export
    from potq.deploy.rtl.export import BUILD
    from tests.test_deploy import graph_of

    row = next(line for line in RTL.splitlines() if line.startswith("| `potq_pkg.sv`"))
    assert "never shipped" not in row and "ships it in `rtl/`" in row
    graph, images = graph_of("tiny", "pot-channel", "half-up", n=1)
    write_export(graph, tmp_path / "x", images, np.zeros(1, dtype=np.int64), ["0"] * 3, formats=("rtl",))
    assert (tmp_path / "x" / "rtl" / "potq_pkg.sv").is_file() and "potq_pkg.sv" in BUILD


def test_hex_encoding_says_the_input_table_reads_unsigned(tmp_path):
    import json

    from potq.deploy.export import write_export
    from tests.test_deploy import graph_of

    graph, images = graph_of("tiny", "pot-channel", "half-up", n=1)
    write_export(graph, tmp_path / "x", images, np.zeros(1, dtype=np.int64), ["0"] * 3, formats=("hw",))
    files = json.loads((tmp_path / "x" / "model.json").read_text())["tensor_files"]
    assert files["input.lut"]["hex_encoding"].startswith("unsigned")
    assert all(f["hex_encoding"].startswith("two's complement") for k, f in files.items() if f["dtype"] != "uint8")
    assert "`unsigned` for the uint8 input table" in GRAPH_FORMAT


def test_the_accumulator_bound_takes_max_x_minus_zp_over_the_qtypes_range():
    from potq.ir.bounds import input_range
    from potq.ir.graph import QType

    assert "`x` in `[lo, hi]`: `max(hi - zp, zp - lo)`" in GRAPH_FORMAT

    class G:  # input_range reads graph.q only
        q = {"a": QType(0, 0, 255, 1.0, 0, 8), "b": QType(128, 0, 255, 1.0, 0, 8), "c": QType(0, 0, 192, 1.0, 0, 8)}

    assert [input_range(G, v) for v in "abc"] == [255, 128, 192]


def test_an_image_folders_test_set_is_in_the_documented_order(tmp_path):
    """Class folders in sorted order (the labels'), files by name within each: plain and archived alike, even
    where a class name is another's prefix (`cat`, `cat-big`), which a sort of whole member names reorders."""
    from potq.data import load_dataset
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "f", per_class=4, classes=("cat-big", "Dog", "cat"))
    for name in ("img10.png", "img2.png"):  # code-point order: img10 before img2
        (folder / "test" / "Dog" / name).write_bytes((folder / "test" / "Dog" / "0000.png").read_bytes())
    archive = tmp_path / "f.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=f"data/{split}")
    plain, packed = load_dataset(str(folder), tmp_path / "c1"), load_dataset(str(archive), tmp_path / "c2")
    assert plain.classes == packed.classes == ["Dog", "cat", "cat-big"]
    files = sorted((folder / "test").glob("*/*"), key=lambda p: (p.parent.name, p.name))
    expected = [plain.classes.index(p.parent.name) for p in files]
    assert list(plain.test_y) == list(packed.test_y) == expected == sorted(expected)  # grouped by class
    assert np.array_equal(plain.test_x, packed.test_x) and np.array_equal(plain.train_x, packed.train_x)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "each split's images are read in the order of their paths: by class folder name, then by file name" in readme
