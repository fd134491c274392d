"""Row-stationary mapping search: every mapping of the lab's space decided at once with numpy.

Claim: `search()` finds the best legal mapping of a layer by latency, energy or energy-delay product;
ties break on the mapping tuple (m, n, e, p, q, r, t), smallest first, so the answer is one mapping,
the same in every run. The space is the AI-on-chip lab's (row_stationary.space: the Cartesian product
of its EyerissMapper's candidate lists); m, n, e, p, q, r are the axes of a broadcast grid and t is
solved from the lab's rule r*t = PE sets(e) (one t per (e, r) can pass it); each of the lab's rules
(row_stationary.RULES, shared with the scalar `legal`) is evaluated on the axes it reads, and only the
legal mappings are costed, by row_stationary.terms, the scalar evaluate's own formulas.
`search_scalar()` is the plain reference: a loop over the same product calling legal() and evaluate().
Evidence: tests/test_accel_rs.py checks that both give the same best mapping and the same metrics on
several layers and objectives; benchmarks/accel_search.py times both on every convolution of resnet20.
A layer with no legal mapping is one UserError line naming the layer and the rule that leaves none.
The accelerator model (model.py) maps its row-stationary layers with this search; the design-space sweep
over the model is dse.py, so nothing here imports the model.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from potq.accel.limits import MAX_GRID_CELLS_PER_LAYER, MAX_LEGAL_MAPPINGS_PER_LAYER, MAX_MAPPINGS_CSV_ROWS
from potq.accel.row_stationary import (
    FIELDS,
    RULES,
    Mapping,
    check_workload,
    evaluate,
    glb_usage,
    grid_cells,
    legal,
    space,
    terms,
)
from potq.accel.workload import node_workload
from potq.errors import UserError
from potq.files import save_text
from potq.ir.graph import OpType

OBJECTIVES = {"latency": "latency", "energy": "energy_total", "edp": "edp"}
# The lab's CSV columns (its EyerissAnalyzer.summary: layer, the hardware, the mapping, then the
# metrics); potq's further columns follow them.
LAB_COLUMNS = (
    "layer",
    "pe_array_h",
    "pe_array_w",
    "ifmap_spad_size",
    "filter_spad_size",
    "psum_spad_size",
    "glb_size",
    "bus_bw",
    "noc_bw",
    *FIELDS,
    "glb_usage",
    "glb_access",
    "dram_access",
    "macs",
    "latency",
)
# When no mapping is legal: which rule an empty candidate list stands for.
_EMPTY_AXIS_RULE = {"e": "pe_rows", "r": "pe_rows", "t": "pe_rows", "p": "spad_psum", "q": "spad_ifmap"}


def objective_key(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"--objective {objective}: must be one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[objective]


def _grid(wl, arch) -> tuple[dict[str, list[int]], list[np.ndarray], np.ndarray]:
    """The space as a broadcast grid over (m, n, e, p, q, r), one int64 axis each, with t solved rather
    than enumerated: the lab's rule r*t = sets(e) (the PE sets of R x e PEs the array holds) leaves at
    most one t per (e, r), t = sets(e) // r, so every other t of the product fails that rule. Returns the
    candidate lists, the seven parameter arrays (t shaped over e and r) and where that t is a candidate.
    A grid over limits.MAX_GRID_CELLS_PER_LAYER is refused before it is built (about 12 bytes a cell)."""
    cells = grid_cells(wl, arch)
    if cells > MAX_GRID_CELLS_PER_LAYER:
        raise UserError(
            f"layer {wl.node}: {cells:,} candidate row-stationary mappings on {arch.source or arch.name}, more than "
            f"{MAX_GRID_CELLS_PER_LAYER:,} (the PE array, the scratchpads and the batch multiply them)"
        )
    sp = space(wl, arch)
    axes = []
    for i, k in enumerate(FIELDS[:-1]):
        shape = [1] * (len(FIELDS) - 1)
        shape[i] = len(sp[k])
        axes.append(np.asarray(sp[k], dtype=np.int64).reshape(shape))
    e, r = axes[FIELDS.index("e")], axes[FIELDS.index("r")]
    t = arch.pes // wl.R // e // r
    t_ok = (t >= 1) & (t <= len(sp["t"]))
    return sp, [*axes, t], t_ok


def _masks(wl, arch, pool: int, axes: list[np.ndarray], t_ok: np.ndarray):
    """Each rule's verdict on the grid, in RULES order; the solved t's range goes with the PE-array rule."""
    for name, holds, why in RULES:
        verdict = holds(wl, arch, pool, *axes)
        yield name, (verdict & t_ok if name == "pe_array" else verdict), why


def _no_mapping(wl, arch, pool: int) -> UserError:
    """The error for a layer without a legal mapping: the first rule after which none is left."""
    where = f"layer {wl.node} ({wl.op} C={wl.C} M={wl.M} E={wl.E} R={wl.R}x{wl.S})"
    rules = {name: why for name, _, why in RULES}
    sp, axes, t_ok = _grid(wl, arch)
    for k in FIELDS:
        if not sp[k]:
            rule = _EMPTY_AXIS_RULE[k]
            return UserError(
                f"{where}: no row-stationary mapping fits {arch.source or arch.name}: {rules[rule](wl, arch)}"
            )
    mask = np.ones(tuple(len(sp[k]) for k in FIELDS[:-1]), dtype=bool)
    for name, verdict, why in _masks(wl, arch, pool, axes, t_ok):
        before = mask
        mask = mask & verdict
        if not mask.any():
            msg = f"{where}: no row-stationary mapping fits {arch.source or arch.name}: {why(wl, arch)}"
            if name == "glb":
                use = np.broadcast_to(glb_usage(wl, *axes)["total"], before.shape)[before]
                msg += f" (the smallest pass needs {int(use.min())} B)"
            return UserError(msg)
    raise AssertionError("a legal mapping exists")


def legal_mappings(wl, arch, pool: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """Every legal mapping as parameter arrays (in the product's lexicographic order) and the size of
    the space they were drawn from."""
    check_workload(wl)
    sp, axes, t_ok = _grid(wl, arch)
    size = int(np.prod([len(sp[k]) for k in FIELDS]))
    if not size:
        raise _no_mapping(wl, arch, pool)
    mask = np.ones(tuple(len(sp[k]) for k in FIELDS[:-1]), dtype=bool)
    for _, verdict, _ in _masks(wl, arch, pool, axes, t_ok):
        mask &= verdict
    if not mask.any():
        raise _no_mapping(wl, arch, pool)
    idx = np.nonzero(mask)
    out = {k: axes[i].reshape(-1)[idx[i]] for i, k in enumerate(FIELDS[:-1])}
    out["t"] = np.broadcast_to(axes[-1], mask.shape)[idx]
    return out, size


def ranked(wl, arch, objective: str = "latency", pool: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """All legal mappings and their terms, best first: by the objective, then by (m, n, e, p, q, r, t).
    More than limits.MAX_LEGAL_MAPPINGS_PER_LAYER are refused before they are costed (750 bytes each)."""
    key = objective_key(objective)
    params, size = legal_mappings(wl, arch, pool)
    if len(params["m"]) > MAX_LEGAL_MAPPINGS_PER_LAYER:
        raise UserError(
            f"layer {wl.node}: {len(params['m']):,} legal row-stationary mappings on {arch.source or arch.name}, "
            f"more than {MAX_LEGAL_MAPPINGS_PER_LAYER:,} to cost (the PE array and the scratchpads multiply them)"
        )
    d = terms(wl, arch, pool, *(params[k] for k in FIELDS))
    n = len(params["m"])
    cols = {k: np.broadcast_to(np.asarray(v), (n,)) for k, v in d.items()}
    order = np.lexsort([params[k] for k in reversed(FIELDS)] + [cols[key]])
    return {k: v[order] for k, v in {**params, **cols}.items()}, size


def _result(wl, arch, best: Mapping, pool: int, objective: str, size: int, count: int) -> dict[str, Any]:
    metrics = evaluate(wl, arch, best, pool)
    metrics.update(objective=objective, space=size, legal=count)
    return metrics


def search(wl, arch, objective: str = "latency", pool: int = 1) -> tuple[Mapping, dict[str, Any]]:
    """The best legal mapping of one layer and its evaluate() metrics (plus the space and legal counts)."""
    table, size = ranked(wl, arch, objective, pool)
    best = Mapping(*(int(table[k][0]) for k in FIELDS))
    return best, _result(wl, arch, best, pool, objective, size, len(table["m"]))


def search_scalar(wl, arch, objective: str = "latency", pool: int = 1) -> tuple[Mapping, dict[str, Any]]:
    """The reference search: every mapping of the product in turn, legal() then evaluate(), keeping
    the smallest (objective, mapping tuple)."""
    key = objective_key(objective)
    check_workload(wl)
    sp = space(wl, arch)
    best, best_key, size, count = None, None, 0, 0
    for values in itertools.product(*(sp[k] for k in FIELDS)):
        size += 1
        mapping = Mapping(*values)
        if not legal(wl, arch, mapping, pool):
            continue
        count += 1
        k = (evaluate(wl, arch, mapping, pool)[key], values)
        if best_key is None or k < best_key:
            best, best_key = mapping, k
    if best is None:
        raise _no_mapping(wl, arch, pool)
    return best, _result(wl, arch, best, pool, objective, size, count)


def _fused_pool(graph, node) -> int:
    """k when the node's output feeds only a k x k max pool of stride k without padding, else 1."""
    users = graph.consumers(node.output)
    if len(users) != 1 or users[0].op is not OpType.MAXPOOL or node.output == graph.output:
        return 1
    kernel, stride, pad = (users[0].attrs[key] for key in ("kernel", "stride", "padding"))
    kernel, stride, pad = ([v, v] if isinstance(v, int) else list(v) for v in (kernel, stride, pad))
    return kernel[0] if kernel[0] == kernel[1] == stride[0] == stride[1] and pad == [0, 0] else 1


def fused_pools(graph) -> dict[str, tuple[int, str]]:
    """conv (or linear) node name -> (k, the name of the k x k max pool fused after it), for the conv
    blocks that have one (the rule of `conv_blocks`)."""
    out = {}
    for n in graph.mac_nodes():
        k = _fused_pool(graph, n)
        if k > 1:
            out[n.name] = (k, graph.consumers(n.output)[0].name)
    return out


def conv_blocks(graph, batch: int = 1) -> list[tuple[Any, int]]:
    """The lab's convolution blocks of a graph: each conv (and linear) node's Workload with the k of the
    max pool fused after it into the post-processing unit, as the lab does (1: none)."""
    return [(node_workload(graph, n, batch), _fused_pool(graph, n)) for n in graph.mac_nodes()]


def _cell(v) -> str:
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return str(v)


def mappings_csv(
    path: Path | str,
    layers: Sequence,
    arch,
    objective: str = "latency",
    pools: Sequence[int] | None = None,
) -> int:
    """Write every legal mapping of every layer, best first per layer, under the lab's column names
    (then potq's: rank, the objective, every term of row_stationary.terms). Nothing is written unless
    every layer has a mapping, nor more than limits.MAX_MAPPINGS_CSV_ROWS rows. Returns the number of rows.
    Each layer's table becomes text before the next is ranked, so one table at a time is held."""
    hw = [arch.pe_rows, arch.pe_cols, *(arch.spad_bytes[k] for k in ("ifmap", "filter", "psum"))]
    hw += [arch.glb_bytes, arch.bus_bytes_per_cycle, arch.noc_bytes_per_cycle]
    lab = set(LAB_COLUMNS)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    rows = 0
    if not layers:
        out.writerow([*LAB_COLUMNS, "rank", "objective"])
    for j, wl in enumerate(layers):
        table = ranked(wl, arch, objective, (pools or [1] * len(layers))[j])[0]
        extra = [k for k in table if k not in lab]
        if j == 0:
            out.writerow([*LAB_COLUMNS, "rank", "objective", *extra])
        if rows + len(table["m"]) > MAX_MAPPINGS_CSV_ROWS:
            raise UserError(
                f"--mappings-csv: more than {MAX_MAPPINGS_CSV_ROWS:,} legal mappings by layer {wl.node} on "
                f"{arch.source or arch.name}; nothing written"
            )
        for i in range(len(table["m"])):
            lab_vals = [table[k][i] for k in LAB_COLUMNS[9:]]
            out.writerow([wl.node, *hw, *map(_cell, lab_vals), i + 1, objective, *(_cell(table[k][i]) for k in extra)])
            rows += 1
    save_text(buf.getvalue(), Path(path))
    return rows
