"""Weight-, output- and input-stationary systolic arrays in closed form: cycles as SCALE-Sim 3.0.0 counts
them, traffic at the operands' real widths.

Claim: a conv/linear workload is a GEMM per group (im2col: window = C*R*S, pixels = N*E*F, filters = M).
A dataflow puts two of its dimensions on the array (Sr rows, Sc columns) and streams the third (T):
  ws: Sr = window, Sc = filters, T = pixels     os: Sr = pixels, Sc = filters, T = window
  is: Sr = window, Sc = pixels,  T = filters
folds = ceil(Sr / rows) * ceil(Sc / cols), and each fold takes, as SCALE-Sim's demand matrices have rows,
  ws, is: rows (load the stationary tile) + (rows - 1) (input skew) + T (stream) + (cols - 1) (drain skew)
  os:     (T - 1) (stream into the accumulators) + rows (shift the outputs out) + (cols - 1) (skew)
and a layer takes folds * per_fold - 1 cycles (SCALE-Sim's "Total Cycles": the cycle of its last output
write, counted from 0; estimated bandwidth, hence no stalls). A grouped layer is `groups` such layers.
Traffic (bytes, at the graph's widths; SCALE-Sim counts every operand as 1 byte) is written in
`traffic()` and docs/accel.md. Evidence: tests/test_accel_scalesim.py (0 cycles of error against
SCALE-Sim 3.0.0 on seed, resnet20 and mobilenet-cifar, 8x8/16x16/32x32, ws/os/is) and tests/test_accel.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from potq.accel.workload import Workload, spad_traffic
from potq.ir.codes import code_bytes, weight_bytes

DATAFLOWS = ("ws", "os", "is")


def cdiv(a, b):
    """Ceiling division on ints or integer numpy arrays (row_stationary.py's vectorized terms use it too)."""
    return -(-a // b)


@dataclass(frozen=True)
class Gemm:
    """One group's GEMM as a dataflow lays it out: Sr x Sc on the array, T streamed."""

    dataflow: str
    window: int  # C * R * S
    pixels: int  # N * E * F
    filters: int  # M
    Sr: int
    Sc: int
    T: int


def gemm(w: Workload, dataflow: str) -> Gemm:
    window, pixels, filters = w.C * w.R * w.S, w.N * w.E * w.F, w.M
    sr, sc, t = {
        "ws": (window, filters, pixels),
        "os": (pixels, filters, window),
        "is": (window, pixels, filters),
    }[dataflow]
    return Gemm(dataflow, window, pixels, filters, sr, sc, t)


def fold_cycles(g: Gemm, rows: int, cols: int) -> int:
    """Cycles of one fold: fill, stream, drain (SCALE-Sim's demand-matrix rows per fold)."""
    if g.dataflow == "os":
        return (g.T - 1) + rows + (cols - 1)
    return rows + (rows - 1) + g.T + (cols - 1)


def folds(g: Gemm, rows: int, cols: int) -> tuple[int, int]:
    """(row folds, column folds)."""
    return cdiv(g.Sr, rows), cdiv(g.Sc, cols)


def compute_cycles(w: Workload, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim 3.0.0's "Total Cycles" of the layer, summed over its groups (each group one topology row)."""
    g = gemm(w, dataflow)
    fr, fc = folds(g, rows, cols)
    return w.groups * (fr * fc * fold_cycles(g, rows, cols) - 1)


def os_gemm_cycles(pixels: int, filters: int, window: int, rows: int, cols: int) -> int:
    """SCALE-Sim 3.0.0's output-stationary "Total Cycles" of one GEMM (pixels x window by window x filters)."""
    g = Gemm("os", window, pixels, filters, pixels, filters, window)
    fr, fc = folds(g, rows, cols)
    return fr * fc * fold_cycles(g, rows, cols) - 1


def rtl_gemm_cycles(pixels: int, filters: int, window: int, rows: int, cols: int, groups: int = 1) -> int:
    """Cycles of potq's own RTL (potq.deploy.rtl, docs/rtl.md) on one MAC node: an output-stationary array whose
    folds run back to back at SCALE-Sim's output-stationary fold length (results leave through the output
    chains while the next fold computes), the overheads this model learned from the RTL added: 1 cycle to
    latch the node's descriptor, and the last fold's drain (its results leave the top edge: `rows` cycles
    past its fold). A tall array (rows > window + cols - 1) waits 2 * rows - 1 cycles per fold for its output
    chains. On a square array this is SCALE-Sim's count + 2 + rows for one group. tests/test_rtl.py holds it
    equal to Verilator's count of every MAC node, to the cycle."""
    g = Gemm("os", window, pixels, filters, pixels, filters, window)
    fr, fc = folds(g, rows, cols)
    fold = fold_cycles(g, rows, cols)
    period = max(fold, 2 * rows - 1)
    return 1 + groups * fr * fc * period + (fold + rows - period)


def traffic(w: Workload, rows: int, cols: int, dataflow: str, glb_bytes: int) -> dict[str, dict[str, int]]:
    """Bytes per level ('dram', 'glb', 'spad') and operand ('ifmap', 'filter', 'bias', 'psum', 'ofmap').

    The global buffer is split in three equal parts, as SCALE-Sim's ifmap, filter and ofmap SRAMs (the
    config export splits it the same way). Loop order: column folds outer, row folds inner (SCALE-Sim's).
    DRAM: every operand once (compulsory), plus
      - the operand reused across the OUTER loop is read again per column fold unless it fits its third
        (ws: the ifmap, os: the ifmap, is: the filters);
      - the operand reused across the INNER loop is re-read per row fold unless its column slice fits
        (os: the filters' column slice);
      - ws and is accumulate over row folds: the int32 partial sums of a column fold (T x cols) stay in
        the ofmap third if they fit, else every fold but the last writes them out and reads them back,
        4 bytes each ("partial sums count 4 bytes where they spill").
    Global buffer <-> array: what the array streams (im2col order, each operand at its width), the
    stationary tiles once per fold, partial sums between folds at 4 bytes, outputs at their width.
    Scratchpads (PE registers): workload.spad_traffic, the rule every dataflow shares."""
    g = gemm(w, dataflow)
    fr, fc = folds(g, rows, cols)
    third = glb_bytes // 3
    bi, bf, bp, bo = w.bits_ifmap, w.bits_filter, w.bits_psum, w.bits_ofmap
    ifmap = code_bytes(w.N * w.C * w.H * w.W, bi)  # one group's raw input
    filt = weight_bytes(g.window * g.filters, bf)  # the weight memory's words (potq.ir.codes)
    psum_tile = code_bytes(g.T * min(cols, g.Sc), bp)  # one column fold's accumulators (ws, is)
    psums = (fr - 1) * code_bytes(g.T * g.Sc, bp) if dataflow != "os" else 0  # written, then read back
    spill = psums if psums and psum_tile > third else 0
    dram = {
        "ifmap": ifmap * (fc if dataflow in ("ws", "os") and ifmap > third else 1),
        "filter": filt * (fc if dataflow == "is" and filt > third else 1),
        "bias": code_bytes(g.filters, w.bits_bias),
        "psum": 2 * spill,
        "ofmap": code_bytes(g.pixels * g.filters, bo),
    }
    if dataflow == "os" and code_bytes(g.window * min(cols, g.Sc), bf) > third:
        dram["filter"] = filt * fr
    streamed = {
        "ws": {"ifmap": fc * code_bytes(g.T * g.Sr, bi), "filter": filt},
        "os": {"ifmap": fc * code_bytes(g.Sr * g.T, bi), "filter": fr * code_bytes(g.T * g.Sc, bf)},
        "is": {"ifmap": code_bytes(g.Sr * g.Sc, bi), "filter": fc * code_bytes(g.Sr * g.T, bf)},
    }[dataflow]
    glb = {**streamed, "bias": fc * dram["bias"], "psum": 2 * psums, "ofmap": dram["ofmap"]}
    by = {lvl: {k: v * w.groups for k, v in d.items()} for lvl, d in (("dram", dram), ("glb", glb))}
    return {**by, "spad": spad_traffic(w)}
