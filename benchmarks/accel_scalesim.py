"""What SCALE-Sim 3.0.0's output-size rule changes, and how fast potq's systolic model is.

    PYTHONPATH=src python benchmarks/accel_scalesim.py

1. For every layer whose output size differs between SCALE-Sim's rule, ceil((H + 2p - R + s) / s), and
   PyTorch's, floor((H + 2p - R) / s) + 1 (the stride-2 layers of resnet20 and mobilenet-cifar), the MACs and
   the systolic cycles under each rule, for ws and os on 8x8, 16x16 and 32x32 arrays.
2. The wall time of potq's whole accel_report (every node, cycles, traffic, energy) per configuration, and
   SCALE-Sim 3.0.0's CPU time for the same configurations (tests/fixtures/scalesim/cpu_seconds.csv, recorded
   by run_all.sh with /usr/bin/time).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from potq.accel.arch import load_arch
from potq.accel.model import accel_report
from potq.accel.systolic import compute_cycles
from potq.accel.workload import scalesim_compat, workloads
from potq.ir.capture import capture
from potq.models import build_model
from potq.quant.scheme import policy_zero_points

MODELS = ("seed", "resnet20", "mobilenet-cifar")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "scalesim"


def stride2_table(graphs) -> list[str]:
    lines = [
        "| Model | Layers changed | MACs, PyTorch -> SCALE-Sim | "
        + " | ".join(f"{df} {n}x{n} cycles, PyTorch -> SCALE-Sim" for df in ("ws", "os") for n in (8, 16, 32))
        + " |",
        "|---|---:|---:|" + "---:|" * 6,
    ]
    for m, g in graphs.items():
        changed = [w for w in workloads(g) if w.is_mac and (scalesim_compat(w).E, scalesim_compat(w).F) != (w.E, w.F)]
        if not changed:
            lines.append(f"| {m} | 0 | - |" + " - |" * 6)
            continue
        macs = sum(w.macs for w in changed), sum(scalesim_compat(w).macs for w in changed)
        cells = []
        for df in ("ws", "os"):
            for n in (8, 16, 32):
                a = sum(compute_cycles(w, n, n, df) for w in changed)
                b = sum(compute_cycles(scalesim_compat(w), n, n, df) for w in changed)
                cells.append(f"{a:,} -> {b:,} (+{b / a - 1:.1%})")
        lines.append(
            f"| {m} | {len(changed)} | {macs[0]:,} -> {macs[1]:,} (+{macs[1] / macs[0] - 1:.1%}) | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def speed_table(graphs) -> list[str]:
    cpu = {}
    if (FIXTURES / "cpu_seconds.csv").exists():
        with (FIXTURES / "cpu_seconds.csv").open() as f:
            cpu = {
                (r["model"], r["dataflow"], r["n"]): float(r["user_s"]) + float(r["sys_s"]) for r in csv.DictReader(f)
            }
    lines = ["| Model | Config | potq accel_report (ms, wall) | SCALE-Sim 3.0.0 (CPU s) |", "|---|---|---:|---:|"]
    zps = {m: policy_zero_points(g) for m, g in graphs.items()}  # float graphs: potq's zero-point policy
    accel_report(
        graphs["seed"], load_arch("systolic-8"), "ws", zero_points=zps["seed"]
    )  # warm: imports and the energy table
    for m, g in graphs.items():
        for df in ("ws", "os", "is"):
            for n in (8, 16, 32):
                arch = load_arch(f"systolic-{n}")
                t0 = time.perf_counter()
                accel_report(g, arch, df, compat=True, zero_points=zps[m])
                ms = (time.perf_counter() - t0) * 1e3
                ss = cpu.get((m, df, str(n)))
                lines.append(f"| {m} | {df} {n}x{n} | {ms:.1f} | {f'{ss:.1f}' if ss else 'not run'} |")
    return lines


if __name__ == "__main__":
    graphs = {m: capture(build_model(m).eval(), (3, 32, 32), [0.0] * 3, [1.0] * 3) for m in MODELS}
    print("\n".join(stride2_table(graphs)))
    print()
    print("\n".join(speed_table(graphs)))
