"""Which width and weight format each node takes: `--bits W/A --weights CODE` for the network, the first and the
last MAC layer kept at 8-bit int weights and 8-bit inputs unless `--bits-all` (their error reaches the logits
unattenuated, and they hold few of the weights: HAWQ-V3 and APoT keep them so too), and `--precision FILE`
(what `potq mixed` writes: per node its weights' bits and code and its output's bits) over both.

The result is written into the float graph once, before calibration: MAC nodes carry attrs w_bits and w_code
(lowering and the simulator read them there), and `value_bits` gives each value's activation width (values that
share a QType share the widest of their members' widths)."""

from __future__ import annotations

import json
from pathlib import Path

from potq.errors import UserError
from potq.files import read_json
from potq.ir.bounds import shared_groups
from potq.ir.codes import WeightCode, check_act_bits, check_weight_format
from potq.ir.graph import Graph, OpType
from potq.ir.rules import CODE_BITS
from potq.quant.rules import QuantSettings

Entry = tuple[str, int, str, int]  # (node name, w_bits, w_code, a_bits): QuantSettings.precision


ENTRY_KEYS = {"w_bits": CODE_BITS, "w_code": WeightCode.INT.value, "a_bits": CODE_BITS}  # and their defaults


def read_precision(path: Path) -> tuple[Entry, ...]:
    """A precision file: {"nodes": {name: {"w_bits": 4, "w_code": "apot", "a_bits": 4}, ...}} (other top-level keys,
    such as what `potq mixed` records beside it, are ignored); each entry checked: integer widths, a known code,
    no unknown key (a typo would leave its node at 8 bits unseen). The node names are checked against the model
    in `annotate`. One UserError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--precision {path}: no such file")
    try:
        nodes = read_json(path)["nodes"]
        entries = tuple(_entry(str(name), e) for name, e in sorted(nodes.items()))
    except UserError as e:
        raise UserError(f"--precision {path}: {e}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise UserError(f"--precision {path}: not a precision file ({type(e).__name__}: {e})") from None
    for name, w_bits, code, a_bits in entries:
        try:
            check_weight_format(WeightCode.of(code), w_bits)
            check_act_bits(a_bits)
        except ValueError as e:
            raise UserError(f"--precision {path}: node {name}: {e}") from None
    return entries


def _entry(name: str, e: dict) -> Entry:
    unknown = set(e) - set(ENTRY_KEYS)
    if unknown:
        raise UserError(f"node {name}: unknown key {sorted(unknown)[0]!r}; a node takes {', '.join(ENTRY_KEYS)}")
    w_bits, code, a_bits = (e.get(k, default) for k, default in ENTRY_KEYS.items())
    if type(w_bits) is not int or type(a_bits) is not int or not isinstance(code, str):
        raise UserError(f"node {name}: w_bits and a_bits must be integers and w_code a name, got {e}")
    return name, w_bits, code, a_bits


def annotate(fgraph: Graph, settings: QuantSettings) -> None:
    """Set every MAC node's w_bits and w_code (attrs) by the settings' rules."""
    edge = edge_nodes(fgraph, settings)
    overrides = _overrides(fgraph, settings)
    for n in fgraph.mac_nodes():
        bits, code = (CODE_BITS, WeightCode.INT) if n.name in edge else (settings.w_bits, settings.weights)
        if n.name in overrides:
            bits, code = overrides[n.name][0], WeightCode.of(overrides[n.name][1])
        n.attrs["w_bits"], n.attrs["w_code"] = bits, code.value


def edge_nodes(fgraph: Graph, settings: QuantSettings) -> set[str]:
    """The first and the last MAC node: 8-bit int weights whatever --bits says, unless --bits-all."""
    macs = fgraph.mac_nodes()
    return {macs[0].name, macs[-1].name} if macs and not settings.bits_all else set()


def value_bits(fgraph: Graph, settings: QuantSettings) -> dict[str, int]:
    """Every value's activation width: --bits' A, except the image's codes and the last MAC layer's input
    (8 unless --bits-all); a precision file's a_bits for a node's output, over those; the widest of a group of
    values that share one QType."""
    bits = {n.output: settings.a_bits for n in fgraph.nodes}
    for v in pinned_values(fgraph, settings):
        bits[v] = CODE_BITS
    chosen = {fgraph_node(fgraph, name).output: a for name, (_, _, a) in _overrides(fgraph, settings).items()}
    group = shared_groups(fgraph)
    widest: dict[str, int] = {}
    for v, b in chosen.items():  # a precision file's choice wins over the defaults in its group
        widest[group[v]] = max(widest.get(group[v], 0), b)
    chosen_groups = {group[u] for u in chosen}
    for v, b in bits.items():
        if group[v] not in chosen_groups:
            widest[group[v]] = max(widest.get(group[v], 0), b)
    return {v: widest[group[v]] for v in bits}


def pinned_values(fgraph: Graph, settings: QuantSettings) -> set[str]:
    """The values kept 8-bit codes whatever --bits says (unless --bits-all): the image's, the last MAC's input."""
    if settings.bits_all:
        return set()
    macs = fgraph.mac_nodes()
    last = set(macs[-1].inputs) if macs else set()
    return {n.output for n in fgraph.nodes if n.op is OpType.INPUT or n.output in last}


def fgraph_node(fgraph: Graph, name: str):
    return next(n for n in fgraph.nodes if n.name == name)


def _overrides(fgraph: Graph, settings: QuantSettings) -> dict[str, tuple[int, str, int]]:
    names = {n.name for n in fgraph.nodes}
    macs = {n.name for n in fgraph.mac_nodes()}
    out = {}
    for name, w_bits, code, a_bits in settings.precision:
        if name not in names:
            raise UserError(f"--precision: no node {name!r} in this model (its nodes: {', '.join(sorted(names))})")
        if name not in macs and (w_bits, code) != (CODE_BITS, WeightCode.INT.value):
            raise UserError(f"--precision: node {name!r} has no weights; give it a_bits only")
        out[name] = (w_bits, code, a_bits)
    return out
