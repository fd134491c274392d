"""potq's own RTL (potq.deploy.rtl, docs/rtl.md) as the accelerator model times it: the `potq-rtl` timing of an
architecture file (the `potq-rtl` preset), node by node the cycles Verilator counts.

Claim: on an R x C array, one image, a node takes
  conv / linear (the output-stationary array; requantization in the columns' PPUs on the output path):
      systolic.rtl_gemm_cycles over all its groups as ONE node (one descriptor latch, one last drain),
  every other node (the vector unit, column 0's PPU): per descriptor 1 (the latch) + one output element a
      cycle, a pool one window tap a cycle; a concat is one copy descriptor per input,
and nothing for memory: the RTL's memories are read combinationally inside those cycles (docs/rtl.md, "How
a node runs": an idealization of banked on-chip SRAMs), and the whole model lives in them, so no byte
crosses DRAM. A batch of N images is N runs of the node (the testbench runs one image at a time).
potq.deploy.rtl.program.rtl_cycles reads the same two rules per descriptor (one home), and `potq verify
--rtl` compares Verilator's count with it. Evidence: tests/test_rtl.py (the model's latency equals the
descriptors' closed form on every node of seed, resnet20, mobilenet-cifar and the README's user net, and
Verilator's count on the tiny net of every op type).
"""

from __future__ import annotations

from dataclasses import replace

from potq.accel.systolic import rtl_gemm_cycles
from potq.accel.workload import Workload
from potq.ir.graph import POOL_OPS

POOL_OP_NAMES = tuple(op.value for op in POOL_OPS)
DESCRIPTOR_LATCH = 1  # cycles the controller takes to latch a node's descriptor before its work


def vector_unit_cycles(elements: int, taps: int = 1, descriptors: int = 1) -> int:
    """The vector unit's cycles: per descriptor the latch, then one element (a pool: one window tap) a cycle."""
    return descriptors * DESCRIPTOR_LATCH + elements * taps


def rtl_cycles(w: Workload, rows: int, cols: int) -> int:
    """`rtl_gemm_cycles` of a conv/linear workload, one image: per group E*F pixels, M filters, a C*R*S window,
    all groups in one node as the RTL runs them."""
    return rtl_gemm_cycles(w.E * w.F, w.M, w.C * w.R * w.S, rows, cols, w.groups)


def node_cycles(w: Workload, rows: int, cols: int) -> tuple[int, int]:
    """(array cycles, vector-unit cycles) of a node over its batch on potq's RTL; the other is 0."""
    one = replace(w, N=1)
    if w.is_mac:
        return w.N * rtl_cycles(one, rows, cols), 0
    taps = w.R * w.S if w.op in POOL_OP_NAMES else 1
    return 0, w.N * vector_unit_cycles(one.outputs, taps, w.sources)
