"""Figures, drawn with matplotlib's headless backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from potq.files import atomic_write  # noqa: E402


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_curves(history: list[dict], path: Path) -> None:
    """The reference report's 'Loss and Accuracy Curve': train and validation against epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "o-"), ("val", "s--")):  # markers: one epoch is still a visible point
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Loss and Accuracy Curve")
    save_figure(fig, path)


def plot_fronts(
    points: dict[str, tuple[float, ...]], xlabels: list[str], ylabel: str, fronts: list[list[str]], path: Path
) -> None:
    """One panel per cost: each entry's (cost_1, ..., cost_k, y) as a labelled point, and the panel's front (the
    labels in `fronts[i]`, by cost) joined by a line."""
    fig, axes = plt.subplots(1, len(xlabels), figsize=(6 * len(xlabels), 4.5), squeeze=False)
    for i, (ax, xlabel) in enumerate(zip(axes[0], xlabels, strict=True)):
        for label, p in points.items():
            ax.plot([p[i]], [p[-1]], "o")
            ax.annotate(label, (p[i], p[-1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted(fronts[i], key=lambda k: points[k][i])
        ax.plot([points[k][i] for k in front], [points[k][-1] for k in front], "-", color="gray", alpha=0.6)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_bars(
    labels: list[str],
    series: dict[str, list[float]],
    ylabel: str,
    title: str,
    path: Path,
    log: bool = False,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Grouped bars, one group per label, one bar per series."""
    fig, ax = plt.subplots(figsize=(min(12, max(6, 0.35 * len(labels) * len(series))), 4.5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    save_figure(fig, path)
