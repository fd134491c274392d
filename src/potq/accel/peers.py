"""Export of the workload for the peers: a SCALE-Sim 3.0.0 topology CSV, its layout CSV and a config file.

Claim: `scalesim_topology(graph)` writes one row per GEMM the systolic array runs: a convolution or a
Linear layer, and, for a grouped or depthwise convolution, one row PER GROUP (`<node>#g<i>`), because
SCALE-Sim's topology row has no groups field (a row is one dense convolution over `Channels` inputs
and `Num filter` outputs; 3.0.0's only exception splits a layer whose name contains "DP" into
single-channel layers, a depthwise special case we don't rely on: names are cleaned of "DP").
The row's IFMAP is the PADDED input (H + 2 * pad): the topology has no padding field either, so
SCALE-Sim's own rule ceil((H + 2p - R + stride) / stride) gives its output size (potq's
workload.scalesim_out_size). SCALE-Sim reads the layout CSV even with custom layouts off, so one is
written with one neutral row per topology row. Evidence: tests/fixtures/scalesim/ (SCALE-Sim run on
these very files) and tests/test_accel_scalesim.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from potq.accel.arch import Arch
from potq.accel.workload import Workload, workloads
from potq.errors import UserError
from potq.ir.graph import Graph

TOPOLOGY_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"
LAYOUT_FIELDS = 20  # SCALE-Sim's layout row: 6 intraline factors, then 14 orders
LAYOUT_ROW = "1,1,1,1,1,1,0,1,2,0,1,2,0,1,2,3,0,1,2,3"  # factors 1, the orders in their natural sequence


def group_rows(w: Workload) -> list[tuple[str, list[int]]]:
    """The topology rows of one MAC workload: (name, [IFMAP H, IFMAP W, R, S, C, M, stride])."""
    name = re.sub(r"[^A-Za-z0-9_.#-]", "_", w.node).replace("DP", "Dp")
    if w.stride_h != w.stride_w:
        # SCALE-Sim 3.0.0's conv topology carries one stride for both directions
        raise UserError(f"{w.node}: stride {w.stride_h}x{w.stride_w}; SCALE-Sim's topology row has one stride")
    dims = [w.H + 2 * w.pad_h, w.W + 2 * w.pad_w, w.R, w.S, w.C, w.M, w.stride_h]
    if w.groups == 1:
        return [(name, dims)]
    return [(f"{name}#g{g}", dims) for g in range(w.groups)]


def topology_rows(graph: Graph) -> list[tuple[str, list[int]]]:
    return [row for w in workloads(graph) if w.is_mac for row in group_rows(w)]


def scalesim_topology(graph: Graph) -> str:
    """SCALE-Sim's conv topology CSV for the graph's MAC layers (one row per group)."""
    lines = [TOPOLOGY_HEADER]
    lines += [f"{name}, {', '.join(str(d) for d in dims)}," for name, dims in topology_rows(graph)]
    return "\n".join(lines) + "\n"


def scalesim_layout(graph: Graph) -> str:
    """The layout CSV SCALE-Sim 3.0.0 insists on reading: one neutral row per topology row."""
    header = "Layer name," + ",".join(f"f{i}" for i in range(LAYOUT_FIELDS)) + ","
    return "\n".join([header] + [f"{name},{LAYOUT_ROW}," for name, _ in topology_rows(graph)]) + "\n"


def scalesim_config(arch: Arch, dataflow: str, run_name: str = "potq") -> str:
    """A SCALE-Sim 3.0.0 config: the array and dataflow of `arch`, its global buffer split in three
    equal SRAMs, bandwidth estimated (CALC: no memory stalls, so "Total Cycles" is the array's own),
    no custom layout, no sparsity."""
    if dataflow not in ("ws", "os", "is"):
        raise ValueError(f"SCALE-Sim models ws, os and is, not {dataflow!r}")
    kb = max(1, arch.glb_bytes // 3 // 1024)
    return f"""[general]
run_name = {run_name}

[architecture_presets]
ArrayHeight : {arch.pe_rows}
ArrayWidth : {arch.pe_cols}
IfmapSramSzkB : {kb}
FilterSramSzkB : {kb}
OfmapSramSzkB : {kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Dataflow : {dataflow}
Bandwidth : 10
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
FilterCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def scalesim_files(graph: Graph, arch: Arch, name: str = "potq") -> dict[str, str]:
    """topology.csv, layout.csv and scale_ws.cfg, scale_os.cfg, scale_is.cfg (SCALE-Sim models those three
    on the architecture's rows x columns, whatever dataflows `arch` itself lists), as file name -> text."""
    files = {"topology.csv": scalesim_topology(graph), "layout.csv": scalesim_layout(graph)}
    files.update({f"scale_{df}.cfg": scalesim_config(arch, df, f"{name}_{df}") for df in ("ws", "os", "is")})
    return files


SCALESIM_KIND = "potq-scalesim/1"  # the manifest's kind of a --scalesim-out folder (potq.files)


def check_scalesim_out(out: Path) -> None:
    """--scalesim-out follows the export's rule (potq.files.check_output_dir): a folder potq wrote is replaced
    whole, a file the user changed there is kept and the write refused, any other non-empty folder refused."""
    from potq.files import check_output_dir

    check_output_dir(out, SCALESIM_KIND, flag="--scalesim-out")


def write_scalesim(files: dict[str, str], out: Path) -> list[Path]:
    """Write scalesim_files(...) into out/: built in a temporary folder beside it, then moved into place whole
    with its manifest (potq.files.replace_dir), so that the user's files are never overwritten."""
    import shutil
    import tempfile

    from potq.files import clear_stale, replace_dir, temp_prefix

    out = Path(out)
    check_scalesim_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(out.parent, f".{out.name}.")
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        replace_dir(tmp, out, SCALESIM_KIND, flag="--scalesim-out")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / f for f in files]
