"""Below eight bits, every consumer bit for bit (issue 27): the four nets of the issue (seed, resnet20,
mobilenet-cifar, the README's user net), each trained briefly on the JPEG copy, quantized at the issue's five
formats under each rounding rule, and every integer of every node compared with the golden model in the
simulated model (`potq verify`), the C runtime, onnxruntime and TVM (half-even: the rule both round by) and
potq's RTL under Verilator (the MAC PE; the shift-add PE for the one-format pot/apot models of --bits-all).

Each row is what `potq quantize` / `potq verify [--c|--onnx|--tvm|--rtl]` would record, through the same jobs
(potq.jobs), on test images drawn across the classes. Prints one markdown table, with the CPU; a consumer that
is not installed is a "-" and a note. Wants a quiet-ish machine: about 30-60 min on 2 shared cores.

    python benchmarks/lowbit_consumers.py --data ../shared/data/cifar10-jpeg.tar.gz --out runs/consumers
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from potq.cli import main as potq
from potq.deploy.consumers import find_compiler, onnx_installed, tvm_installed
from potq.jobs.deploy import check_rtl_run, check_run
from potq.jobs.verify import verify_run
from potq.quant.rules import QuantSettings
from ptq_vs_brevitas import cpu_name  # this folder: one home for the CPU line

USER_NET = str(Path(__file__).resolve().parents[1] / "examples" / "user_resnet.py") + ":build"
NETS = ("seed", "resnet20", "mobilenet-cifar", USER_NET)
FORMATS = (("8/8", "int"), ("4/4", "int"), ("4/8", "pot"), ("4/4", "apot"), ("2/8", "int"))
SHIFT_FORMATS = (("4/8", "pot"), ("4/4", "apot"))  # --bits-all: one format on every MAC node, the shift PE's
ROUNDINGS = ("half-up", "half-even", "floor")
EXACT_IN_ONNX = "half-even"  # onnxruntime's and TVM's QuantizeLinear round half to even


def train(net: str, run: Path, data: str, images: int) -> None:
    if not (run / "metrics.json").exists():
        args = ["train", "--data", data, "--out", str(run), "--model", net, "--recipe", "fast", "--epochs", "1"]
        assert potq([*args, "--train-limit", str(images)]) == 0


def quantize(run: Path, bits: str, code: str, rounding: str, bits_all: bool, calib: int) -> str:
    args = ["quantize", "--run", str(run), "--calib", str(calib), "--bits", bits, "--weights", code]
    args += ["--rounding", rounding, *(["--bits-all"] if bits_all else [])]
    assert potq(args) == 0
    return QuantSettings.parse(rounding=rounding, bits=bits, weights=code, bits_all=bits_all).label()


def consumers(run: Path, label: str, rounding: str, a: argparse.Namespace, pe_kind: str) -> dict:
    """Mismatching values per consumer (None: not run here)."""
    out: dict = {"golden": verify_run(run, label, test_limit=a.test)["mismatches"]}
    exact_rule = rounding == EXACT_IN_ONNX
    have_onnx = onnx_installed() and exact_rule
    r = check_run(
        run,
        label,
        have_onnx,
        find_compiler() is not None,
        c_vectors=a.c_vectors,
        tvm=have_onnx and tvm_installed(),
        tvm_images=a.tvm_images,
        test_limit=a.test,
    )
    out["onnx"] = r["onnx"]["mismatches"] if "onnx" in r else None
    out["tvm"] = r["tvm"]["mismatches"] if "tvm" in r else None
    out["c"] = r["c"]["logit_mismatches"] if "c" in r else None
    if shutil.which("verilator"):
        rtl = check_rtl_run(run, label, "4x4", vectors=1, pe_kind=pe_kind)
        out["rtl"] = (rtl["mismatches"], rtl["cycles_per_image"] == rtl["predicted_cycles_per_image"])
    return out


def cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return f"{v[0]:,}" + ("" if v[1] else " (cycles differ)")
    return f"{v:,}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True, help="a folder of one run per net")
    p.add_argument("--train-images", type=int, default=5000, help="one epoch of `fast` on these")
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--test", type=int, default=1000, help="golden and onnxruntime: test images across the classes")
    p.add_argument("--c-vectors", type=int, default=50)
    p.add_argument("--tvm-images", type=int, default=20)
    p.add_argument("--nets", default=",".join(NETS))
    p.add_argument("--roundings", default=",".join(ROUNDINGS), help="the C runtime and the RTL take each rule")
    a = p.parse_args()
    print(f"CPU: {cpu_name()}")
    print("| Net | Format | Rounding | PE | Golden vs simulated | C (logits) | onnxruntime | TVM | RTL 4x4 | s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for net in a.nets.split(","):
        run = a.out / Path(net.split(":")[0]).stem
        train(net, run, a.data, a.train_images)
        cases = [(b, c, r, False, "mac") for b, c in FORMATS for r in a.roundings.split(",")]
        cases += [(b, c, EXACT_IN_ONNX, True, "shift") for b, c in SHIFT_FORMATS]
        for bits, code, rounding, bits_all, pe_kind in cases:
            t0 = time.perf_counter()
            label = quantize(run, bits, code, rounding, bits_all, a.calib)
            r = consumers(run, label, rounding, a, pe_kind)
            fmt = f"w{bits.replace('/', 'a')} {code}" + (" (all layers)" if bits_all else "")
            row = [Path(net.split(":")[0]).stem, fmt, rounding, pe_kind, *(cell(r.get(k)) for k in KEYS)]
            print("| " + " | ".join(row) + f" | {time.perf_counter() - t0:.0f} |", flush=True)


KEYS = ("golden", "c", "onnx", "tvm", "rtl")

if __name__ == "__main__":
    main()
