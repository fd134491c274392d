"""Post-training quantization as a library call: capture, calibrate, lower (the integer graph), and the
table of what each node became. No run folder, no trainer, no data module (see potq.jobs.quantize)."""

from __future__ import annotations

import torch
from torch import nn

from potq.ir.capture import capture
from potq.ir.graph import Graph
from potq.quant.lower import calibrate, collect_stats, input_means, lower
from potq.quant.scheme import QuantSettings, needs_sample


def quantize_graph(
    model: nn.Module,
    in_shape,
    mean,
    std,
    calib_x: torch.Tensor,
    settings: QuantSettings,
    stats_cache: dict | None = None,
) -> tuple[Graph, Graph]:
    """(float graph, integer graph) of a model, calibrated on normalized images calib_x. stats_cache: a
    dict shared by the calls for one model and one set of calibration images (several schemes), which
    then collect the calibration statistics once."""
    fgraph = capture(model, tuple(in_shape), mean, std)
    sample = needs_sample(settings)  # only the mse rule reads the sample: the others skip gathering it
    if stats_cache is None:
        stats = None
    else:
        key = (len(calib_x), float(calib_x.sum()))
        stats = stats_cache.get(key)
        if stats is None or (sample and not all(st.keep for st in stats.values())):
            stats = stats_cache[key] = collect_stats(fgraph, calib_x, sample=sample)
    q = calibrate(fgraph, calib_x, settings, stats)  # also sets each MAC node's weight format
    return fgraph, lower(fgraph, q, settings, input_means(fgraph, calib_x))


def _range(values: list[int]) -> str | int | None:
    if not values:
        return None
    return values[0] if min(values) == max(values) else f"{min(values)}..{max(values)}"


def layer_table(graph: Graph) -> list[dict]:
    """One row per node: its exponents, zero points, shifts and output clamp."""
    rows = []
    for n in graph.nodes:
        q_out = graph.q[n.output]
        q_in = graph.q.get(n.inputs[0])
        w_exp = n.tensors.get("w_exp")
        shift = n.tensors.get("shift")
        rows.append(
            {
                "name": n.name,
                "type": n.op.value,
                "inputs": list(n.inputs),
                "relu": n.act is not None,
                "input_exponent": None if q_in is None else q_in.exponent,
                "input_zero_point": None if q_in is None else q_in.zero_point,
                "weight_exponent": None if w_exp is None else [int(e) for e in w_exp],
                "output_exponent": q_out.exponent,
                "output_zero_point": q_out.zero_point,
                "shift": None if shift is None else [int(s) for s in shift],
                "shift_range": None if shift is None else _range([int(s) for s in shift]),
                "align": None if "align" not in n.tensors else [int(a) for a in n.tensors["align"]],
                "output": "int32 logits" if q_out.bits == 32 else f"uint8, clamp [{q_out.lo}, {q_out.hi}]",
            }
        )
    return rows
