"""The accelerator model: per node of the integer graph, MACs, cycles, traffic, energy and the roofline
point on an architecture and dataflow; per network, totals and the share of energy by level.

Claim: one result per graph node, in the graph's order, deterministic (plain ints and floats, no sets,
no clocks). MAC nodes run on the PE array under the chosen dataflow (systolic ws/os/is: systolic.py;
Eyeriss row-stationary: each of the lab's conv blocks (search.conv_blocks: a max pool fused after its
conv) is row_stationary.evaluate() of its best mapping by the objective, latency and all); every node's
requantization, residual add, pooling and input table run on the post-processing unit (PPU), whose
operations per output are potq.energy's own terms (one home for the op counting). Cycles: the lab's
serial sum, latency = compute + DRAM + global buffer + PPU (or, double-buffered, the slowest level plus one
tile of the others: `overlapped`; or potq's RTL's own count: potq.accel.rtl), with DRAM = bytes over the
architecture's one DRAM bandwidth (Arch.dram_cycles: ceil(bytes x cycles per transaction / bus bytes per
cycle), the bandwidth the roofline and the bound word read too) and the same for the global buffer over the
NoC. Energy per level: compute (MAC array), ppu, spad, glb, dram (per byte), leakage (W x latency / clock,
in pJ). Under an architecture with `energy_table` (the 45 nm presets) the compute + ppu energy of a node is
potq.energy's compute energy of that node, term by term. Formulas and reasons: docs/accel.md.
Evidence: tests/test_accel.py (45 nm energy equal to potq.energy's per node; rs blocks equal to
evaluate(); compulsory DRAM bytes equal to the export's weights (at their bits), int32 biases and the
activations that move, and never above the modeled DRAM total on the zoo; determinism; the per-layer table).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from potq import energy as energy_model
from potq.accel import rtl, systolic
from potq.accel.arch import OVERLAPS, PJ_PER_J, RTL_TIMING, TABLES, Arch, check_overlap
from potq.accel.limits import check_batch, check_grid_cells
from potq.accel.row_stationary import balance_point, bound, grid_cells
from potq.accel.search import fused_pools, search
from potq.accel.systolic import cdiv
from potq.accel.workload import Workload, scalesim_compat, spad_traffic, workloads
from potq.energy import Arith
from potq.errors import UserError
from potq.ir.graph import Graph, OpType

LEVELS = ("compute", "ppu", "spad", "glb", "dram", "leakage")  # energy
LEVEL_CYCLES = ("compute", "dram", "glb", "ppu")  # the levels that take a node's cycles
OPERANDS = ("ifmap", "filter", "bias", "psum", "ofmap")
# potq.energy's MAC terms, by how their words begin: a product below 8 bits is "input times weight (8 x 4-bit
# multiply)", "input times weight: one shift (pot weight)", or apot's two shifts and "add the two shifted terms"
ARRAY_TERMS = ("subtract zero point", "input times weight", "add the two shifted terms", "summation", "add bias")
FREE_MOVES = (OpType.FLATTEN.value, OpType.CONCAT.value)  # a view, and outputs side by side: no data moves


def _energy_key(graph: Graph) -> Arith:
    """potq.energy's model of this graph: power-of-two shifts, or float requantization (float-* schemes)."""
    if graph.quantized and any(q.exponent is None for q in graph.q.values()):
        return Arith.INT8_FLOAT
    return Arith.INT8_POT


def ppu_ops(w: Workload, cost, key: Arith) -> int:
    """Operations of the PPU for one node: potq.energy's terms outside the MAC array (requantization,
    alignment, zero points, additions), max-pool comparisons (window - 1 per output), one table lookup
    per input pixel."""
    if w.op == OpType.MAXPOOL.value:
        return w.outputs * (w.R * w.S - 1)
    if w.op == OpType.INPUT.value:
        return w.outputs
    if cost is None:
        return 0
    return cost.outputs * sum(t.count for t in cost.terms[key] if not in_array(w, t))


def in_array(w: Workload, t: energy_model.Term) -> bool:
    """Whether an energy term of node w runs in the PE array (a MAC node's ARRAY_TERMS), not on the PPU."""
    return w.is_mac and t.what.startswith(ARRAY_TERMS)


def _table_energy(w: Workload, cost, key: Arith, table) -> tuple[float, float]:
    """(MAC array, PPU) energy priced term by term from potq's energy table: their sum is potq.energy's
    compute energy of the node. Max-pool comparisons and the input table are free there, as in the
    reference report, so they are here."""
    if cost is None:
        return 0.0, 0.0
    array = sum(t.pj(table) for t in cost.terms[key] if in_array(w, t))
    ppu = sum(t.pj(table) for t in cost.terms[key] if not in_array(w, t))
    return cost.outputs * array, cost.outputs * ppu


def _systolic_traffic(w: Workload, arch: Arch, dataflow: str, compat: bool) -> tuple[int, dict, int]:
    """Compute cycles, traffic and tiles (the folds of every group) of a MAC node on a systolic array."""
    cyc = systolic.compute_cycles(scalesim_compat(w) if compat else w, arch.pe_rows, arch.pe_cols, dataflow)
    fr, fc = systolic.folds(systolic.gemm(w, dataflow), arch.pe_rows, arch.pe_cols)
    return cyc, systolic.traffic(w, arch.pe_rows, arch.pe_cols, dataflow, arch.glb_bytes), w.groups * fr * fc


def _rs_traffic(w: Workload, arch: Arch, objective: str, pool: int) -> tuple[int, dict, str, int, int]:
    """The row-stationary best mapping of a conv block (the conv, and the k x k max pool fused after it:
    search.conv_blocks), taken whole from row_stationary.evaluate(): compute cycles, traffic, the lab's PPU
    operations (1 per output, 5 with a fused pool) and its passes (the tiles). Its serial latency is
    evaluate()'s."""
    mapping, m = search(w, arch, objective, pool)
    by = {
        "dram": {k: int(m.get(f"dram_{k}_read", 0)) + int(m.get(f"dram_{k}_write", 0)) for k in OPERANDS},
        "glb": {k: int(m.get(f"glb_{k}_read", 0)) + int(m.get(f"glb_{k}_write", 0)) for k in OPERANDS},
        "spad": spad_traffic(w),
    }
    return int(m["cycles_compute"]), by, str(mapping), int(m["ppu_ops"]), int(m["passes"])


def _ppu_traffic(w: Workload) -> dict:
    """A PPU node streams its inputs in and its output out, through the global buffer, once."""
    moved = 0 if w.op in FREE_MOVES else 1
    d = {k: 0 for k in OPERANDS}
    d["ifmap"], d["ofmap"] = moved * w.bytes_of("ifmap"), moved * w.bytes_of("ofmap")
    return {"dram": dict(d), "glb": dict(d), "spad": {k: 0 for k in OPERANDS}}


def _cycles(w: Workload, arch: Arch, compute: int, access: dict[str, int], ops: int) -> dict[str, int]:
    """A node's cycles by level, summed into its latency. Serial timing (the lab's): the dataflow's compute
    cycles, the DRAM and GLB bytes over their bandwidths, the PPU's operations at its rate. potq-rtl timing:
    potq's RTL's own count (potq.accel.rtl): the array's cycles with the columns' PPUs on its output path,
    the vector unit's for every other node, and no memory cycles (its memories are read inside those)."""
    if arch.timing == RTL_TIMING:
        array, vector = rtl.node_cycles(w, arch.pe_rows, arch.pe_cols)
        return {"compute": array, "dram": 0, "glb": 0, "ppu": vector}
    return {
        "compute": compute,
        "dram": arch.dram_cycles(access["dram"]),
        "glb": cdiv(access["glb"] * arch.glb_cycles_per_transaction, arch.noc_bytes_per_cycle),
        "ppu": cdiv(ops, arch.ppu_ops_per_cycle),
    }


def overlapped(cyc: dict[str, int], tiles: int, overlap: str) -> tuple[int, int]:
    """(latency, stall) of a node from its levels' cycles (compute, dram, glb, ppu). "none": the lab's serial
    sum, nothing stalls. "double-buffered": the node runs in `tiles` tiles (a systolic fold, a row-stationary
    pass, a half-buffer of a PPU node's stream), each level working on one tile while the next level works
    on the one before, so the node takes its slowest level whole plus one tile of every other level (the
    first tile's fill and the last one's drain): slowest + ceil((sum - slowest) / tiles), between the
    slowest level and the serial sum (a single tile overlaps nothing). Stall: the cycles the engine that
    does the node's work (the array; the PPU on a node without MACs) waits for a slower level."""
    total = sum(cyc[k] for k in LEVEL_CYCLES)
    if overlap == OVERLAPS[0] or tiles <= 1:
        return total, 0
    slowest = max(cyc[k] for k in LEVEL_CYCLES)
    engine = cyc["compute"] if cyc["compute"] else cyc["ppu"]
    return slowest + cdiv(total - slowest, tiles), slowest - engine


def _energy(w: Workload, arch: Arch, cost, key: Arith, table, ops: int, access: dict, latency: int) -> dict:
    """Energy by level (LEVELS) and its total; see the module docstring."""
    e = arch.energy
    if table is not None:
        e_compute, e_ppu = _table_energy(w, cost, key, table)
    else:
        free = w.op in (OpType.MAXPOOL.value, OpType.INPUT.value)  # comparisons and lookups: no PPU arithmetic
        e_compute, e_ppu = w.macs * e["mac"], (0 if free else ops) * e["ppu_op"]
    en = {
        "compute": e_compute,
        "ppu": e_ppu,
        "spad": access["spad"] * e["spad"],
        "glb": access["glb"] * e["glb"],
        "dram": access["dram"] * e["dram"],
        "leakage": arch.leakage_w * latency / arch.clock_hz * PJ_PER_J,
    }
    en["total"] = sum(en[k] for k in LEVELS)
    return en


def node_result(
    w: Workload, arch: Arch, dataflow: str, cost, key: Arith, table, compat: bool, objective: str, pool: int = 1
) -> dict:
    """Every term of one node; see the module docstring and docs/accel.md. pool: the k x k max pool fused
    after a row-stationary conv (1: none)."""
    mapping = ""
    ops = ppu_ops(w, cost, key)
    if w.is_mac and dataflow == "rs":
        cycles_compute, by, mapping, ops, tiles = _rs_traffic(w, arch, objective, pool)
    elif w.is_mac:
        cycles_compute, by, tiles = _systolic_traffic(w, arch, dataflow, compat)
    else:
        cycles_compute, by = 0, _ppu_traffic(w)
        tiles = cdiv(sum(by["glb"].values()), max(1, arch.glb_bytes // 2)) or 1  # half the buffer streams in
    if arch.timing == RTL_TIMING:  # the model lives in the RTL's memories: nothing crosses DRAM
        by["dram"] = {k: 0 for k in OPERANDS}
    access = {lvl: sum(by[lvl].values()) for lvl in ("dram", "glb", "spad")}
    cyc = _cycles(w, arch, cycles_compute, access, ops)
    latency, stall = overlapped(cyc, tiles, arch.overlap)
    return {
        "node": w.node,
        "op": w.op,
        "dataflow": dataflow if w.is_mac else "ppu",
        "mapping": mapping,
        "macs": w.macs,
        "ppu_ops": ops,
        "tiles": tiles,
        "cycles": {**cyc, "stall": stall, "latency": latency},
        "utilization": w.macs / (cyc["compute"] * arch.pes) if cyc["compute"] else 0.0,
        "bytes": by,
        "energy": _energy(w, arch, cost, key, table, ops, access, latency),
        **roofline(w.macs, access["dram"], arch),
        "bound": bound(cyc["compute"], cyc["dram"]),
    }


def roofline(macs: int, dram_bytes: int, arch: Arch) -> dict:
    """Operational intensity (MACs per DRAM byte), the attainable MACs per cycle under the roofline
    min(peak, intensity x Arch.dram_bytes_per_cycle) and row_stationary's balance_point (peak over that
    bandwidth: 48 / 0.8 = 60 on eyeriss), one definition for every dataflow. The bound word is
    row_stationary.bound of the node's compute and DRAM cycles, which the same bandwidth gives."""
    intensity = macs / dram_bytes if dram_bytes else 0.0
    return {
        "intensity": intensity,
        "attainable_macs_per_cycle": min(arch.pes, intensity * arch.dram_bytes_per_cycle),
        "balance_point": balance_point(arch),
    }


def fused_result(w: Workload, arch: Arch, into: str) -> dict:
    """A max pool the post-processing unit runs on the output path of the conv before it (row-stationary:
    the lab's conv block): its cycles, traffic and energy are that conv's; here every term is zero."""
    zero = {k: 0 for k in OPERANDS}
    return {
        "node": w.node,
        "op": w.op,
        "dataflow": "fused",
        "mapping": f"into {into}",
        "macs": 0,
        "ppu_ops": 0,
        "tiles": 0,
        "cycles": {k: 0 for k in (*LEVEL_CYCLES, "stall", "latency")},
        "utilization": 0.0,
        "bytes": {lvl: dict(zero) for lvl in ("dram", "glb", "spad")},
        "energy": {k: 0.0 for k in (*LEVELS, "total")},
        **roofline(0, 0, arch),
        "bound": bound(0, 0),
    }


def _layer_results(graph: Graph, arch: Arch, df: str, ws: list[Workload], opts: dict, fused: dict) -> list:
    """node_result of every node; under row-stationary, a max pool fused after its conv (`fused`:
    search.fused_pools, conv -> (k, pool)) is costed with that conv and listed as fused."""
    key = _energy_key(graph)
    costs = {c.name: c for c in energy_model.graph_costs(graph, opts["zero_points"], arch.accumulator)}
    objective, compat = opts["objective"], opts["compat"]
    table = energy_model.load_table(TABLES[arch.energy_table]) if arch.energy_table else None
    into = {pool_node: conv for conv, (_, pool_node) in fused.items()}
    return [
        fused_result(w, arch, into[w.node])
        if w.node in into
        else node_result(w, arch, df, costs.get(w.node), key, table, compat, objective, fused.get(w.node, (1, ""))[0])
        for w in ws
    ]


def compulsory_bytes(ws: list[Workload], layers: list[dict], fused: dict) -> int:
    """Bytes that must cross DRAM under the model's schedule, each once: every MAC node's weights (packed as
    exported) and int32 biases, the image the input node reads, and every value a node writes to DRAM, at its
    width (the logits among them). The schedule runs node by node and keeps nothing on chip between nodes,
    so a value crosses DRAM exactly when its node writes it out; values that never move are left out:
    flatten's view and concat's output (their producers' writes are the data), and under row-stationary a
    conv's output, which the fused max pool (`fused`: conv -> (k, pool)) reduces on its way out, so the
    block writes the pool's output. Every byte counted is one the model moves, so this never exceeds the
    modeled DRAM total (tests/test_accel.py, over the zoo and every preset and dataflow)."""
    by_node = {w.node: w for w in ws}
    written = {conv: by_node[pool] for conv, (_, pool) in fused.items()}  # what a conv block writes
    total = 0
    for w, lay in zip(ws, layers, strict=True):
        total += w.bytes_of("filter") + w.bytes_of("bias")
        if w.op == OpType.INPUT.value:
            total += w.bytes_of("ifmap")
        if lay["bytes"]["dram"]["ofmap"]:
            total += written.get(w.node, w).bytes_of("ofmap")
    return total


def check_dataflow(arch: Arch, dataflow: str | None) -> str:
    """The dataflow asked for (None: the architecture's first), one the architecture runs."""
    df = dataflow or arch.dataflows[0]
    if df not in arch.dataflows:
        raise UserError(f"--dataflow {df}: architecture {arch.name} runs {', '.join(arch.dataflows)}")
    return df


def with_overlap(arch: Arch, overlap: str | None) -> Arch:
    """The architecture with `overlap` in place of its own (None: as it is), checked as its file's field is."""
    if overlap is None:
        return arch
    if overlap not in OVERLAPS:
        raise UserError(f"--overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    check_overlap(f"--overlap on {arch.name}", arch.timing, overlap)
    return replace(arch, overlap=overlap)


def accel_report(
    graph: Graph,
    arch: Arch,
    dataflow: str | None = None,
    *,
    batch: int = 1,
    compat: bool = False,
    objective: str = "latency",
    zero_points: dict[str, int] | None = None,
    overlap: str | None = None,
) -> dict:
    """Per node results and network totals of `graph` on `arch` (a quantized graph, or a float graph taken
    at 8 bits). compat: SCALE-Sim's output-size rule for the compute cycles (scalesim_compat).
    zero_points: potq.energy.graph_costs' (None for a quantized graph: its own; a float graph's come from
    a zero-point policy, potq.quant.scheme.policy_zero_points, which the caller reads: this interpreter
    does not import the quantizer). overlap: "none" or "double-buffered" in place of the architecture's
    (`overlapped`; None: the architecture's own)."""
    df = check_dataflow(arch, dataflow)
    arch = with_overlap(arch, overlap)
    if compat and arch.timing == RTL_TIMING:
        raise UserError(f"--scalesim-compat: {arch.name} is timed as potq's RTL, which has PyTorch's output sizes")
    ws = workloads(graph, check_batch(batch), arch.accumulator)
    if df == "rs":  # the mapping search's time grows with its grids' cells: bounded before it runs
        check_grid_cells(sum(grid_cells(w, arch) for w in ws if w.is_mac), arch.source or arch.name)
    opts = {"objective": objective, "compat": compat, "zero_points": zero_points}
    fused = fused_pools(graph) if df == "rs" else {}  # the lab's conv blocks: a max pool on the conv's way out
    layers = _layer_results(graph, arch, df, ws, opts, fused)
    total = {
        "macs": sum(r["macs"] for r in layers),
        "cycles": {k: sum(r["cycles"][k] for r in layers) for k in layers[0]["cycles"]},
        "energy": {k: sum(r["energy"][k] for r in layers) for k in (*LEVELS, "total")},
        "bytes": {
            lvl: {k: sum(r["bytes"][lvl][k] for r in layers) for k in OPERANDS} for lvl in ("dram", "glb", "spad")
        },
        # potq's RTL holds the whole model in its memories: nothing must cross DRAM
        "compulsory_dram_bytes": 0 if arch.timing == RTL_TIMING else compulsory_bytes(ws, layers, fused),
    }
    total["seconds"] = total["cycles"]["latency"] / arch.clock_hz
    e_total = total["energy"]["total"]
    share = {k: (total["energy"][k] / e_total if e_total else 0.0) for k in LEVELS}
    return {
        "arch": arch.name,
        "dataflow": df,
        "overlap": arch.overlap,
        "energy_unit": arch.energy_unit,
        "batch": batch,
        "scalesim_compat": compat,
        "layers": layers,
        "total": total,
        "energy_share": share,
        "peak_macs_per_cycle": arch.pes,
        "dram_bytes_per_cycle": arch.dram_bytes_per_cycle,
        **roofline(total["macs"], sum(total["bytes"]["dram"].values()), arch),
        "bound": bound(total["cycles"]["compute"], total["cycles"]["dram"]),
    }


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _bound_cell(lay: dict) -> str:
    return f"fused {lay['mapping']}" if lay["dataflow"] == "fused" else lay["bound"]


def _overlap_words(r: dict) -> str:
    """', double-buffered (N stall cycles)' where the levels overlap; nothing for the serial sum."""
    if r["overlap"] == OVERLAPS[0]:
        return ""
    return f", {r['overlap']} ({r['total']['cycles']['stall']:,} stall cycles)"


def format_table(r: dict) -> str:
    """The per-layer table (markdown), then the totals and the share of energy by level."""
    unit = r["energy_unit"]
    lines = [
        f"Accelerator {r['arch']}, dataflow {r['dataflow']}, batch {r['batch']}{_overlap_words(r)} (energy in {unit})",
        "",
        "| Node | Op | MACs | Compute cyc | DRAM cyc | GLB cyc | PPU cyc | Latency | Util | DRAM B | "
        f"MACs/B | Bound | Energy ({unit}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for lay in r["layers"]:
        c = lay["cycles"]
        lines.append(
            f"| {lay['node']} | {lay['op']} | {lay['macs']:,} | {c['compute']:,} | {c['dram']:,} | {c['glb']:,} | "
            f"{c['ppu']:,} | {c['latency']:,} | {lay['utilization']:.1%} | {sum(lay['bytes']['dram'].values()):,} | "
            f"{lay['intensity']:.2f} | {_bound_cell(lay)} | {_fmt(lay['energy']['total'])} |"
        )
    t = r["total"]
    c = t["cycles"]
    lines.append(
        f"| **Total** | | {t['macs']:,} | {c['compute']:,} | {c['dram']:,} | {c['glb']:,} | {c['ppu']:,} | "
        f"{c['latency']:,} | | {sum(t['bytes']['dram'].values()):,} | {r['intensity']:.2f} | {r['bound']} | "
        f"{_fmt(t['energy']['total'])} |"
    )
    share = ", ".join(f"{k} {v:.1%}" for k, v in r["energy_share"].items())
    lines += [
        "",
        f"Energy by level: {share}. Latency {t['seconds'] * 1e3:.3f} ms at the architecture's clock; "
        f"compulsory DRAM traffic {t['compulsory_dram_bytes']:,} B.",
    ]
    return "\n".join(lines)


CSV_COLUMNS = (
    ["node", "op", "dataflow", "mapping", "macs", "ppu_ops", "tiles"]
    + [f"cycles_{k}" for k in (*LEVEL_CYCLES, "stall", "latency")]
    + ["utilization"]
    + [f"{lvl}_{k}_bytes" for lvl in ("dram", "glb", "spad") for k in OPERANDS]
    + [f"energy_{k}" for k in (*LEVELS, "total")]
    + ["intensity", "attainable_macs_per_cycle", "balance_point", "bound"]
)


def csv_rows(r: dict) -> list[dict]:
    rows = []
    for lay in r["layers"]:
        row = {k: lay[k] for k in ("node", "op", "dataflow", "mapping", "macs", "ppu_ops", "tiles", "utilization")}
        row.update({f"cycles_{k}": v for k, v in lay["cycles"].items()})
        row.update({f"{lvl}_{k}_bytes": lay["bytes"][lvl][k] for lvl in ("dram", "glb", "spad") for k in OPERANDS})
        row.update({f"energy_{k}": v for k, v in lay["energy"].items()})
        row.update({k: lay[k] for k in ("intensity", "attainable_macs_per_cycle", "balance_point", "bound")})
        rows.append(row)
    return rows


def to_csv(r: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(r))
    return buf.getvalue()
