"""Yosys cell counts of the PEs of low-bit weights (issue 27): the multiplier PE (potq_pe_mac.sv) at INT8 (today's
potq_pe, which is also counted as shipped), 4-bit weights x 8-bit activations, 4 x 4 and 2 x 8, against the
shift-add PE (potq_pe_shift.sv) at pot 4/3/2 bits and apot 5/4/3 bits. Each is `synth` to Yosys's generic gate
library (no technology mapping: counts compare designs, they are not areas), then its sync-reset flip-flops
are legalized to plain D flip-flops plus a gate each so that `stat -tech cmos` can estimate transistors for
every cell (it leaves $_SDFF_ cells out). The parameters are potq.deploy.rtl.pe.pe_params', read from
potq.ir.codes. Needs Debian's `yosys` (0.23); run by hand:

    PYTHONPATH=src python3 benchmarks/pe_area.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from potq.deploy.rtl import PKG, source_text
from potq.deploy.rtl.pe import pe_params, sv_value
from rtl_cells import yosys_source  # potq_pe.sv with potq_pkg's constants substituted (Yosys 0.23 reads no import)

CASES = [  # label, weight code, weight bits, activation bits
    ("INT8 MAC (today's)", "int", 8, 8),
    ("int4 weights x 8-bit act.", "int", 4, 8),
    ("int4 x int4", "int", 4, 4),
    ("int2 weights x 8-bit act.", "int", 2, 8),
    ("pot 4-bit", "pot", 4, 8),
    ("pot 3-bit", "pot", 3, 8),
    ("pot 2-bit", "pot", 2, 8),
    ("apot 5-bit", "apot", 5, 8),
    ("apot 4-bit", "apot", 4, 8),
    ("apot 3-bit", "apot", 3, 8),
]
SCRIPT = "read_verilog -sv potq_pkg.sv {file}; {chparam}synth -top {top}; tee -o stat.txt stat; " + (
    "dfflegalize -cell $_DFF_P_ 01; tee -o cmos.txt stat -tech cmos"
)


def yosys_stat(folder: Path, file: str, top: str, params: dict) -> dict:
    """Cells by type after `synth`, their total, and the CMOS transistor estimate."""
    # one chparam for all: each chparam elaborates the module anew, and apot's checks need all its fields at once
    sets = " ".join(f"-set {k} {sv_value(v)}" for k, v in params.items())
    chparam = f"chparam {sets} {top}; " if params else ""
    script = SCRIPT.format(file=file, chparam=chparam, top=top)
    r = subprocess.run(["yosys", "-q", "-p", script], cwd=folder, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:] or r.stdout[-2000:])
    text = (folder / "stat.txt").read_text()
    kinds = {k: int(v) for k, v in re.findall(r"^\s+(\$\S+)\s+(\d+)$", text, re.M)}
    total = int(re.search(r"Number of cells:\s+(\d+)", text).group(1))
    cmos = re.search(r"Estimated number of transistors:\s+(\d+\+?)", (folder / "cmos.txt").read_text()).group(1)
    return {"cells": total, "kinds": kinds, "transistors": cmos, "script": script}


def measure() -> list[tuple[str, str, dict, dict]]:
    """(label, module, parameters, yosys_stat) for potq_pe as shipped, then every case."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / PKG).write_text(source_text(PKG))
        (folder / "potq_pe.sv").write_text(yosys_source("potq_pe.sv"))
        for name in ("potq_pe_mac.sv", "potq_pe_shift.sv"):
            (folder / name).write_text(source_text(name))
        rows.append(("INT8 potq_pe (shipped)", "potq_pe", {}, yosys_stat(folder, "potq_pe.sv", "potq_pe", {})))
        for label, code, w_bits, x_bits in CASES:
            module, params = pe_params(code, w_bits, x_bits)
            rows.append((label, module, params, yosys_stat(folder, f"{module}.sv", module, params)))
    return rows


def table(rows: list[tuple[str, str, dict, dict]]) -> str:
    kinds = sorted({k for *_, s in rows for k in s["kinds"]}, key=lambda k: ("DFF" in k, k))
    base = next(s["cells"] for label, *_, s in rows if label.startswith("INT8 MAC"))
    head = ["PE", "module", "parameters", "cells", "vs INT8", "logic", *(f"`{k}`" for k in kinds), "transistors (cmos)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for label, module, params, s in rows:
        ps = ", ".join(f"{k}={sv_value(v)}" for k, v in params.items()) or "-"
        logic = s["cells"] - sum(n for k, n in s["kinds"].items() if "DFF" in k)  # cells less flip-flops
        cells = [label, f"`{module}`", ps, str(s["cells"]), f"{s['cells'] / base:.2f}", str(logic)]
        cells += [str(s["kinds"].get(k, 0)) for k in kinds] + [s["transistors"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if shutil.which("yosys") is None:
        sys.exit("needs Yosys: apt-get install yosys")
    version = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    rows = measure()
    print(version)
    print("yosys -p '" + rows[-1][3]["script"] + "'  (the last row's script; each row sets its own chparam)")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
