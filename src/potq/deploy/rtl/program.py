"""The accelerator's program and memories, generated from the integer graph: one descriptor per node (a concat
is one COPY per input), the weight and parameter memories, the address of every value, and per image a memory
image holding every value's golden integers. Also the closed form of the cycles each descriptor takes
(`rtl_cycles`), which tests/test_rtl.py holds equal to Verilator's count.

Layout: every value (the image included) gets a contiguous region of the activation memory, one 32-bit word
per element (b-bit codes 0..2^b - 1, the logits int32), row-major over its shape (C, H, W), in graph order.
Weights are bytes (uint8 input tables; a MAC node's int8 weight values, or for the shift-add PE their b-bit
storage codes, potq.ir.codes.encode_weights), biases and shifts 32-bit words: the hex files of potq export."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from potq.accel.rtl import vector_unit_cycles
from potq.accel.systolic import os_gemm_cycles, rtl_gemm_cycles
from potq.deploy.rtl.pkg import DESC_FIELDS, DESC_WORDS, OPCODES
from potq.errors import UserError
from potq.ir.codes import encode_weights
from potq.ir.graph import POOL_OPS, WINDOW_OPS, Graph, Node, OpType, pair

# memory sizes of potq_tb (its ACT_AW, W_AW, P_AW, D_AW parameters)
ACT_WORDS, W_BYTES, P_WORDS, D_WORDS = 1 << 22, 1 << 22, 1 << 18, 1 << 16
POOL_OPCODES = tuple(OPCODES[op.name] for op in POOL_OPS)  # the vector unit's pooling opcodes, one per pool op


@dataclass
class Program:
    desc: list[dict[str, int]] = field(default_factory=list)
    node_of: list[str] = field(default_factory=list)  # the node of each descriptor
    base: dict[str, int] = field(default_factory=dict)  # value -> its first activation address
    act_words: int = 0
    wgt: list[np.ndarray] = field(default_factory=list)  # byte chunks, in address order
    par: list[np.ndarray] = field(default_factory=list)  # int32 chunks, in address order
    w_next: int = 0
    p_next: int = 0
    codes: bool = False  # the weight memory holds MAC weights' storage codes (the shift-add PE), not their values

    def add_wgt(self, a: np.ndarray) -> int:
        self.wgt.append(np.asarray(a).reshape(-1).astype(np.int64) & 0xFF)
        self.w_next += self.wgt[-1].size
        return self.w_next - self.wgt[-1].size

    def add_par(self, a: np.ndarray) -> int:
        self.par.append(np.asarray(a).reshape(-1).astype(np.int64))
        self.p_next += self.par[-1].size
        return self.p_next - self.par[-1].size


def _chw(graph: Graph, v: str) -> tuple[int, int, int]:
    s = graph.shapes[v]
    return (s[0], 1, 1) if len(s) == 1 else (s[0], s[1], s[2])


# One function per op kind: (graph, program, node, the descriptor's shared fields) -> the node's descriptors.
Desc = dict[str, int]


def _mac(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    w = n.tensors["weight"].numpy()  # the values (int8), whatever the node's format
    if p.codes:  # the shift-add PE decodes storage codes (below 8 bits: they fit the byte, upper bits zero)
        w = encode_weights(w, n.weight_code, n.weight_bits)
    d.update(OP=OPCODES["MAC"], WB=p.add_wgt(w), BB=p.add_par(n.tensors["bias"].numpy()))
    d.update(REQUANT=int(not graph.q[n.output].accumulator))
    return [d]


def _linear(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    """A 1x1 convolution of a 1x1 image of C*H*W channels."""
    d.update(C=math.prod(graph.shapes[n.inputs[0]]), H=1, W=1)
    return _mac(graph, p, n, d)


def _lut(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    d.update(OP=OPCODES["LUT"], WB=p.add_wgt(n.tensors["lut"].numpy()))
    return [d]


def _add(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    al = [int(a) for a in n.tensors["align"].tolist()]
    d.update(OP=OPCODES["ADD"], IN1=p.base[n.inputs[1]], ZP1=graph.q[n.inputs[1]].zero_point, AL0=al[0], AL1=al[1])
    return [d]


def _pool(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    d.update(OP=OPCODES[n.op.name])  # the vector unit's MAXPOOL or AVGPOOL
    return [d]


def _copy(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    """A flatten moves the codes unchanged: the layout is already row-major over (C, H, W)."""
    d.update(OP=OPCODES["COPY"])
    return [d]


def _concat(graph: Graph, p: Program, n: Node, d: Desc) -> list[Desc]:
    """One COPY per input, each into its slice of the output."""
    pieces, offset = [], 0
    for v in n.inputs:
        size = math.prod(graph.shapes[v])
        pieces.append({**d, "OP": OPCODES["COPY"], "IN0": p.base[v], "OUT": p.base[n.output] + offset, "SIZE": size})
        offset += size
    return pieces


DESC_KERNELS: dict[OpType, Callable[[Graph, Program, Node, Desc], list[Desc]]] = {
    OpType.INPUT: _lut,
    OpType.CONV: _mac,
    OpType.LINEAR: _linear,
    OpType.ADD: _add,
    OpType.MAXPOOL: _pool,
    OpType.AVGPOOL: _pool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _copy,
}


def _desc(graph: Graph, p: Program, n: Node) -> list[Desc]:
    """The descriptors of one node (several for a concat): the fields every op fills, then its kernel's; the
    last descriptor checks the whole output."""
    q_out, out = graph.q[n.output], n.output
    c, h, w = _chw(graph, n.inputs[0])
    o, oh, ow = _chw(graph, out)
    d = {"IN0": p.base[n.inputs[0]], "OUT": p.base[out], "C": c, "H": h, "W": w, "O": o, "OH": oh, "OW": ow}
    d.update(
        G=1,
        KH=1,
        KW=1,
        SH=1,
        SW=1,
        ZP0=graph.q[n.inputs[0]].zero_point if n.inputs[0] in graph.q else 0,
        SIZE=o * oh * ow,
    )
    if not q_out.accumulator:
        d.update(ZPO=q_out.zero_point, LO=q_out.lo, HI=q_out.hi)
    if "shift" in n.tensors:  # before the kernel: the parameter memory's order is shifts, then biases
        d.update(SB=p.add_par(n.tensors["shift"].numpy()), SHIFT_PER_CH=int(n.tensors["shift"].numel() > 1))
    if n.op in WINDOW_OPS:
        (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
        d.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, G=n.attrs.get("groups", 1))
    pieces = DESC_KERNELS[n.op](graph, p, n, d)
    pieces[-1].update(CHK_BASE=p.base[out], CHK_SIZE=math.prod(graph.shapes[out]))
    return pieces


def build_program(graph: Graph, codes: bool = False) -> Program:
    """The descriptors and memories of the graph; codes: MAC weights as storage codes (--pe-kind shift)."""
    p = Program(codes=codes)
    for v in [graph.input] + [n.output for n in graph.nodes]:
        p.base[v] = p.act_words
        p.act_words += math.prod(graph.shapes[v])
    for n in graph.nodes:
        for d in _desc(graph, p, n):
            p.desc.append(d)
            p.node_of.append(n.name)
    for what, used, room in (
        ("activation", p.act_words, ACT_WORDS),
        ("weight", p.w_next, W_BYTES),
        ("parameter", p.p_next, P_WORDS),
        ("descriptor", len(p.desc) * DESC_WORDS, D_WORDS),
    ):
        if used > room:
            raise UserError(f"the model needs {used:,} words of {what} memory; potq's RTL testbench has {room:,}")
    return p


def _hex(values: np.ndarray, digits: int) -> str:
    mask = (1 << (4 * digits)) - 1
    fmt = f"{{:0{digits}x}}".format
    return "\n".join(map(fmt, (np.asarray(values, dtype=np.int64).reshape(-1) & mask).tolist())) + "\n"


def write_program(p: Program, folder: Path) -> None:
    """desc.hex, wgt.hex, par.hex for potq_tb's $readmemh."""
    words = np.array([[d.get(f, 0) for f in DESC_FIELDS] + [0] * (DESC_WORDS - len(DESC_FIELDS)) for d in p.desc])
    (folder / "desc.hex").write_text(_hex(words, 8))
    (folder / "wgt.hex").write_text(_hex(np.concatenate(p.wgt or [np.zeros(1)]), 2))
    (folder / "par.hex").write_text(_hex(np.concatenate(p.par or [np.zeros(1)]), 8))


def write_image(graph: Graph, p: Program, values: dict[str, np.ndarray], folder: Path, k: int) -> None:
    """img<k>.hex: every value of image k (values: by name, each without the batch axis) at its address."""
    order = [graph.input] + [n.output for n in graph.nodes]
    (folder / f"img{k}.hex").write_text(_hex(np.concatenate([np.asarray(values[v]).reshape(-1) for v in order]), 8))


def scale_sim_os_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """SCALE-Sim 3.0.0's output-stationary "Total Cycles" of a GEMM (M x K by K x N) when nothing stalls: the
    accelerator model's count (potq.accel.systolic). tests/fixtures/rtl/scalesim_os.json holds SCALE-Sim's own
    numbers (benchmarks/rtl_vs_scalesim.py) and tests/test_rtl.py checks this against them."""
    return os_gemm_cycles(m, n, k, rows, cols)


def mac_cycles(m: int, n: int, k: int, rows: int, cols: int, groups: int = 1) -> int:
    """Cycles of one MAC node (per group an M x N output, K deep) on potq's R x C output-stationary array: the
    accelerator model's prediction for this RTL (potq.accel.systolic.rtl_gemm_cycles), which tests/test_rtl.py
    holds equal to Verilator's count."""
    return rtl_gemm_cycles(m, n, k, rows, cols, groups)


def rtl_cycles(d: dict[str, int], rows: int, cols: int) -> int:
    """The cycles of one descriptor on an R x C array, from its fields (see potq_core.sv)."""
    if d["OP"] == OPCODES["MAC"]:
        g = d.get("G", 1)
        k = d["C"] // g * d["KH"] * d["KW"]
        return mac_cycles(d["OH"] * d["OW"], d["O"] // g, k, rows, cols, g)
    taps = d["KH"] * d["KW"] if d["OP"] in POOL_OPCODES else 1
    return vector_unit_cycles(d["SIZE"], taps)  # the vector unit: one window tap (or element) per cycle
