"""Bad inputs and faults across every command: each must end in one line on stderr, exit status 2, no
traceback, and leave the user's files as they were.

Builds a small image folder and a trained `tiny` run in a temporary folder, then runs `python -m potq`
on each case in a fresh process, as a user would. Prints a markdown table (the list in
benchmarks/RESULTS.md) and exits 1 if any case falls short.

    python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def image_folder(root: Path, per_class: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for k, cls in enumerate(("cat", "dog", "frog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(60 * k + 40 + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def potq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "potq", *args], capture_output=True, text=True, cwd=cwd, env=env)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="potq-bad-"))
    data = image_folder(tmp / "data")
    run = tmp / "run"
    r = potq("train", "--model", "tiny", "--data", str(data), "--out", str(run), "--epochs", "1", "--val-size", "6")
    assert r.returncode == 0, r.stderr
    assert potq("quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "20").returncode == 0

    def copy_run(name: str) -> Path:
        dst = tmp / name
        shutil.copytree(run, dst)
        return dst

    def edit(name: str, file: str, text: str) -> Path:
        dst = copy_run(name)
        (dst / file).write_text(text)
        return dst

    def big_image() -> Path:
        d = image_folder(tmp / "big")
        Image.new("RGB", (20000, 20000)).save(d / "train" / "cat" / "huge.png")
        return d

    def other_shape() -> Path:
        d = tmp / "gray"
        for split in ("train", "test"):
            for cls in ("a", "b", "c"):
                (d / split / cls).mkdir(parents=True)
                for i in range(10):
                    Image.new("L", (28, 28)).save(d / split / cls / f"{i}.png")
        return d

    def user_folder() -> Path:
        d = tmp / "mine"
        d.mkdir(exist_ok=True)
        (d / "notes.txt").write_text("mine")
        return d

    bad_table = tmp / "table.json"
    bad_table.write_text(json.dumps({"fp32_mult": "a lot"}))
    nan_table = tmp / "nan.json"
    table = json.loads((Path(__file__).parents[1] / "src" / "potq" / "energy_45nm.json").read_text())
    nan_table.write_text(json.dumps({**table, "compute": {**table["compute"], "int8_mult": float("nan")}}))
    not_object = tmp / "list.json"
    not_object.write_text("[1, 2]")
    a_file = tmp / "a_file"
    a_file.write_text("mine")
    q = ["--run", str(run), "--scheme", "pot-channel"]
    cases: list[tuple[str, Callable[[], list[str]]]] = [
        ("unknown command", lambda: ["fly"]),
        ("unknown model", lambda: ["summary", "--model", "vgg99"]),
        ("model file missing", lambda: ["summary", "--model", "nothere.py:build"]),
        ("--input not C,H,W", lambda: ["summary", "--input", "3,32"]),
        ("--input absurdly large", lambda: ["summary", "--input", "3,100000,100000"]),
        ("--classes absurdly large", lambda: ["summary", "--classes", "10000000000"]),
        ("--data missing", lambda: ["train", "--data", str(tmp / "nothere"), "--out", str(tmp / "t1")]),
        ("--data an empty folder", lambda: ["train", "--data", str(tmp), "--out", str(tmp / "t2")]),
        ("an image too large to decode", lambda: ["train", "--data", str(big_image()), "--out", str(tmp / "t3")]),
        ("--lr inf", lambda: ["train", "--data", str(data), "--out", str(tmp / "t4"), "--lr", "inf"]),
        ("--seed -1", lambda: ["train", "--data", str(data), "--out", str(tmp / "t5"), "--seed", "-1"]),
        ("--epochs 0", lambda: ["train", "--data", str(data), "--out", str(tmp / "t6"), "--epochs", "0"]),
        ("unknown --recipe", lambda: ["train", "--data", str(data), "--out", str(tmp / "t7"), "--recipe", "x"]),
        ("train into a finished run", lambda: ["train", "--data", str(data), "--out", str(run), "--val-size", "6"]),
        (
            "--resume without checkpoint",
            lambda: ["train", "--data", str(data), "--out", str(tmp / "t8"), "--val-size", "6", "--resume"],
        ),  # fmt: skip
        ("quantize: no run", lambda: ["quantize", "--run", str(tmp / "nothere")]),
        ("quantize: corrupt config.json", lambda: ["quantize", "--run", str(edit("c1", "config.json", "{"))]),
        ("quantize: config.json a list", lambda: ["quantize", "--run", str(edit("c2", "config.json", "[]"))]),
        ("quantize: weights.pt garbage", lambda: ["quantize", "--run", str(edit("c3", "weights.pt", "x"))]),
        ("quantize: unknown scheme", lambda: ["quantize", "--run", str(run), "--scheme", "int4"]),
        ("quantize: --calib 0", lambda: ["quantize", "--run", str(run), "--calib", "0"]),
        ("quantize: --max-shift -1", lambda: ["quantize", "--run", str(run), "--max-shift", "-1"]),
        ("quantize: --data of another shape", lambda: ["quantize", "--run", str(run), "--data", str(other_shape())]),
        ("verify: no such quantized model", lambda: ["verify", "--run", str(run), "--scheme", "pot-seed"]),
        ("verify: quant file garbage", lambda: ["verify", "--run", str(edit("c4", "quant_pot-channel.pt", "x"))]),
        ("verify: --c-vectors 0", lambda: ["verify", *q, "--c", "--c-vectors", "0"]),
        ("export: unknown --format", lambda: ["export", *q, "--format", "verilog", "--out", str(tmp / "e1")]),
        ("export: --out an existing file", lambda: ["export", *q, "--out", str(a_file)]),
        ("export: --out a folder of the user's", lambda: ["export", *q, "--out", str(user_folder())]),
        ("export: --out the run itself", lambda: ["export", *q, "--out", str(run)]),
        ("export: --vectors 0", lambda: ["export", *q, "--vectors", "0", "--out", str(tmp / "e2")]),
        (
            "export: a float scheme as C",
            lambda: [
                "export",
                "--run",
                str(run),
                "--scheme",
                "float-channel",
                "--format",
                "c",
                "--out",
                str(tmp / "e3"),
            ],
        ),  # fmt: skip
        ("energy: table with text values", lambda: ["energy", "--table", str(bad_table)]),
        ("energy: table with NaN", lambda: ["energy", "--table", str(nan_table)]),
        ("energy: table not an object", lambda: ["energy", "--table", str(not_object)]),
        ("energy: table missing", lambda: ["energy", "--table", str(tmp / "nothere.json")]),
        ("energy: unknown --memory", lambda: ["energy", "--memory", "tape"]),
        ("run: --qat -1", lambda: ["run", "--data", str(data), "--out", str(tmp / "r1"), "--qat", "-1"]),
        (
            "run: --vectors 0 (a later step's option)",
            lambda: ["run", "--data", str(data), "--out", str(tmp / "r2"), "--vectors", "0"],
        ),  # fmt: skip
        (
            "run: --memory tape (a later step's option)",
            lambda: ["run", "--data", str(data), "--out", str(tmp / "r3"), "--memory", "tape"],
        ),  # fmt: skip
    ]
    assert potq("quantize", "--run", str(run), "--scheme", "float-channel", "--calib", "20").returncode == 0
    print("| Case | Exit | stderr (one line) | OK |")
    print("|---|---:|---|---|")
    failed = 0
    for name, make in cases:
        before = sorted(p.name for p in user_folder().iterdir()) + [a_file.read_text()]
        r = potq(*make(), cwd=tmp)
        lines = r.stderr.strip().splitlines()
        after = sorted(p.name for p in user_folder().iterdir()) + [a_file.read_text()]
        ok = r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr and before == after
        failed += not ok
        shown = (lines[-1] if lines else "").replace("|", "\\|").replace(str(tmp), "TMP")[:150]
        print(f"| {name} | {r.returncode} | {shown} | {'yes' if ok else '**no**'} |")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(cases) - failed} of {len(cases)} cases end in one line and exit status 2")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
