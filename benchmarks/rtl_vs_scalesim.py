"""SCALE-Sim 3.0.0's output-stationary "Total Cycles" for a few GEMM shapes and arrays, against potq's
`scale_sim_os_cycles` (and so the RTL's `mac_cycles`). SCALE-Sim runs from its own scratch virtual environment
(`pip install scalesim==3.0.0 "numpy<2"`: 3.0.0 fails under numpy 2 at `int(max(ofmap_serviced_cycles))`);
SRAMs of 4 MB each so that nothing stalls. Writes the numbers as a fixture that tests/test_rtl.py checks
without SCALE-Sim:

    python -m venv /tmp/ssvenv && /tmp/ssvenv/bin/pip install scalesim==3.0.0 "numpy<2"
    python benchmarks/rtl_vs_scalesim.py --python /tmp/ssvenv/bin/python --out tests/fixtures/rtl/scalesim_os.json
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from potq.accel.arch import load_arch
from potq.accel.peers import LAYOUT_FIELDS, LAYOUT_ROW, scalesim_config
from potq.deploy.rtl.program import mac_cycles, scale_sim_os_cycles

# name, ifmap height = width (padding included: SCALE-Sim does not pad), kernel, channels, filters, stride
LAYERS = [("conv1", 34, 3, 3, 16, 1), ("l2conv", 18, 3, 32, 32, 1), ("fc", 1, 1, 64, 10, 1), ("dw", 10, 3, 1, 1, 1)]
ARRAYS = [(4, 4), (16, 16), (8, 4)]


def run_scalesim(python: str, rows: int, cols: int, folder: Path) -> list[int]:
    # potq's own SCALE-Sim config writer (accel.peers), on an array of rows x cols with 4 MB per SRAM
    arch = replace(load_arch("systolic-16"), pe_rows=rows, pe_cols=cols, glb_bytes=3 * 4096 * 1024)
    (folder / "scale.cfg").write_text(scalesim_config(arch, "os", "potq_os"))
    topo = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
    topo += [f"{n}, {h}, {h}, {k}, {k}, {c}, {f}, {s}," for n, h, k, c, f, s in LAYERS]
    (folder / "topology.csv").write_text("\n".join(topo) + "\n")
    head = "Layer name," + ",".join(f"f{i}" for i in range(LAYOUT_FIELDS)) + ","
    (folder / "layout.csv").write_text("\n".join([head] + [f"{n[0]},{LAYOUT_ROW}," for n in LAYERS]) + "\n")
    cmd = [python, "-m", "scalesim.scale", "-c", "scale.cfg", "-t", "topology.csv", "-l", "layout.csv", "-p", "out"]
    subprocess.run([*cmd, "-s", "N"], cwd=folder, check=True, capture_output=True)
    report = next((folder / "out").rglob("COMPUTE_REPORT.csv"))
    rows_ = list(csv.reader(report.read_text().splitlines()))
    col = [c.strip() for c in rows_[0]].index("Total Cycles")
    return [int(r[col]) for r in rows_[1:] if r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", required=True, help="the python of a venv with scalesim 3.0.0")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    cases = []
    for rows, cols in ARRAYS:
        with tempfile.TemporaryDirectory() as tmp:
            totals = run_scalesim(a.python, rows, cols, Path(tmp))
        for (name, h, k, c, f, s), total in zip(LAYERS, totals, strict=True):
            m, kk = ((h - k) // s + 1) ** 2, k * k * c
            cases.append(
                {
                    "layer": name, "rows": rows, "cols": cols, "M": m, "N": f, "K": kk,
                    "scalesim_total_cycles": total, "scale_sim_os_cycles": scale_sim_os_cycles(m, f, kk, rows, cols),
                    "rtl_mac_cycles": mac_cycles(m, f, kk, rows, cols),
                }
            )  # fmt: skip
    out = {"scalesim": "3.0.0", "command": __doc__.strip().splitlines()[-1].strip(), "cases": cases}
    print(json.dumps(out, indent=1))
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
