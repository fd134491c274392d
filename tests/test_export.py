"""Rebuild the integer model from model.json and the hex files alone (numpy, no potq model objects)."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from potq.cli import main
from potq.export import hex_lines, read_hex


def round_shift(acc: np.ndarray, shift: np.ndarray, rule: str) -> np.ndarray:
    out = np.empty_like(acc)
    for s in np.unique(shift):
        sel = shift == s
        a = acc[:, sel]
        if s <= 0:
            out[:, sel] = a << -s
        elif rule == "floor":
            out[:, sel] = a >> s
        elif rule == "half-up":
            out[:, sel] = (a + (1 << (s - 1))) >> s
        else:  # half-even
            q, rem, half = a >> s, a & ((1 << s) - 1), 1 << (s - 1)
            out[:, sel] = q + ((rem > half) | ((rem == half) & (q & 1 == 1)))
    return out


def conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    acc = np.zeros((n, o, oh, ow), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            acc += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return acc


def run_from_files(folder, images: np.ndarray) -> list[np.ndarray]:
    model = json.loads((folder / "model.json").read_text())

    def tensor(name):
        meta = model["tensors"][name]
        bits = 8 if meta["dtype"] in ("int8", "uint8") else 32
        return read_hex(folder / meta["hex"], bits, signed=meta["dtype"] != "uint8").reshape(meta["shape"])

    lut = tensor(model["input"]["lut"])
    x = lut[np.arange(lut.shape[0])[None, :, None, None], images.astype(np.int64)]
    outs = [x]
    for layer in model["layers"]:
        if layer["type"] == "maxpool":
            k = layer["kernel"]
            n, c, h, w = x.shape
            x = x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))
        elif layer["type"] == "flatten":
            x = x.reshape(len(x), -1)
        else:
            w, b = tensor(layer["weight"]), tensor(layer["bias"])
            xs = x - layer["input_zero_point"]
            acc = conv(xs, w, layer["stride"], layer["padding"]) if layer["type"] == "conv" else xs @ w.T
            acc = acc + (b[None, :, None, None] if acc.ndim == 4 else b[None, :])
            if layer["last"]:
                x = acc
            else:
                y = round_shift(acc, tensor(layer["shift"]), model["rounding"]) + layer["output_zero_point"]
                x = np.clip(y, *layer["clamp"])
        outs.append(x)
    return outs


def test_hex_round_trip():
    values = np.array([-128, -1, 0, 1, 127], dtype=np.int8)
    text = hex_lines(values, 8)
    assert text.split() == ["80", "ff", "00", "01", "7f"]
    big = np.array([-(2**31), -5, 2**31 - 1], dtype=np.int32)
    assert hex_lines(big, 32).split() == ["80000000", "fffffffb", "7fffffff"]


def test_exported_files_reproduce_the_test_vectors(tiny_run, tmp_path, capsys):
    assert (
        main(
            ["quantize", "--run", str(tiny_run), "--scheme", "pot-channel", "--calib", "50", "--rounding", "half-even"]
        )
        == 0
    )
    out = tmp_path / "export"
    assert main(["export", "--run", str(tiny_run), "--scheme", "pot-channel", "--out", str(out), "--vectors", "4"]) == 0
    assert {p.name for p in out.iterdir()} == {"model.json", "weights.npz", "model.h", "hex", "vectors", "vectors.npz"}
    vectors = np.load(out / "vectors.npz")
    outs = run_from_files(out, vectors["input"])
    for i, got in enumerate(outs):
        np.testing.assert_array_equal(got, vectors[f"out{i}"])
        for k in range(4):
            bits = 32 if i == len(outs) - 1 else 8
            np.testing.assert_array_equal(
                read_hex(out / "vectors" / f"img{k}_out{i}.hex", bits, signed=bits == 32), got[k].reshape(-1)
            )
    np.testing.assert_array_equal(outs[-1], vectors["logits"])
    npz = np.load(out / "weights.npz")
    model = json.loads((out / "model.json").read_text())
    first = model["layers"][0]
    assert npz[first["weight"]].dtype == np.int8 and npz[first["bias"]].dtype == np.int32


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles(tiny_run, tmp_path):
    out = tmp_path / "export"
    assert main(["quantize", "--run", str(tiny_run), "--scheme", "pot-tensor", "--calib", "50"]) == 0
    assert main(["export", "--run", str(tiny_run), "--scheme", "pot-tensor", "--out", str(out)]) == 0
    src = tmp_path / "main.c"
    src.write_text(
        '#include "model.h"\n#include <stdio.h>\n'
        "int main(void){long s=0; for(unsigned i=0;i<sizeof potq_L0_weight;i++) s+=potq_L0_weight[i];"
        ' printf("%ld %d\\n", s, POTQ_L0_IN_ZP); return 0;}\n'
    )
    subprocess.run(["cc", "-I", str(out), "-o", str(tmp_path / "m"), str(src)], check=True)
    got = subprocess.run([str(tmp_path / "m")], capture_output=True, text=True, check=True).stdout.split()
    w = np.load(out / "weights.npz")["L0_weight"]
    assert int(got[0]) == int(w.astype(np.int64).sum()) and int(got[1]) == 128


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
