"""Design-space exploration: each base architecture x PE array x global buffer x dataflow running a whole
network on the accelerator model, and the Pareto front of latency against energy.

Claim: `dse()` returns one DesignPoint per variant and dataflow, in the loops' order (deterministic); a
variant that some layer cannot run is a point with fits=False and the model's one-line reason. `pareto()`
keeps the points no other point dominates. The sweep sits on top of potq.accel.model (which maps its
row-stationary layers with potq.accel.search), so search.py stays the mapping search alone and imports
nothing from the model.
Evidence: tests/test_accel_rs.py (the front on hand-made points, a sweep of a small graph, its table and
plot); tests/test_accel.py (`potq accel --dse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from potq.accel.arch import Arch
from potq.accel.limits import MAX_GLB_BYTES, MAX_PE_SIDE, check_batch, check_dse_points, check_grid_cells
from potq.accel.model import accel_report
from potq.accel.row_stationary import grid_cells
from potq.accel.search import conv_blocks, objective_key
from potq.errors import UserError


@dataclass(frozen=True)
class DesignPoint:
    """One architecture variant running a whole network: its totals, or why it cannot run it."""

    arch: str  # the variant's name: base-<rows>x<cols>-glb<KiB>k
    dataflow: str
    pe_rows: int
    pe_cols: int
    glb_bytes: int
    latency: int = 0  # cycles, the network's total
    energy: float = 0.0  # the network's total, in the architecture's unit
    energy_unit: str = ""
    fits: bool = True
    reason: str = ""  # the first layer no mapping fits, when fits is False

    @property
    def label(self) -> str:
        return f"{self.arch} {self.dataflow}"

    @property
    def edp(self) -> float:
        return self.energy * self.latency


def variant(arch, rows: int, cols: int, glb_bytes: int):
    """The architecture with another PE array and global buffer, everything else kept; within the limits an
    architecture file has (limits.py)."""
    if not (1 <= rows <= MAX_PE_SIDE and 1 <= cols <= MAX_PE_SIDE and 1 <= glb_bytes <= MAX_GLB_BYTES):
        raise UserError(
            f"--dse: a {rows}x{cols} PE array with a {glb_bytes:,} B global buffer: sides must be 1 to {MAX_PE_SIDE}, "
            f"buffers 1 B to {MAX_GLB_BYTES // 2**20} MiB"
        )
    return replace(
        arch, name=f"{arch.name}-{rows}x{cols}-glb{glb_bytes // 1024}k", pe_rows=rows, pe_cols=cols, glb_bytes=glb_bytes
    )


Plan = list[tuple[Arch, list[tuple[int, int]], list[int]]]  # each base with its PE arrays and buffers


def check_plan(graph, plan: Plan, batch: int = 1) -> None:
    """A sweep within limits.py before it runs: its number of design points, each variant's arrays and
    buffers, and the row-stationary search's cells over every variant that runs rs."""
    check_dse_points(sum(len(arrays) * len(glbs) * len(base.dataflows) for base, arrays, glbs in plan))
    blocks = [w for w, _ in conv_blocks(graph, check_batch(batch))]
    cells = 0
    for base, arrays, glbs in plan:
        for rows, cols in arrays:
            for glb in glbs:
                arch = variant(base, rows, cols, glb)
                cells += sum(grid_cells(w, arch) for w in blocks) if "rs" in arch.dataflows else 0
    check_grid_cells(cells, "--dse")


def dse(
    graph,
    archs: Sequence,
    pe_arrays: Sequence[tuple[int, int]] | None = None,
    glb_sizes: Sequence[int] | None = None,
    objective: str = "latency",
    batch: int = 1,
    zero_points: dict[str, int] | None = None,
) -> list[DesignPoint]:
    """Every base architecture x PE array (rows, cols) x global buffer x each of its dataflows, the whole
    network run by potq.accel.model (row-stationary layers mapped by `search` under `objective`). A
    variant that some layer cannot run is kept as a point with fits=False and the one-line reason.
    Defaults: each base's own array and buffer. Order: the loops' order, so the list is deterministic.
    zero_points: as model.accel_report's (a float graph's, from a zero-point policy)."""
    objective_key(objective)  # a wrong objective fails once, before any variant runs
    plan = [
        (base, list(pe_arrays or [(base.pe_rows, base.pe_cols)]), list(glb_sizes or [base.glb_bytes])) for base in archs
    ]
    check_plan(graph, plan, batch)  # too large a sweep fails once, before any variant runs
    points = []
    for base, arrays, glbs in plan:
        for rows, cols in arrays:
            for glb in glbs:
                arch = variant(base, rows, cols, glb)
                for df in arch.dataflows:
                    point = DesignPoint(arch.name, df, rows, cols, glb, energy_unit=arch.energy_unit)
                    try:
                        r = accel_report(graph, arch, df, batch=batch, objective=objective, zero_points=zero_points)
                    except UserError as e:
                        points.append(replace(point, fits=False, reason=str(e)))
                        continue
                    total = r["total"]
                    points.append(
                        replace(point, latency=int(total["cycles"]["latency"]), energy=float(total["energy"]["total"]))
                    )
    return points


def pareto(points: Sequence[DesignPoint]) -> list[DesignPoint]:
    """The points no other point dominates (latency and energy both no worse, one strictly better),
    among those that fit and share one energy unit; sorted by (latency, energy, label)."""
    live = [p for p in points if p.fits]
    units = {p.energy_unit for p in live}
    if len(units) > 1:
        raise UserError(f"pareto: energies in different units ({', '.join(sorted(units))}) cannot be compared")

    def dominated(p: DesignPoint) -> bool:
        return any(
            o.latency <= p.latency and o.energy <= p.energy and (o.latency < p.latency or o.energy < p.energy)
            for o in live
        )

    return sorted((p for p in live if not dominated(p)), key=lambda p: (p.latency, p.energy, p.label))


def plot_dse(points: Sequence[DesignPoint], path: Path | str, title: str = "") -> None:
    """Latency against energy, one marker per dataflow, the Pareto front joined and labelled."""
    from potq.plots import plt, save_figure

    front = pareto(points)
    live = [p for p in points if p.fits]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for df, marker in zip(("rs", "ws", "os", "is"), "o^sD", strict=True):
        pts = [p for p in live if p.dataflow == df]
        if pts:
            ax.scatter([p.latency for p in pts], [p.energy for p in pts], marker=marker, label=df, alpha=0.7)
    ax.step([p.latency for p in front], [p.energy for p in front], where="post", color="k", lw=1, label="Pareto front")
    labels: dict[tuple[int, float], list[str]] = {}  # equal points share one label
    for p in front:
        labels.setdefault((p.latency, p.energy), []).append(
            f"{p.pe_rows}x{p.pe_cols} {p.glb_bytes // 1024}K {p.dataflow}"
        )
    for (lat, en), names in labels.items():
        ax.annotate(", ".join(names), (lat, en), fontsize=7, xytext=(3, 3), textcoords="offset points")
    unit = live[0].energy_unit if live else ""
    ax.set(xlabel="latency (cycles)", ylabel=f"energy ({unit})", title=title or "Design-space exploration")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, Path(path))


def format_dse(points: Sequence[DesignPoint]) -> str:
    """The sweep as a markdown table, Pareto points marked; variants that cannot run say why."""
    front = {(p.arch, p.dataflow) for p in pareto(points)}
    unit = next((p.energy_unit for p in points if p.fits), "")
    lines = [
        f"| architecture | dataflow | PE array | global buffer | latency (cycles) | energy ({unit}) | EDP | Pareto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        size = f"{p.pe_rows}x{p.pe_cols}"
        glb = f"{p.glb_bytes // 1024} KiB" if p.glb_bytes >= 1024 else f"{p.glb_bytes} B"
        if not p.fits:
            lines.append(f"| {p.arch} | {p.dataflow} | {size} | {glb} | does not fit: {p.reason} | | | |")
            continue
        mark = "yes" if (p.arch, p.dataflow) in front else ""
        lines.append(
            f"| {p.arch} | {p.dataflow} | {size} | {glb} | {p.latency:,} | {p.energy:,.0f} | {p.edp:.4g} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def format_pareto(points: Sequence[DesignPoint]) -> str:
    """The Pareto front of latency against energy, fastest first, one line per point."""
    front = pareto(points)
    lines = [f"Pareto front, latency vs energy ({len(front)} of {len(points)} design points):"]
    for p in front:
        glb = f"{p.glb_bytes / 1024:g} KiB"
        lines.append(
            f"  {p.dataflow:<2} {p.pe_rows}x{p.pe_cols} PEs, {glb} buffer: {p.latency:,} cycles, "
            f"{p.energy:,.0f} {p.energy_unit} ({p.arch})"
        )
    return "\n".join(lines) + "\n"
