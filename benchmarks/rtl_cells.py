"""Yosys (Debian's `yosys`, 0.23) cell counts of potq's PE and PPU: `synth -flatten` to Yosys's generic gate
library (no technology mapping: the counts compare designs, they are not areas). Yosys 0.23 reads no
`module m import pkg::*;` header, so the constants are substituted from potq_pkg.sv (generated from potq's
rules) before reading; the PPU is synthesized once per rounding rule (its ROUNDING parameter).

    python benchmarks/rtl_cells.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from potq.deploy.rtl import source_text
from potq.deploy.rtl.pkg import package_text
from potq.ir.rules import Rounding


def yosys_source(name: str) -> str:
    consts = dict(re.findall(r"localparam int (\w+) = (-?\d+);", package_text()))
    text = source_text(name).replace(" import potq_pkg::*;", "")
    for k, v in consts.items():
        text = re.sub(rf"\b{k}\b", v, text)
    return text


def cells(folder: Path, file: str, top: str, params: dict[str, int]) -> dict:
    chparam = "".join(f"chparam -set {k} {v} {top}; " for k, v in params.items())
    script = f"read_verilog -sv {file}; {chparam}synth -top {top} -flatten; tee -o stat.txt stat"
    r = subprocess.run(["yosys", "-q", "-p", script], cwd=folder, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:] or r.stdout[-2000:])
    text = (folder / "stat.txt").read_text()
    kinds = dict(re.findall(r"^\s+(\$\S+)\s+(\d+)$", text, re.M))
    total = int(re.search(r"Number of cells:\s+(\d+)", text).group(1))
    flops = sum(int(v) for k, v in kinds.items() if "DFF" in k)
    return {"cells": total, "flip_flops": flops}


def main() -> None:
    if shutil.which("yosys") is None:
        sys.exit("needs Yosys: apt-get install yosys")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("potq_pe.sv", "potq_ppu.sv"):
            (folder / name).write_text(yosys_source(name))
        out["potq_pe"] = cells(folder, "potq_pe.sv", "potq_pe", {})
        for r in Rounding:
            out[f"potq_ppu ({r.label})"] = cells(folder, "potq_ppu.sv", "potq_ppu", {"ROUNDING": int(r)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
