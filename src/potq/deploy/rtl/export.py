"""`potq export --format rtl`: rtl/ holds potq's SystemVerilog (potq_pkg.sv generated), the Verilator testbench
(potq_tb.sv, tb_main.cpp) and the memories it loads with $readmemh: desc.hex, wgt.hex, par.hex and img<k>.hex
(every value of test vector k at its address: the golden integers the testbench compares with)."""

from __future__ import annotations

from pathlib import Path

import torch

from potq.deploy.rtl import LINT, PE_KINDS, SHIFT_PE, SOURCES, TB, rtl_sources
from potq.deploy.rtl.pe import pe_build
from potq.deploy.rtl.pkg import DESC_FIELDS, DESC_WORDS
from potq.deploy.rtl.program import build_program, write_image, write_program
from potq.ir.graph import Graph

BUILD = (
    "verilator --cc --exe --build -MAKEFLAGS OPT_FAST=-O1 {lint} --top-module potq_tb -o potq_sim -GR=16 -GC=16 "
    "potq_pkg.sv {sources}"
)


def write_rtl(graph: Graph, folder: Path, images, record: dict[str, torch.Tensor], pe_kind: str = PE_KINDS[0]) -> dict:
    """Write rtl/ for `images` (uint8, (N, C, H, W)) and the golden model's `record` of them, on the array of
    `pe_kind`'s PE (potq.deploy.rtl.PE_KINDS: shift needs one pot/apot format, checked by pe_build before any
    file); model.json's "rtl" entry."""
    shift, pe_format = pe_build(graph, pe_kind)
    rtl_sources(folder, shift=shift)
    prog = build_program(graph, codes=shift is not None)
    write_program(prog, folder)
    values = {**record, graph.input: torch.as_tensor(images)}
    for k in range(len(images)):
        write_image(graph, prog, {v: t[k].numpy() for v, t in values.items()}, folder, k)
    sources = " ".join((*SOURCES, *((SHIFT_PE,) if shift else ()), *TB))
    return {
        "folder": "rtl",
        "pe_kind": pe_kind,
        "pe_format": pe_format,  # the shift PE's weight format; None for mac (the weight memory holds values)
        "build": BUILD.format(lint=" ".join(LINT), sources=sources),
        "run": f"obj_dir/potq_sim +dir=. {len(images)} {len(prog.desc)} {int(graph.rounding)}",
        "run_note": "arguments: images, descriptors, rounding code; prints cycles and mismatches per descriptor",
        "descriptors": [{"node": n, **d} for n, d in zip(prog.node_of, prog.desc, strict=True)],
        "descriptor_fields": list(DESC_FIELDS),
        "descriptor_words": DESC_WORDS,
        "addresses": prog.base,
        "docs": "docs/rtl.md",
    }
