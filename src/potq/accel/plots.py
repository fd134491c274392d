"""The accelerator model's figures: the roofline of every MAC layer, and energy by level per layer.

Claim: both read only accel_report dicts (model.py), so a figure shows exactly the numbers of accel.json.
The roofline puts each conv/linear node at its operational intensity (MACs per DRAM byte) and its achieved
MACs per cycle (MACs / the node's serial latency), under each architecture's roof min(PEs, intensity x DRAM
bytes per cycle), the ridge at the balance point. Evidence: tests/test_run.py (the `potq run` step writes
both).
"""

from __future__ import annotations

from pathlib import Path

from potq.accel.model import LEVELS
from potq.plots import plt, save_figure


def _label(r: dict) -> str:
    return f"{r['arch']} {r['dataflow']}"


def plot_roofline(reports: list[dict], path: Path) -> None:
    """One roof per architecture, one point per MAC layer (log-log)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, r in enumerate(reports):
        color = f"C{i}"
        mac = [lay for lay in r["layers"] if lay["macs"] and lay["cycles"]["latency"]]
        xs = [lay["intensity"] for lay in mac]
        ys = [lay["macs"] / lay["cycles"]["latency"] for lay in mac]
        balance, bw, peak = r["balance_point"], r["dram_bytes_per_cycle"], r["peak_macs_per_cycle"]
        lo, hi = min([*xs, balance]) / 4, max([*xs, balance]) * 4
        ax.plot([lo, balance, hi], [lo * bw, peak, peak], color=color, lw=1.2, label=f"{_label(r)} roof")
        ax.scatter(xs, ys, color=color, s=18, label=f"{_label(r)} layers")
    ax.set(xlabel="operational intensity (MACs per DRAM byte)", ylabel="MACs per cycle", title="Roofline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, Path(path))


def plot_energy_levels(reports: list[dict], path: Path) -> None:
    """Per architecture, each node's energy stacked by level (nodes that cost nothing left out)."""
    fig, axes = plt.subplots(len(reports), 1, figsize=(10, 3.6 * len(reports)), squeeze=False)
    for ax, r in zip(axes[:, 0], reports, strict=True):
        layers = [lay for lay in r["layers"] if lay["energy"]["total"] > 0]
        names = [lay["node"] for lay in layers]
        bottom = [0.0] * len(layers)
        for level in LEVELS:
            vals = [lay["energy"][level] for lay in layers]
            ax.bar(names, vals, bottom=bottom, label=level)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set(ylabel=f"energy ({r['energy_unit']})", title=f"Energy by level: {_label(r)}")
        ax.tick_params(axis="x", rotation=30)
        for t in ax.get_xticklabels():
            t.set_ha("right")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=len(LEVELS))
    fig.tight_layout()
    save_figure(fig, Path(path))
