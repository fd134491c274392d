"""The graph that `potq energy` and `potq accel` cost, and its zero points, made once: a run's quantized graph
with its own zero points and shifts, or a float model's captured graph at potq's zero-point policy (or the
reference report's 128 everywhere). The API's network_costs reads the same."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from potq.ir.capture import capture
from potq.ir.graph import Graph
from potq.quant.scheme import policy_zero_points
from potq.runs.quantized import load_quantized


def model_graph(model: nn.Module, in_shape: tuple[int, ...], act_zero_point: int | None = None):
    """A float model's captured graph (no normalization: costs read no values) and its policy zero points."""
    graph = capture(model.eval(), in_shape, [0.0] * in_shape[0], [1.0] * in_shape[0])
    return graph, policy_zero_points(graph, act_zero_point)


def run_graph(run: Path, scheme: str, act_zero_point: int | None = None) -> tuple[Graph, dict[str, int] | None]:
    """A run's quantized graph; its own zero points (None) unless act_zero_point asks for the policy's."""
    graph = load_quantized(run, scheme)[0]
    return graph, policy_zero_points(graph, act_zero_point)
