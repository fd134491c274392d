"""Rebuild the integer model from model.json and the hex files alone (numpy, no potq model objects)."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from potq.cli import main
from potq.deploy.export import hex_lines, read_hex, write_export
from potq.ir.capture import capture
from potq.ir.rules import Rounding
from potq.ir.tensor import normalize
from potq.models import build_model
from potq.quant.lower import calibrate, lower
from potq.quant.scheme import QuantSettings
from tests.test_graph import EXAMPLE, MEAN, STD, randomized


def round_shift(acc: np.ndarray, shift: np.ndarray, rule: str) -> np.ndarray:
    """acc * 2**-shift rounded by rule; shift has one entry per channel (axis 1) or one for all."""
    s = shift.reshape(1, -1, *([1] * (acc.ndim - 2))) if shift.size > 1 else shift.reshape(())
    s = np.broadcast_to(s, acc.shape).astype(np.int64)
    acc = np.where(s < 0, acc << np.maximum(-s, 0), acc)
    s = np.clip(s, 0, 62)
    q = acc >> s
    if rule == "floor":
        return q
    rem, half = acc - (q << s), np.where(s > 0, 1 << np.maximum(s - 1, 0), 0)
    if rule == "half-up":
        return q + ((s > 0) & (rem >= half))
    return q + ((s > 0) & ((rem > half) | ((rem == half) & (q & 1 == 1))))


def windows(x: np.ndarray, kernel, stride, padding, fill) -> np.ndarray:
    """(N, C, OH, OW, KH, KW) views of x padded with `fill`."""
    (ph, pw), (sh, sw) = padding, stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return np.lib.stride_tricks.sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, ::sh, ::sw]


def conv(x: np.ndarray, zp: int, pad_code: int, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    """Grouped convolution of the codes x padded with pad_code, minus the zero point."""
    win = windows(x, w.shape[2:], stride, padding, pad_code) - zp  # N, C, OH, OW, KH, KW
    cin, cout = x.shape[1] // groups, w.shape[0] // groups
    parts = [
        np.einsum("nchwij,ocij->nohw", win[:, g * cin : (g + 1) * cin], w[g * cout : (g + 1) * cout])
        for g in range(groups)
    ]
    return np.concatenate(parts, axis=1)


def run_from_files(folder, images: np.ndarray) -> dict[str, np.ndarray]:
    """The exported graph, interpreted from model.json and the hex files alone."""
    model = json.loads((folder / "model.json").read_text())

    def tensor(name):
        meta = model["tensor_files"][name]
        signed = meta["hex_encoding"].startswith("two's complement")  # as model.json says: the input table unsigned
        assert signed == (meta["dtype"] != "uint8")
        return read_hex(folder / meta["hex"], meta["hex_word_bits"], signed=signed).reshape(meta["shape"])

    q = {v: d["q"] for v, d in model["values"].items() if "q" in d}
    env = {model["input"]: images.astype(np.int64)}
    for node in model["nodes"]:
        op, a, t = node["op"], node["attrs"], {k: tensor(ref) for k, ref in node["tensors"].items()}
        xs = [env[v] for v in node["inputs"]]
        zps = [q[v]["zero_point"] for v in node["inputs"] if v in q]
        out = q[node["output"]]
        acc = None
        if op == "input":
            y = t["lut"][np.arange(t["lut"].shape[0])[None, :, None, None], xs[0]]
        elif op == "conv":
            x = conv(xs[0], zps[0], a["pad_code"], t["weight"], a["stride"], a["padding"], a["groups"])
            acc = x + t["bias"][None, :, None, None]
            if not a.get("requant", True):
                y, acc = acc, None
        elif op == "linear":
            acc = (xs[0] - zps[0]) @ t["weight"].T + t["bias"][None, :]
            if not a.get("requant", True):
                y, acc = acc, None
        elif op == "add":
            acc = sum((x - zp) << int(al) for x, zp, al in zip(xs, zps, t["align"], strict=True))
        elif op == "avgpool":
            acc = (windows(xs[0], a["kernel"], a["stride"], a["padding"], a["pad_code"]) - zps[0]).sum(axis=(4, 5))
        elif op == "maxpool":  # pad_code null: padding never wins; ceil_mode false: numpy's floor sizes
            assert a["pad_code"] is None and a["ceil_mode"] is False
            y = windows(xs[0], a["kernel"], a["stride"], a["padding"], -1).max(axis=(4, 5))
        elif op == "concat":
            y = np.concatenate(xs, axis=1)
        elif op == "flatten":
            y = xs[0].reshape(len(xs[0]), -1)
        if acc is not None:
            y = np.clip(round_shift(acc, t["shift"], model["rounding"]) + out["zero_point"], out["lo"], out["hi"])
        env[node["output"]] = y
    return env


def test_hex_round_trip():
    values = np.array([-128, -1, 0, 1, 127], dtype=np.int8)
    text = hex_lines(values, 8)
    assert text.split() == ["80", "ff", "00", "01", "7f"]
    big = np.array([-(2**31), -5, 2**31 - 1], dtype=np.int32)
    assert hex_lines(big, 32).split() == ["80000000", "fffffffb", "7fffffff"]


def check_export(out, count: int) -> None:
    vectors = np.load(out / "vectors.npz")
    model = json.loads((out / "model.json").read_text())
    env = run_from_files(out, vectors[model["input"]])
    for node in model["nodes"]:
        v = node["output"]
        np.testing.assert_array_equal(env[v], vectors[v], err_msg=v)
        bits = model["values"][v]["q"]["bits"]
        for k in range(count):
            got = read_hex(out / "vectors" / f"img{k}_{v}.hex", bits, signed=bits == 32)
            np.testing.assert_array_equal(got, env[v][k].reshape(-1), err_msg=v)
    np.testing.assert_array_equal(env[model["output"]], vectors["logits"])


def test_exported_files_reproduce_the_test_vectors(tiny_run, tmp_path, capsys):
    assert (
        main(
            ["quantize", "--run", str(tiny_run), "--scheme", "pot-channel", "--calib", "50", "--rounding", "half-up"]
        )
        == 0
    )
    out = tmp_path / "export"
    # a rounding other than the default is part of the label
    assert (
        main(
            ["export", "--run", str(tiny_run), "--scheme", "pot-channel-half-up", "--out", str(out), "--vectors", "4"]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} == {
        "model.json",
        "weights.npz",
        "model.h",
        "hex",
        "vectors",
        "vectors.npz",
        ".potq-manifest.json",
    }
    check_export(out, 4)
    npz = np.load(out / "weights.npz")
    model = json.loads((out / "model.json").read_text())
    first = next(n for n in model["nodes"] if n["op"] == "conv")
    assert npz[first["tensors"]["weight"]].dtype == np.int8 and npz[first["tensors"]["bias"]].dtype == np.int32
    assert "pads with zp_in" in first["rule"]


@pytest.mark.parametrize(
    "name, rounding", [("resnet20", "half-up"), ("mobilenet-cifar", "floor"), (EXAMPLE, "half-even")]
)
def test_any_graph_rebuilds_from_its_files(name, rounding, tmp_path):
    """Residual, depthwise and user graphs rebuilt by numpy from model.json and hex files alone."""
    model = randomized(build_model(name))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    settings = QuantSettings.parse("pot-channel", rounding=rounding)
    fgraph = capture(model, (3, 32, 32), MEAN, STD)
    graph = lower(fgraph, calibrate(fgraph, normalize(images, MEAN, STD), settings), settings)
    write_export(graph, tmp_path / "e", images.numpy(), np.zeros(6, dtype=np.int64), [str(i) for i in range(10)])
    check_export(tmp_path / "e", 2)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles(tiny_run, tmp_path):
    out = tmp_path / "export"
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    assert main(["export", "--run", str(tiny_run), "--scheme", "pot-tensor", "--out", str(out)]) == 0
    src = tmp_path / "main.c"
    src.write_text(
        '#include "model.h"\n#include <stdio.h>\n'
        "int main(void){long s=0; for(unsigned i=0;i<sizeof potq_features_0_weight;i++) s+=potq_features_0_weight[i];"
        ' printf("%ld %d %d\\n", s, POTQ_INPUT_ZP, POTQ_ROUNDING); return 0;}\n'
    )
    subprocess.run(["cc", "-I", str(out), "-o", str(tmp_path / "m"), str(src)], check=True)
    got = subprocess.run([str(tmp_path / "m")], capture_output=True, text=True, check=True).stdout.split()
    w = np.load(out / "weights.npz")["features.0.weight"]
    assert int(got[0]) == int(w.astype(np.int64).sum()) and int(got[1]) == 128
    assert int(got[2]) == Rounding.HALF_EVEN.value  # the default rule's code (docs/graph-format.md)


def test_export_bad_input(tiny_run, tmp_path, capsys):
    assert main(["export", "--run", str(tiny_run), "--scheme", "pot-nothing", "--out", str(tmp_path / "e")]) == 2
    assert "no quantized model" in capsys.readouterr().err
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    assert (
        main(
            ["export", "--run", str(tiny_run), "--scheme", "pot-tensor", "--out", str(tmp_path / "e"), "--vectors", "0"]
        )
        == 2
    )
    assert "--vectors" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_export_never_deletes_what_potq_did_not_write(tiny_run, tmp_path, capsys, monkeypatch):
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    before = sorted(p.name for p in tiny_run.iterdir())
    args = ["export", "--run", str(tiny_run), "--scheme", "pot-tensor", "--out"]
    # the run folder itself, a folder above it, the current folder
    for out in (tiny_run, tiny_run.parent):
        assert main([*args, str(out)]) == 2
        assert "choose another path" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main([*args, "."]) == 2
    capsys.readouterr()
    assert sorted(p.name for p in tiny_run.iterdir()) == before
    # a folder of the user's own files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main([*args, str(mine)]) == 2
    err = capsys.readouterr().err
    assert "potq did not write" in err and err.count("\n") == 1
    assert (mine / "notes.txt").read_text() == "keep me"
    # a folder potq wrote is replaced; once the user adds a file to it, it is not
    out = tmp_path / "export"
    assert main([*args, str(out)]) == 0 and main([*args, str(out)]) == 0
    (out / "hex" / "mine.hex").write_text("00\n")
    assert main([*args, str(out)]) == 2
    assert "hex/mine.hex" in capsys.readouterr().err and (out / "hex" / "mine.hex").exists()
    # a file where the folder should be
    (tmp_path / "file").write_text("x")
    assert main([*args, str(tmp_path / "file")]) == 2 and (tmp_path / "file").read_text() == "x"


def test_vectors_are_drawn_across_the_classes():
    from potq.data import vector_indices

    labels = np.repeat(np.arange(10), 100)  # a class-sorted test set
    idx = vector_indices(labels, 10)
    assert sorted(labels[idx].tolist()) == list(range(10))
    assert np.array_equal(idx, vector_indices(labels, 10))  # fixed by the seed
    assert len(set(vector_indices(labels, 1000).tolist())) == 1000
    assert set(labels[vector_indices(labels, 25)].tolist()) == set(range(10))


def test_relu6_upper_clamp_binds_in_the_test_vectors(tmp_path):
    """A test vector where ReLU6's upper clamp binds: where the convolution's rounded result passes the code of 6
    (the output QType's hi, below 255), the exported golden value is hi; the files alone reproduce every value."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU6(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    ).eval()
    with torch.no_grad():
        model[0].weight.mul_(10)  # pre-activations far beyond 6
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    settings = QuantSettings.parse("pot-channel")
    fgraph = capture(model, (3, 8, 8), MEAN, STD)
    graph = lower(fgraph, calibrate(fgraph, normalize(images, MEAN, STD), settings), settings)
    out = tmp_path / "e"
    write_export(graph, out, images.numpy(), np.zeros(4, dtype=np.int64), [str(i) for i in range(10)])
    check_export(out, 4)
    desc = json.loads((out / "model.json").read_text())
    node = next(n for n in desc["nodes"] if n["op"] == "conv")
    q = desc["values"][node["output"]]["q"]
    assert node["attrs"]["act"] == [0.0, 6.0] and q["zero_point"] == 0
    hi = q["hi"]
    assert hi == round(6 / q["scale"]) < 255  # ReLU6 lowers hi below the uint8 limit
    # the rounded result before the clamp, from the files alone
    vectors = np.load(out / "vectors.npz")
    weights = np.load(out / "weights.npz")
    t = {k: weights[ref] for k, ref in node["tensors"].items()}
    zp_in = desc["values"][node["inputs"][0]]["q"]["zero_point"]
    x = vectors[node["inputs"][0]].astype(np.int64)
    a = node["attrs"]
    acc = conv(x, zp_in, a["pad_code"], t["weight"].astype(np.int64), a["stride"], a["padding"], a["groups"])
    acc = acc + t["bias"][None, :, None, None]
    unclamped = round_shift(acc, t["shift"], desc["rounding"]) + q["zero_point"]
    binds = unclamped > hi
    assert binds.any() and (~binds).any()
    golden = vectors[node["output"]]
    np.testing.assert_array_equal(golden[binds], hi)
    np.testing.assert_array_equal(golden[~binds], np.maximum(unclamped[~binds], q["lo"]))
    # and in the hex test vectors: the first image with a bound value holds hi there
    k = int(np.flatnonzero(binds.reshape(len(binds), -1).any(1))[0])
    got = read_hex(out / "vectors" / f"img{k}_{node['output']}.hex", 8, signed=False)
    assert (got[binds[k].reshape(-1)] == hi).all()
