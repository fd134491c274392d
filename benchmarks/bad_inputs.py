"""Bad inputs and faults across every command: each must end in one line on stderr, exit status 2, no
traceback, and leave the user's files as they were (an --out that did not exist still does not); a few
faults must cost only speed instead (exit 0, at most one warning line).

Builds a small image folder and a trained `tiny` run in a temporary folder (with its own data cache),
then runs potq's command line on each case in a fresh process, as a user would, and has each process
report its own peak resident memory (VmHWM at exit: getrusage's ru_maxrss is no use here, as Linux
carries the parent's high-water mark across fork and exec). Prints a markdown table (the list in
benchmarks/RESULTS.md) and exits 1 if any case falls short or the archive bomb peaks over 300 MB.

    python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
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


CACHE: dict[str, str] = {}  # POTQ_CACHE of every case: the benchmark's own, never the user's
BOMB_RSS_MB = 300
# `python -m potq`, which also writes the process's peak resident memory (kB) to $BAD_INPUTS_HWM at exit
CHILD = """import atexit, os, re, sys
def hwm():
    with open('/proc/self/status') as f, open(os.environ['BAD_INPUTS_HWM'], 'w') as out:
        out.write(re.search(r'VmHWM:\\s*(\\d+)', f.read()).group(1))
atexit.register(hwm)
from potq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def potq(*args: str, cwd: Path | None = None, env: dict | None = None, fsize: int | None = None):
    """Run `python -m potq ARGS`; (exit status, stdout, stderr, peak RSS in MB of that process).
    `fsize`: a file size limit (RLIMIT_FSIZE) on the process, so that a write beyond it fails in the
    kernel (EFBIG; Python ignores SIGXFSZ) as a write to a full disk fails."""
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
    with tempfile.TemporaryDirectory() as scratch:
        hwm = Path(scratch) / "hwm"
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **CACHE, **(env or {}), "BAD_INPUTS_HWM": str(hwm)}
        r = subprocess.run(
            [sys.executable, "-c", CHILD, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=full_env,
            preexec_fn=limit,
        )
        rss = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
    return r.returncode, r.stdout, r.stderr, rss


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels (its data: one zero row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    idat = chunk(b"IDAT", zlib.compress(bytes(width + 1)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


class Padded(io.RawIOBase):
    """`head` then zero bytes up to `size`, in blocks: a bomb's member without holding it in memory."""

    def __init__(self, head: bytes, size: int):
        self.head, self.left = head, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        chunk = self.head[:k] + bytes(max(0, k - len(self.head)))
        self.head = self.head[k:]
        b[:k] = chunk
        self.left -= k
        return k


def archive_with(data: Path, dest: Path, name: str, head: bytes, size: int) -> Path:
    """`data` as a tar.gz with one more member train/cat/<name>: `head` padded with zeros to `size`."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        tar.add(data, arcname="data")
        info = tarfile.TarInfo(f"data/train/cat/{name}")
        info.size = size
        tar.addfile(info, io.BufferedReader(Padded(head, size), 1 << 20))
    return dest


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="potq-bad-"))
    CACHE["POTQ_CACHE"] = str(tmp / "cache")
    data = image_folder(tmp / "data")
    run = tmp / "run"
    code, _, err, _ = potq(
        "train", "--model", "tiny", "--data", str(data), "--out", str(run), "--epochs", "1", "--val-size", "6"
    )
    assert code == 0, err
    assert potq("quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "20")[0] == 0
    cases = command_and_step_cases(tmp, data, run) + issue21_cases(tmp, data, run) + provenance_cases(tmp, data)
    cases += rtl_cases(tmp, run)
    assert potq("quantize", "--run", str(run), "--scheme", "float-channel", "--calib", "20")[0] == 0
    failed = run_cases(cases, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(cases) - failed} of {len(cases)} cases end as they should (one line and exit status 2, or exit 0)")
    sys.exit(1 if failed else 0)


def user_folder(tmp: Path) -> Path:
    """A folder of the user's: no command may write into it."""
    d = tmp / "mine"
    d.mkdir(exist_ok=True)
    (d / "notes.txt").write_text("mine")
    return d


def command_and_step_cases(tmp: Path, data: Path, run: Path) -> list[tuple]:
    """The cases of every command before issue 21, and the files they point at (made when a case runs)."""

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
    q = ["--run", str(run), "--scheme", "pot-channel"]
    files = {"a_file": a_file, "bad_table": bad_table, "nan_table": nan_table, "not_object": not_object}
    return summary_and_train_cases(tmp, data, run, big_image) + step_cases(tmp, data, run, q, edit, other_shape, files)


def summary_and_train_cases(tmp: Path, data: Path, run: Path, big_image: Callable[[], Path]) -> list[tuple]:
    return [
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
    ]


def step_cases(tmp, data, run, q, edit, other_shape, files: dict[str, Path]) -> list[tuple]:
    a_file, bad_table, nan_table, not_object = (files[k] for k in ("a_file", "bad_table", "nan_table", "not_object"))
    return [
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
        ("export: --out a folder of the user's", lambda: ["export", *q, "--out", str(user_folder(tmp))]),
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


def run_cases(cases: list[tuple], tmp: Path) -> int:
    """Run each case in a fresh process, print its table row; the number of cases that fell short."""
    a_file = tmp / "a_file"
    print("| Case | Exit | stderr (one line) | Peak RSS | OK |")
    print("|---|---:|---|---:|---|")
    failed = 0
    for name, make, *opts in cases:
        o = opts[0] if opts else {}
        before = sorted(p.name for p in user_folder(tmp).iterdir()) + [a_file.read_text()]
        args = make()
        out = Path(args[args.index("--out") + 1]) if "--out" in args else None
        # an --out that potq refuses must not appear (unless the case fails after a step has finished there)
        fresh = out is not None and not out.exists() and not o.get("keeps_out")
        code, stdout, err, rss = potq(*args, cwd=tmp, env=o.get("env"), fsize=o.get("fsize"))
        lines = err.strip().splitlines()
        warnings = [line for line in lines if line.startswith("potq: warning:")]
        after = sorted(p.name for p in user_folder(tmp).iterdir()) + [a_file.read_text()]
        expected = o.get("code", 2)
        ok = code == expected and "Traceback" not in err and before == after
        if expected == 2:  # one line; before it at most warnings (a cache that can't be written) and progress bars
            potq_lines = [line for line in lines if line.startswith("potq:")]
            ok = ok and lines[-1].startswith("potq: error:") and len(potq_lines) == 1 + len(warnings)
        elif "redo" in o:  # a stale step done again: the line that says so, and no error
            ok = ok and o["redo"] in stdout and "potq: error" not in err
            warnings = [line for line in stdout.splitlines() if o["redo"] in line]
        else:  # exit 0, a fault that costs speed only: its one warning line; the rest is tqdm's progress
            ok = ok and len(warnings) == 1 and "potq: error" not in err
        ok = ok and not (expected == 2 and fresh and out.exists()) and rss < o.get("rss_mb", float("inf"))
        ok = ok and o.get("kept", lambda: True)()  # the user's file the case planted is as the user left it
        failed += not ok
        shown = warnings[0] if expected == 0 and warnings else lines[-1] if lines else ""
        shown = shown.replace("|", "\\|").replace(str(tmp), "TMP")[:150]
        print(f"| {name} | {code} | {shown} | {rss:.0f} MB | {'yes' if ok else '**no**'} |")
    return failed


def issue21_cases(tmp: Path, data: Path, run: Path) -> list[tuple]:
    """Issue 21's classes: a cache entry that fails the data checks, a class list that is not the run's,
    a cache that can't be written, POTQ_CACHE empty or a file, archive bombs, absurd numbers, user code
    that exits or raises. Cases whose fault should cost only speed expect exit 0 (at most a warning)."""
    import numpy as np

    def tampered_cache() -> list[str]:
        for entry in Path(CACHE["POTQ_CACHE"]).iterdir():  # the entry of `data`: labels 7 of 3 classes
            listed = entry / "classes.txt"  # (the cache also holds the RTL's builds)
            if listed.exists() and listed.read_text().splitlines()[0] == str(data.resolve()):
                y = np.load(entry / "train_y.npy")
                np.save(entry / "train_y.npy", np.full_like(y, 7))
        return [
            "train",
            "--model",
            "tiny",
            "--data",
            str(data),
            "--out",
            str(tmp / "u1"),
            "--epochs",
            "1",
            "--val-size",
            "6",
        ]

    def renamed_class() -> Path:
        d = tmp / "renamed"
        shutil.copytree(data, d)
        for split in ("train", "test"):
            (d / split / "frog").rename(d / split / "fox")
        return d

    def uncached() -> Path:  # data the cache has not seen, its training images (920 KB) over the size limit
        return image_folder(tmp / "uncached", per_class=100)

    def png_bomb_archive() -> Path:  # the reported case: a 1.5 GB member (a PNG header, then zeros) in a small tar.gz
        return archive_with(data, tmp / "bomb.tar.gz", "huge.png", png_claiming(22000, 22000), 1_500_000_000)

    def header_bomb_archive() -> Path:  # a small member whose header claims 100 million pixels
        bomb = png_claiming(10000, 10000)
        return archive_with(data, tmp / "header.tar.gz", "bomb.png", bomb, len(bomb))

    a_file = tmp / "a_file"
    t = ["train", "--model", "tiny", "--data", str(data), "--epochs", "1", "--val-size", "6"]
    rss = {"rss_mb": BOMB_RSS_MB}
    return [
        ("cache entry with labels out of range (decoded again)", tampered_cache, {"code": 0}),
        (
            "quantize: --data with another class list",
            lambda: ["quantize", "--run", str(run), "--data", str(renamed_class())],
        ),
        (
            "verify: --data with another class list",
            lambda: ["verify", "--run", str(run), "--scheme", "pot-channel", "--data", str(tmp / "renamed")],
        ),
        (
            "cache write fails (RLIMIT_FSIZE: EFBIG; costs speed only)",
            lambda: [*t[:4], str(uncached()), *t[5:], "--out", str(tmp / "u2")],
            {"code": 0, "fsize": 600_000},
        ),
        ("POTQ_CACHE empty", lambda: [*t, "--out", str(tmp / "u3")], {"env": {"POTQ_CACHE": ""}}),
        ("POTQ_CACHE a file", lambda: [*t, "--out", str(tmp / "u4")], {"env": {"POTQ_CACHE": str(a_file)}}),
        (
            "tar.gz member of 1.5 GB (a PNG header, then zeros)",
            lambda: [*t[:4], str(png_bomb_archive()), *t[5:], "--out", str(tmp / "u5")],
            rss,
        ),
        (
            "PNG header claiming 10000x10000 in a tar.gz",
            lambda: [*t[:4], str(header_bomb_archive()), *t[5:], "--out", str(tmp / "u6")],
            rss,
        ),
        ("--seed 2**64", lambda: [*t, "--out", str(tmp / "u7"), "--seed", str(2**64)]),
        ("--lr 1e308", lambda: [*t, "--out", str(tmp / "u8"), "--lr", "1e308"]),
        *user_code_cases(tmp, t),
    ]


def user_code_cases(tmp: Path, t: list[str]) -> list[tuple]:
    """A model file that exits or raises, at import or in its factory: one line with potq's prefix, exit 2."""

    def model_file(name: str, text: str) -> str:
        (tmp / name).write_text(text)
        return f"{tmp / name}:build"

    return [
        (
            "model file: sys.exit(0) at import",
            lambda: ["summary", "--model", model_file("m1.py", "import sys\nsys.exit(0)\n")],
        ),
        (
            "model file: sys.exit('msg') at import",
            lambda: ["summary", "--model", model_file("m2.py", "import sys\nsys.exit('msg')\n")],
        ),
        (
            "model file: factory raises (train)",
            lambda: [
                *t,
                "--out",
                str(tmp / "u9"),
                "--model",
                model_file("m3.py", "def build(s, c):\n    raise ValueError('no')\n"),
            ],
        ),
        (
            "model file: factory calls sys.exit(0) (train)",
            lambda: [
                *t,
                "--out",
                str(tmp / "u10"),
                "--model",
                model_file("m4.py", "import sys\ndef build(s, c):\n    sys.exit(0)\n"),
            ],
        ),
    ]


def provenance_cases(tmp: Path, data: Path) -> list[tuple]:
    """A finished `potq run` whose inputs change afterwards (issue 21, item 1), each case on its own copy
    of the run, its data and its model file: a stale step is redone (exit 0, the line that says so), a
    stale training refused in one line; and the faults of a run: a full disk, a run.json that is a list,
    sizes of later steps that the data can't meet, --cache ''."""
    base = tmp / "prov"
    shutil.copytree(data, base / "data")
    (base / "net.py").write_text(
        "from torch import nn\n"
        "def build(shape, classes):\n"
        "    return nn.Sequential(nn.Conv2d(shape[0], 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),\n"
        "                         nn.Flatten(), nn.Linear(8 * (shape[1] // 4) * (shape[2] // 4), classes))\n"
    )
    run_args = ["--model", "NET", "--epochs", "1", "--val-size", "6", "--calib", "20", "--vectors", "2"]

    def args_of(root: Path) -> list[str]:
        extra = [str(root / "net.py") + ":build" if a == "NET" else a for a in run_args]
        return ["run", "--data", str(root / "data"), "--out", str(root / "run"), *extra]

    code, _, err, _ = potq(*args_of(base))
    assert code == 0, err

    def copy(name: str) -> Path:  # the records name absolute paths: rewritten (a run compares content)
        root = shutil.copytree(base, tmp / name)
        for record in ("run.json", "config.json"):
            path = root / "run" / record
            path.write_text(path.read_text().replace(str(base), str(root)))
        return root

    def changed(name: str, change: Callable[[Path], object], *command: str) -> Callable[[], list[str]]:
        def make() -> list[str]:
            root = copy(name)
            change(root)
            if not command:
                return args_of(root)
            return [command[0], "--run", str(root / "run"), *command[1:], "--data", str(root / "data")]

        return make

    def new_image(root: Path) -> None:  # other data at the same path: same classes, same sizes
        victim = sorted((root / "data" / "test" / "cat").iterdir())[0]
        Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(victim)

    def new_class(root: Path) -> None:
        for split in ("train", "test"):
            shutil.copytree(root / "data" / split / "frog", root / "data" / split / "toad")

    def edit_model(root: Path) -> None:
        (root / "net.py").write_text((root / "net.py").read_text() + "# edited\n")

    def other_model(root: Path) -> None:
        config = root / "run" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "model": "tiny"}))

    def other_weights(root: Path) -> None:
        import torch

        path = root / "run" / "weights.pt"
        weights = torch.load(path, weights_only=True)
        torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, path)

    def unlink(name: str) -> Callable[[Path], None]:
        return lambda root: (root / "run" / name).unlink()

    def as_list(root: Path) -> None:
        (root / "run" / "run.json").write_text("[1, 2]\n")

    redo = {"code": 0}
    return issue32_cases(tmp, changed, args_of) + [
        ("run: an image of the data replaced after training", changed("p1", new_image)),
        ("run: a class added to the data after training", changed("p2", new_class)),
        ("verify: an image of the data replaced", changed("p3", new_image, "verify", "--scheme", "pot-channel")),
        ("export: an image of the data replaced", changed("p4", new_image, "export", "--out", str(tmp / "e1"))),
        ("run: the model file edited after training", changed("p5", edit_model)),
        ("quantize: the model file edited after training", changed("p6", edit_model, "quantize")),
        ("run: config.json names another model", changed("p7", other_model)),
        ("run: weights.pt replaced", changed("p8", other_weights)),
        ("verify: weights.pt replaced", changed("p9", other_weights, "verify", "--scheme", "pot-channel")),
        (
            "run: quant_pot-channel.pt deleted (made again)",
            changed("p10", unlink("quant_pot-channel.pt")),
            {**redo, "redo": "quantize ... again: quant_pot-channel.pt is missing"},
        ),
        (
            "run: energy.json deleted (made again)",
            changed("p11", unlink("energy.json")),
            {**redo, "redo": "energy ..."},
        ),
        ("run: run.json a JSON list", changed("p12", as_list)),
        (
            "run: --calib 10**6 (checked before the first step)",
            lambda: [*args_of(base)[:4], str(tmp / "r1"), *args_of(base)[5:], "--calib", "1000000"],
        ),
        (
            "run: --vectors 10**6",
            lambda: [*args_of(base)[:4], str(tmp / "r2"), *args_of(base)[5:], "--vectors", "1000000"],
        ),
        ("run: --cache ''", lambda: [*args_of(base)[:4], str(tmp / "r3"), *args_of(base)[5:], "--cache", ""]),
        (
            "run: the disk fills (RLIMIT_FSIZE 64 kB)",
            lambda: [*args_of(base)[:4], str(tmp / "r4"), *args_of(base)[5:]],
            {"fsize": 64 * 1024, "keeps_out": True},
        ),
        (
            "quantize: the disk fills (RLIMIT_FSIZE 4 kB)",
            lambda: ["quantize", "--run", str(copy("p13") / "run"), "--scheme", "pot-tensor", "--calib", "20"],
            {"fsize": 4096},
        ),
        ("summary --input 3,4096,4096", lambda: ["summary", "--input", "3,4096,4096"], {"rss_mb": BOMB_RSS_MB * 2}),
    ]


def issue32_cases(tmp: Path, changed: Callable, args_of: Callable[[Path], list[str]]) -> list[tuple]:
    """Issue 32, items 1 and 2, on copies of provenance_cases' finished run: every answer fingerprints what it
    depends on (data through symlinks, config.json's fields, the cache entry's content, the records the report
    prints, a step's output files) and nothing the user owns is overwritten (edited export files, a
    --scalesim-out folder of the user's, a symbolic link as --out)."""
    import numpy as np

    def linked_then_replaced(root: Path) -> None:  # a class folder that is a link: an image replaced behind it
        cat = root / "data" / "test" / "cat"
        shutil.move(cat, root / "real_cat")
        cat.symlink_to(root / "real_cat", target_is_directory=True)
        code, _, err, _ = potq(*args_of(root))  # through the link: the same data, cached under the link's key
        assert code == 0, err
        Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(sorted((root / "real_cat").iterdir())[0])

    def config_edit(**fields) -> Callable[[Path], None]:
        def edit(root: Path) -> None:
            path = root / "run" / "config.json"
            config = json.loads(path.read_text())
            path.write_text(json.dumps({**config, **{k: f(config[k]) for k, f in fields.items()}}))

        return edit

    def cache_overwritten(root: Path) -> None:  # test_x.npy of the run's data overwritten in place, same size
        code, _, err, _ = potq("verify", "--run", str(root / "run"), "--data", str(root / "data"))  # cached
        assert code == 0, err
        for entry in Path(CACHE["POTQ_CACHE"]).iterdir():
            if (entry / "classes.txt").exists() and str(root / "data") in (entry / "classes.txt").read_text():
                x = np.load(entry / "test_x.npy")
                np.save(entry / "test_x.npy", 255 - x)

    def edit(rel: str, **fields) -> Callable[[Path], None]:
        def change(root: Path) -> None:
            path = root / "run" / rel
            if fields:
                path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
            else:
                path.write_text(path.read_text() + "// mine\n")

        return change

    def unlink(rel: str) -> Callable[[Path], None]:
        return lambda root: (root / "run" / rel).unlink()

    def mine_kept(case: str, rel: str) -> Callable[[], bool]:
        return lambda: (tmp / case / "run" / rel).read_text().endswith("// mine\n")

    scalesim = tmp / "scalesim-mine"
    link = tmp / "export-link"

    def scalesim_of_the_user() -> list[str]:
        scalesim.mkdir(exist_ok=True)
        (scalesim / "topology.csv").write_text("my topology\n")
        return ["accel", "--model", "tiny", "--arch", "systolic-16", "--scalesim-out", str(scalesim)]

    def symlinked_out() -> list[str]:
        run = changed("q14", lambda root: None)()[4]  # `potq run`'s arguments: --out RUN
        link.symlink_to(Path(run) / "export", target_is_directory=True)
        return ["export", "--run", run, "--out", str(link)]

    def compare_edited() -> list[str]:
        return ["compare", "--run", changed("q6", edit("quant_pot-channel.json", test_accuracy=0.99))()[4]]

    redo = {"code": 0}
    return [
        ("run: an image replaced behind a symlinked class folder", changed("q1", linked_then_replaced)),
        ("run: config.json mean and std edited", changed("q2", config_edit(mean=lambda m: [v + 0.1 for v in m]))),
        ("run: config.json val_size edited", changed("q3", config_edit(val_size=lambda v: v + 1))),
        ("quantize: config.json class order edited", changed("q4", config_edit(classes=lambda c: c[::-1]), "quantize")),
        (
            "verify: a cached test_x.npy overwritten in place (decoded again)",
            changed("q5", cache_overwritten, "verify", "--scheme", "pot-channel"),
            {"code": 0},
        ),
        (
            "compare: a hand-edited accuracy in quant_pot-channel.json",
            compare_edited,
        ),
        (
            "run: a hand-edited accuracy in quant_pot-channel.json (made again)",
            changed("q7", edit("quant_pot-channel.json", test_accuracy=0.99)),
            {**redo, "redo": "quant_pot-channel.json was edited after potq wrote it"},
        ),
        ("run: a hand-edited accuracy in metrics.json", changed("q8", edit("metrics.json", test_accuracy=0.99))),
        (
            "run: accel_roofline.png deleted (made again)",
            changed("q9", unlink("accel_roofline.png")),
            {**redo, "redo": "accel ... again: accel_roofline.png is missing"},
        ),
        (
            "run --force: export/model.h edited by the user",
            lambda: [*changed("q10", edit("export/model.h"))(), "--force"],
            {"kept": mine_kept("q10", "export/model.h")},
        ),
        (
            "export: an export's model.h edited by the user, exported again",
            lambda: [*changed("q11", edit("export/model.h"), "export")()[:-2], "--out", str(tmp / "q11/run/export")],
            {"kept": mine_kept("q11", "export/model.h"), "keeps_out": True},
        ),
        ("accel: --scalesim-out a folder of the user's with topology.csv", scalesim_of_the_user),
        ("export: --out a symbolic link to an earlier export", symlinked_out, {"keeps_out": True}),
    ]


def rtl_cases(tmp: Path, run: Path) -> list[tuple]:
    """Broken and hostile modules given to `verify --rtl` (issue 32), where Verilator is installed: each one
    line, exit 2; a module that loops or floods its output stopped by the simulation's time limit or output cap."""
    if shutil.which("verilator") is None:
        return []
    fixtures = Path(__file__).parents[1] / "tests" / "fixtures" / "rtl"
    v = ["verify", "--run", str(run), "--scheme", "pot-channel", "--rtl", "--array", "4x4"]

    def file(name: str, data: bytes) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return [
        ("verify --rtl --pe: an initial block that loops", lambda: [*v, "--pe", str(fixtures / "looping_pe.sv")]),
        ("verify --rtl --pe: a $display every cycle", lambda: [*v, "--pe", str(fixtures / "chatty_pe.sv")]),
        ("verify --rtl --pe: initial $finish", lambda: [*v, "--pe", str(fixtures / "finishing_pe.sv")]),
        ("verify --rtl --pe: a renamed port", lambda: [*v, "--pe", str(fixtures / "renamed_port_pe.sv")]),
        ("verify --rtl --ppu: a binary file", lambda: [*v, "--ppu", str(file("ppu.bin", bytes(range(256))))]),
        ("verify --rtl --pe: an empty file", lambda: [*v, "--pe", str(file("empty.sv", b""))]),
        (
            "verify --rtl --pe: a misnamed module",
            lambda: [*v, "--pe", str(file("pe2.sv", b"module potq_pe2;\nendmodule\n"))],
        ),
    ]


if __name__ == "__main__":
    main()
