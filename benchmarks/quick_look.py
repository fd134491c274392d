"""The quick look's wall time against its budget: `potq run --quick` (or --budget) in a fresh process, timed
from outside, then its plan (plan.json) against each step's measured seconds (steps.json), the FP32 and
pot-channel accuracies, the CPU and the machine's load. A record for benchmarks/RESULTS.md, not a test.

    PYTHONPATH=src python benchmarks/quick_look.py --data ../shared/data/cifar10-jpeg.tar.gz --out runs/quick
    PYTHONPATH=src python benchmarks/quick_look.py ... --avx2   # as on a CPU with AVX2 only (no AVX-512, no AMX)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from potq.machine import cpu_facts, cpu_text

# oneDNN and ATen kernels limited to AVX2: what a CPU without AVX-512 or AMX runs (`--precision auto` -> fp32)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PLAN_STEPS = {"fixed": ("summary", "energy", "accel", "export", "report")}


def cpu_name() -> str:
    return cpu_text(cpu_facts())  # potq.machine: the CPU's model and the flags that decide its kernels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True, help="run folder (replaced)")
    p.add_argument("--budget", help="instead of --quick")
    p.add_argument(
        "--avx2", action="store_true", help="limit the kernels to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)"
    )
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `potq run` options")
    a = p.parse_args()
    if a.out.exists():
        shutil.rmtree(a.out)
    env = {**os.environ, **(AVX2_ENV if a.avx2 else {})}
    size = ["--budget", a.budget] if a.budget else ["--quick"]
    cmd = [sys.executable, "-m", "potq", "run", "--data", a.data, "--out", str(a.out), *size, *a.extra]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env).returncode
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    print(report(a, wall, rc, load_before, load_after))


def report(a: argparse.Namespace, wall: float, rc: int, load_before, load_after) -> str:
    read = lambda name: json.loads((a.out / name).read_text())  # noqa: E731
    plan, steps, metrics = read("plan.json"), read("steps.json"), read("metrics.json")
    predicted = plan["predicted_s"]
    rows = []
    fixed = 0.0
    for name, step in steps.items():
        key = "measure" if name == "plan" else name  # plan: process start to the end of measuring
        if key in predicted:
            rows.append(f"| {name} | {predicted[key]:.0f} | {step['seconds']:.1f} |")
        else:
            fixed += step["seconds"]
    rows.append(f"| other steps ({', '.join(PLAN_STEPS['fixed'])}) | {predicted['other steps']:.0f} | {fixed:.1f} |")
    tp = plan["throughput"]
    quant = {p.stem.split("_", 1)[1]: json.loads(p.read_text()) for p in a.out.glob("quant_*.json")}
    accs = ", ".join(f"{k} {v['test_accuracy']:.4f} on {v['test_images']:,}" for k, v in sorted(quant.items()))
    lines = [
        f"CPU: {cpu_name()}{' (kernels limited to AVX2)' if a.avx2 else ''}; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after; exit status {rc}",
        f"measured: training {tp['train']:.0f} images/s, evaluation {tp['evaluate']:.0f} images/s "
        f"({metrics['training_arithmetic']})",
        f"plan: {plan['epochs']} epochs x {plan['train_limit']:,} images, val {plan['val_size']:,}, "
        f"calib {plan['calib']}, "
        f"test images {plan['test_limit'] or 'all'}, schemes {', '.join(plan['schemes'])}, C {plan['c_vectors']}, "
        f"TVM {plan['tvm_images']}",
        "",
        "| Step | Planned s | Measured s |",
        "|---|---:|---:|",
        *rows,
        f"| **total (steps)** | {sum(predicted.values()):.0f} | {sum(s['seconds'] for s in steps.values()):.1f} |",
        f"| **wall, process start to end** | {plan['budget_s']:.0f} (budget) | **{wall:.1f}** |",
        "",
        f"FP32 test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']:,} test images (JPEG copy "
        f"if --data is it); {accs}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
