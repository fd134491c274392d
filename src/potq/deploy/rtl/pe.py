"""The standalone PEs of low-bit weights (issue 27): which module and which parameters compute a (code, bits)
weight format, read from potq.ir.codes (never retyped in SystemVerilog), and a Verilator harness that runs
several PEs side by side on the same operands, one instance per format.

- `potq_pe_shift.sv`: pot and apot weights, fed their storage codes; shifts and an add, no multiplier. Also the
  array's PE with `potq verify --rtl --pe-kind shift`, for a graph of one format (`shift_format`).
- `potq_pe_mac.sv`: int weights, fed their values; potq_pe's multiplier with X_BITS and W_BITS parameters.
- `potq_pe.sv`: the shipped INT8 PE, which the harness runs beside them as the reference design.

docs/rtl.md describes the ports; tests/test_rtl_pe.py sweeps every storage code against potq.ir.codes, and
benchmarks/pe_area.py counts their Yosys cells."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from potq.deploy.rtl import PE_KINDS, PKG, Params, source_text, sv_value, verilate
from potq.deploy.rtl.pkg import CODE_W
from potq.errors import UserError
from potq.ir.codes import WeightCode, apot_fields, check_act_bits, check_weight_format
from potq.ir.graph import Graph

PE_SOURCES = ("potq_pe.sv", "potq_pe_mac.sv", "potq_pe_shift.sv")
HARNESS = "pe_tb_main.cpp"  # the C++ loop: operands in on stdin, the PEs' registers out on stdout


def pe_shift_params(code: WeightCode | str, bits: int) -> Params:
    """potq_pe_shift's parameters for b-bit pot or apot weights: WCODE (the code's label), W_BITS, and for
    apot the field widths M1, M2 and t1's top exponent TOP (potq.ir.codes.apot_fields)."""
    code = WeightCode.of(code) if isinstance(code, str) else code
    check_weight_format(code, bits)
    if code is WeightCode.INT:
        raise ValueError("int weights take the multiplier PE (potq_pe_mac), not the shift-add PE")
    params: Params = {"WCODE": code.value, "W_BITS": bits}
    if code is WeightCode.APOT:
        m1, m2, top = apot_fields(bits)
        params |= {"M1": m1, "M2": m2, "TOP": top}
    return params


def shift_format(graph: Graph) -> tuple[WeightCode, int]:
    """The one pot or apot format (code, bits) of every MAC node: what `--pe-kind shift` builds its PE for,
    since the shift-add PE's format is fixed at build time. UserError naming the first node that differs."""
    macs = graph.mac_nodes()
    if not macs:
        raise UserError("--pe-kind shift: the graph has no conv or linear node to run on the shift-add PE")
    first = macs[0]
    want = (first.weight_code, first.weight_bits)
    for n in macs:
        if n.weight_code is WeightCode.INT or (n.weight_code, n.weight_bits) != want:
            shift_first = first.weight_code is not WeightCode.INT  # then name the format the others differ from
            other = f" (node {first.name}: {want[1]}-bit {want[0].value})" if shift_first else ""
            raise UserError(
                f"--pe-kind shift: node {n.name} holds {n.weight_bits}-bit {n.weight_code.value} weights{other}; "
                "the shift-add PE takes one pot/apot format (quantize with --bits-all)"
            )
    return want


def pe_build(graph: Graph, pe_kind: str) -> tuple[Params | None, str | None]:
    """(potq_pe_shift's parameters, the format's words) for --pe-kind shift, from the graph's one pot/apot
    format (UserError naming the first node that differs); (None, None) for mac. Before any build."""
    if pe_kind not in PE_KINDS:
        raise UserError(f"--pe-kind {pe_kind!r}: choose from {', '.join(PE_KINDS)}")
    if pe_kind == PE_KINDS[0]:
        return None, None
    code, bits = shift_format(graph)
    return pe_shift_params(code, bits), f"{bits}-bit {code.value}"


def pe_params(code: WeightCode | str, bits: int, act_bits: int = CODE_W) -> tuple[str, Params]:
    """(module, parameters) of the PE for b-bit weights of this code and act_bits-bit activation codes:
    potq_pe_shift for pot and apot (whose x port is always CODE_W + 1 bits), potq_pe_mac for int."""
    code = WeightCode.of(code) if isinstance(code, str) else code
    check_weight_format(code, bits)
    check_act_bits(act_bits)
    if code is WeightCode.INT:
        return "potq_pe_mac", {"X_BITS": act_bits, "W_BITS": bits}
    if act_bits != CODE_W:
        raise ValueError(f"the shift-add PE takes {CODE_W}-bit activation codes, not {act_bits}")
    return "potq_pe_shift", pe_shift_params(code, bits)


def _instance(i: int, module: str, params: Params) -> list[str]:
    """Instance i of the harness: its own weight port, the shared x, last and out_in. A MAC PE's narrower
    weight port takes the low bits of the harness's, its w_out comes back zero-extended."""
    w_bits = int(params.get("W_BITS", CODE_W)) if module == "potq_pe_mac" else CODE_W
    if int(params.get("X_BITS", CODE_W)) != CODE_W:
        raise ValueError("the harness feeds every PE the same CODE_W + 1 bit x")
    ps = ", ".join(f".{k}({sv_value(v)})" for k, v in params.items())
    pad = f"{CODE_W - w_bits}'b0, " if w_bits < CODE_W else ""
    return [
        f"  logic [{w_bits - 1}:0] w_out{i};",
        f"  {module} {'#(' + ps + ') ' if ps else ''}pe{i} (",
        f"      .clk, .rst, .x_in, .w_in(w_in[{i}][{w_bits - 1}:0]), .last, .out_in,",
        f"      .x_out(x_out[{i}]), .w_out(w_out{i}), .out(out[{i}]));",
        f"  assign w_out[{i}] = {{{pad}w_out{i}}};",
    ]


def pe_testbench(pes: list[tuple[str, Params]]) -> str:
    """potq_pe_tb: one instance per (module, parameters), all fed the same x, last and out_in each cycle,
    each its own weight code; their out, x_out and w_out side by side."""
    n = len(pes)
    lines = [
        "// potq_pe_tb: generated by potq.deploy.rtl.pe.pe_testbench (simulation only); one PE per format.",
        "module potq_pe_tb (",
        "    input  logic clk,",
        "    input  logic rst,",
        "    input  logic signed [potq_pkg::CODE_W:0] x_in,",
        "    input  logic last,",
        "    input  logic signed [potq_pkg::ACC_W-1:0] out_in,",
        f"    input  logic [potq_pkg::CODE_W-1:0] w_in [{n}],",
        f"    output logic [potq_pkg::ACC_W-1:0] out [{n}],",
        f"    output logic [potq_pkg::CODE_W:0] x_out [{n}],",
        f"    output logic [potq_pkg::CODE_W-1:0] w_out [{n}]",
        ");",
    ]
    for i, (module, params) in enumerate(pes):
        lines += _instance(i, module, params)
    return "\n".join([*lines, "endmodule"]) + "\n"


def build_pe_tb(pes: list[tuple[str, Params]], shift_pe: Path | None = None) -> tuple[Path, bool]:
    """The harness's Verilator model (cached per source text); shift_pe: a file in potq_pe_shift.sv's place
    (tests/fixtures/rtl holds a broken one). Returns (the executable, whether it was built now)."""
    texts = {name: source_text(name) for name in (PKG, *PE_SOURCES, HARNESS)}
    texts["potq_pe_tb.sv"] = pe_testbench(pes)
    if shift_pe is not None:
        texts["potq_pe_shift.sv"] = Path(shift_pe).read_text()
    return verilate("potq_pe_tb", texts, [], "pe")


def run_pe_tb(exe: Path, x: np.ndarray, last: np.ndarray, out_in: np.ndarray, w: np.ndarray) -> dict:
    """Clock the harness once per cycle t (after one reset cycle) with x[t], last[t], out_in[t] and each PE's
    weight code w[pe, t]; returns each PE's registers after each clock edge: out (int32), x_out (signed),
    w_out (the code), each (PEs, cycles)."""
    n, cycles = w.shape
    head = np.array([n, cycles], dtype=np.int32)
    x_bits = np.asarray(x) & ((1 << (CODE_W + 1)) - 1)  # the port's two's complement bits
    body = np.concatenate([np.stack([x_bits, last, out_in]), w]).T.astype(np.int32)  # one record per cycle
    r = subprocess.run([str(exe)], input=head.tobytes() + body.tobytes(), capture_output=True)
    got = np.frombuffer(r.stdout, dtype=np.int32)
    if r.returncode or got.size != 3 * n * cycles:
        raise RuntimeError(f"the PE harness stopped (exit {r.returncode}): {r.stderr.decode()[-2000:]}")
    out, x_out, w_out = got.reshape(cycles, 3, n).transpose(1, 2, 0)
    x_out = np.where(x_out >= 1 << CODE_W, x_out - (1 << (CODE_W + 1)), x_out)  # 9-bit two's complement
    return {"out": out.astype(np.int64), "x_out": x_out, "w_out": w_out}
