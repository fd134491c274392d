"""The graph's one file format: plain data (JSON-able) plus named tensors, with one writer and one reader.

`to_dict(graph)` gives the description and the tensors; a quantized model file (quant_<label>.pt) holds
both in one torch file (loaded with weights_only=True), and the export's model.json is the same
description with every tensor named by its file. The fields are documented in docs/graph-format.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from potq.ir.graph import Graph, Node, OpType, QType
from potq.ir.rules import Rounding

FORMAT = "potq-graph"
VERSION = 2  # 1 was potq 0.1's list of layers


def tensor_name(node: Node, key: str) -> str:
    return f"{node.name}.{key}"


def _qtype(q: QType) -> dict:
    return {
        "zero_point": q.zero_point,
        "lo": q.lo,
        "hi": q.hi,
        "scale": q.scale,
        "exponent": q.exponent,
        "bits": q.bits,
    }


def _attrs_out(attrs: dict) -> dict:
    out = dict(attrs)
    if "act" in out:  # JSON has no infinity: an open upper bound is null
        out["act"] = [out["act"][0], None if math.isinf(out["act"][1]) else out["act"][1]]
    return out


def _attrs_in(attrs: dict) -> dict:
    out = dict(attrs)
    if "act" in out:
        out["act"] = [float(out["act"][0]), math.inf if out["act"][1] is None else float(out["act"][1])]
    return out


def to_dict(graph: Graph) -> tuple[dict, dict[str, torch.Tensor]]:
    """(description, tensors by name) of a graph."""
    tensors: dict[str, torch.Tensor] = {}
    nodes = []
    for n in graph.nodes:
        refs = {}
        for key, t in n.tensors.items():
            refs[key] = tensor_name(n, key)
            tensors[refs[key]] = t
        nodes.append(
            {
                "name": n.name,
                "op": n.op.value,
                "inputs": list(n.inputs),
                "output": n.output,
                "attrs": _attrs_out(n.attrs),
                "tensors": refs,
            }
        )
    values = {
        v: {"shape": list(s), **({"q": _qtype(graph.q[v])} if v in graph.q else {})} for v, s in graph.shapes.items()
    }
    desc = {
        "format": FORMAT,
        "version": VERSION,
        "scheme": graph.scheme,
        "rounding": graph.rounding.label if graph.rounding is not None else None,
        "rounding_code": int(graph.rounding) if graph.rounding is not None else None,
        "input": graph.input,
        "output": graph.output,
        "values": values,
        "nodes": nodes,
    }
    return desc, tensors


def from_dict(desc: dict, tensor: Callable[[str], torch.Tensor]) -> Graph:
    """The graph of a description; `tensor(name)` gives each tensor. Raises ValueError (or KeyError,
    TypeError) on anything that is not a valid potq graph of this version."""
    if desc.get("format") != FORMAT or desc.get("version") != VERSION:
        raise ValueError(f"format {desc.get('format')!r} version {desc.get('version')!r}, expected {FORMAT} {VERSION}")
    nodes = [
        Node(
            d["name"],
            OpType(d["op"]),
            list(d["inputs"]),
            d["output"],
            _attrs_in(d["attrs"]),
            {key: tensor(ref) for key, ref in d["tensors"].items()},
        )
        for d in desc["nodes"]
    ]
    shapes = {v: tuple(int(x) for x in d["shape"]) for v, d in desc["values"].items()}
    q = {v: QType(**d["q"]) for v, d in desc["values"].items() if "q" in d}
    rounding = None if desc["rounding"] is None else Rounding.of(desc["rounding"])
    graph = Graph(nodes, shapes, desc["input"], desc["output"], q, rounding, desc["scheme"])
    graph.check()
    return graph
