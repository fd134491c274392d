"""Does the RTL compute the golden model's integers? Every node of every test vector runs through potq's
accelerator (potq.deploy.rtl: PPU, PE, output-stationary array, vector unit) under Verilator, and each output
value is compared with the golden model's. Each node reads the golden values of its inputs, so a mismatch is
the node's own (never inherited). A mismatching value gets one cause, from the node's exact accumulator
(recomputed here in int64/float64 from the golden inputs): outside the clamp, rounded by another rule (or
truncated toward zero), a tie rounded the other way, off by more, or, for nodes without a rounding shift,
a wrong value. Cycles per node are Verilator's count; `predicted_cycles` is the closed form
(potq.deploy.rtl.program.rtl_cycles) and must equal it."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from potq.deploy.rtl import PE_KINDS, build_sim
from potq.deploy.rtl.pe import pe_build
from potq.deploy.rtl.program import build_program, rtl_cycles, write_image, write_program
from potq.errors import UserError
from potq.golden import IntegerModel
from potq.ir.arith import shift_round
from potq.ir.graph import MAC_OPS, Graph, Node, OpType, pair, row_view
from potq.ir.rules import Rounding


def parse_array(text: str) -> tuple[int, int]:
    """--array RxC (each 1..64)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if m is None or not all(1 <= int(v) <= 64 for v in m.groups()):
        raise UserError(f"--array {text!r}: give rows x columns, each from 1 to 64, e.g. 16x16")
    return int(m.group(1)), int(m.group(2))


def accumulator(graph: Graph, n: Node, xs: list[torch.Tensor]) -> torch.Tensor | None:
    """A requantizing node's exact accumulator (int64), from its golden inputs; None for the others."""
    q = graph.q
    if n.op in MAC_OPS:
        x = xs[0].to(torch.float64) - q[n.inputs[0]].zero_point
        w, b = n.tensors["weight"].to(torch.float64), n.tensors["bias"].to(torch.float64)
        if n.op is OpType.LINEAR:
            return F.linear(x.flatten(1), w, b).to(torch.int64)  # exact: |acc| < 2^31 < 2^53
        a = n.attrs
        return F.conv2d(x, w, b, tuple(pair(a["stride"])), tuple(pair(a["padding"])), 1, a["groups"]).to(torch.int64)
    if n.op is OpType.ADD:
        align = n.tensors["align"].tolist()
        return sum((x.to(torch.int64) - q[v].zero_point) << int(s) for x, v, s in zip(xs, n.inputs, align, strict=True))
    if n.op is OpType.AVGPOOL:
        a = n.attrs
        x = xs[0].to(torch.float64) - q[n.inputs[0]].zero_point
        k, s, p = (tuple(pair(a[key])) for key in ("kernel", "stride", "padding"))
        return F.avg_pool2d(x, k, s, p, divisor_override=1).to(torch.int64)
    return None


def _shift(n: Node, acc: torch.Tensor) -> torch.Tensor:
    """The node's right shift(s) shaped to broadcast over one image's accumulator (per output channel)."""
    shift = n.tensors["shift"].to(torch.int64)
    return row_view(shift, acc.dim()) if shift.numel() > 1 else shift.reshape(())


def candidates(graph: Graph, n: Node, acc: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The codes a requantizing node would give from its exact accumulator under the wrong rounding: each
    rule other than the model's, and truncation toward zero (C's integer division), each labelled."""
    q, rule = graph.q[n.output], graph.rounding
    shift = _shift(n, acc)
    s = shift.clamp(min=0)
    trunc = torch.where(shift < 0, acc << (-shift).clamp(min=0), torch.where(acc < 0, -((-acc) >> s), acc >> s))
    out = [(f"rounds as {r.label}, the model {rule.label}", shift_round(acc, shift, r)) for r in Rounding if r != rule]
    out.append(("truncates toward zero instead of rounding", trunc))
    return [(label, (r + q.zero_point).clamp(q.lo, q.hi)) for label, r in out]


def causes(graph: Graph, n: Node, xs: list[torch.Tensor], got: torch.Tensor, want: torch.Tensor) -> dict[str, int]:
    """Each mismatching value of node n's output (got against want, one image) counted under one cause: a
    wrong rounding that explains every mismatch of the node names them all; else value by value, the first
    of: outside the clamp, a wrong rounding, a tie rounded the other way, off by one, off by more."""
    bad = got != want
    acc = accumulator(graph, n, xs)
    q = graph.q[n.output]
    if q.bits == 32:
        return {"the int32 accumulator differs (MAC, bias or output chain: no rounding involved)": int(bad.sum())}
    if acc is None:
        return {f"a wrong value ({n.op.value} moves codes: no arithmetic involved)": int(bad.sum())}
    acc = acc[0]
    labelled = candidates(graph, n, acc)
    for label, cand in labelled:
        if bool((got[bad] == cand[bad]).all()):
            return {label: int(bad.sum())}
    s = _shift(n, acc).clamp(min=0)
    tie = (s > 0) & ((acc & ((1 << s) - 1)) == (1 << (s - 1).clamp(min=0)))
    one = (got - want).abs() == 1
    checks = [(f"outside the clamp [{q.lo}, {q.hi}]", (got < q.lo) | (got > q.hi))]
    checks += [(label, got == cand) for label, cand in labelled]
    checks += [("a tie rounded the other way", tie & one), ("off by one, not at a tie", one)]
    out, left = {}, bad.clone()
    for label, hit in checks:
        count = int((left & hit).sum())
        if count:
            out[label] = count
            left &= ~hit
    if int(left.sum()):
        out["off by more than one"] = int(left.sum())
    return out


LINE = re.compile(r"img (\d+) desc (\d+) cycles (\d+) mismatches (\d+)")


def run_sim(exe: Path, folder: Path, images: int, descriptors: int, rounding: Rounding) -> list[tuple[int, ...]]:
    """Run the Verilator model over a written program; (image, descriptor, cycles, mismatches) per line."""
    r = subprocess.run(
        [str(exe), f"+dir={folder}", str(images), str(descriptors), str(int(rounding))], capture_output=True, text=True
    )
    rows = [tuple(int(v) for v in m.groups()) for m in LINE.finditer(r.stdout)]
    if r.returncode or len(rows) != images * descriptors:
        raise RuntimeError(f"the RTL simulation stopped (exit {r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    return rows


def check_rtl(
    graph: Graph,
    images: np.ndarray,
    rows: int = 16,
    cols: int = 16,
    ppu: Path | None = None,
    pe: Path | None = None,
    pe_kind: str = PE_KINDS[0],
) -> dict:
    """Every node of every image (uint8, (N, C, H, W)) through the RTL against the golden model. pe_kind:
    "mac" (potq_pe, weight values) or "shift" (potq_pe_shift for the graph's one pot/apot format, fed the
    weights' storage codes); `pe` replaces that kind's module file."""
    shift, pe_format = pe_build(graph, pe_kind)  # a graph the shift PE can't take is refused before the build
    t0 = time.perf_counter()
    exe, built = build_sim(rows, cols, ppu, pe, shift=shift)
    t_build = time.perf_counter() - t0
    golden = IntegerModel(graph)
    record: dict[str, torch.Tensor] = {}
    golden.run(torch.from_numpy(np.ascontiguousarray(images)), record)
    record[graph.input] = torch.from_numpy(np.ascontiguousarray(images)).to(torch.int32)
    prog = build_program(graph, codes=shift is not None)
    with tempfile.TemporaryDirectory(prefix="potq-rtl-") as tmp:
        folder = Path(tmp)
        write_program(prog, folder)
        for k in range(len(images)):
            write_image(graph, prog, {v: t[k].numpy() for v, t in record.items()}, folder, k)
        t1 = time.perf_counter()
        lines = run_sim(exe, folder, len(images), len(prog.desc), graph.rounding)
        t_sim = time.perf_counter() - t1
        nodes = _per_node(graph, prog, lines, record, folder, rows, cols)
    bad = sum(n["mismatches"] for n in nodes)
    return {
        "consumer": "RTL (Verilator)",
        "array": f"{rows}x{cols}",
        "ppu": str(ppu) if ppu else "potq_ppu.sv",
        "pe": str(pe) if pe else ("potq_pe_shift.sv" if shift else "potq_pe.sv"),
        "pe_kind": pe_kind,
        "pe_format": pe_format,  # the shift PE's weight format (its parameters); None for mac (values)
        "rounding": graph.rounding.label,
        "images": len(images),
        "compared_values": sum(n["values"] for n in nodes),
        "mismatches": bad,
        "mismatching_nodes": [n for n in nodes if n["mismatches"]],
        "cycles_per_image": sum(n["cycles"] for n in nodes),
        "predicted_cycles_per_image": sum(n["predicted_cycles"] for n in nodes),
        "nodes": nodes,
        "build_seconds": t_build if built else 0.0,
        "simulation_seconds": t_sim,
    }


def _per_node(graph, prog, lines, record, folder: Path, rows: int, cols: int) -> list[dict]:
    nodes = {n.name: n for n in graph.nodes}
    out: dict[str, dict] = {}
    for img, d, cycles, bad in lines:
        name = prog.node_of[d]
        n = nodes[name]
        e = out.setdefault(
            name,
            {
                "node": name,
                "op": n.op.value,
                "values": 0,
                "mismatches": 0,
                "causes": {},
                "cycles": 0,
                "predicted_cycles": 0,
            },
        )
        if img == 0:
            e["cycles"] += cycles
            e["predicted_cycles"] += rtl_cycles(prog.desc[d], rows, cols)
        if prog.desc[d].get("CHK_SIZE", 0) == 0:
            continue
        e["values"] += prog.desc[d]["CHK_SIZE"]
        if bad:
            e["mismatches"] += bad
            want = record[n.output][img].to(torch.int64)
            raw = np.array(
                [int(x, 16) for x in (folder / f"out_img{img}_d{d}.hex").read_text().split() if not x.startswith("@")],
                dtype=np.int64,
            )
            got = torch.from_numpy(np.where(raw >= 1 << 31, raw - (1 << 32), raw)).view(want.shape)
            xs = [record[v][img : img + 1] for v in n.inputs]
            for cause, count in causes(graph, n, xs, got, want).items():
                e["causes"][cause] = e["causes"].get(cause, 0) + count
    return list(out.values())


def sweep_cases(seed: int = 0) -> np.ndarray:
    """The PPU's edge cases (acc, shift, zp, lo, hi, requant): every shift from -32 to SHIFT_CAP and beyond,
    accumulators at the int32 edges, at ties and next to them (both signs), and random ones; the zero points
    and code ranges of every activation width (potq.ir.rules: 2^(b-1), [0, 2^b - 1]) and random ones."""
    from potq.ir.rules import ACT_BITS, INT32_MAX, SHIFT_CAP, act_range, act_zero_point

    rng = np.random.default_rng(seed)
    lo32, hi32 = -INT32_MAX - 1, INT32_MAX
    rows = []
    for s in [*range(-32, SHIFT_CAP + 1), SHIFT_CAP + 1, 100, 127, -128]:
        accs = {lo32, lo32 + 1, lo32 + 2, -2, -1, 0, 1, 2, hi32 - 1, hi32}
        if 1 <= s <= 31:
            for k in (-(1 << (31 - s)), -3, -2, -1, 0, 1, 2, 3, (1 << (31 - s)) - 1):
                tie = k * (1 << s) + (1 << (s - 1))
                accs.update(t for t in (tie - 1, tie, tie + 1, -tie, -tie - 1, -tie + 1) if lo32 <= t <= hi32)
        accs.update(int(v) for v in rng.integers(lo32, hi32 + 1, 20))
        accs.update(int(v) for v in rng.integers(-(1 << 12), 1 << 12, 20))
        for a in sorted(accs):
            b = int(rng.choice(ACT_BITS))
            zp = int(rng.choice([0, act_zero_point(b, signed=True), int(rng.integers(0, 256))]))
            lo, hi = sorted(int(v) for v in rng.integers(0, 256, 2)) if rng.random() < 0.3 else act_range(b)
            rows.append((a, s, zp, lo, hi, int(rng.random() < 0.9)))
    return np.array(rows, dtype=np.int64)


def ppu_sweep(ppu: Path | None = None) -> dict:
    """Run the edge cases through potq_shift_round and the PPU (potq's, or `ppu`) under each rounding rule;
    count the results that differ from potq.ir.arith.shift_round (then + zp, clamp; or the accumulator
    itself when requant = 0)."""
    exe, _ = build_sim(0, 0, ppu=ppu, sweep=True)
    cases = sweep_cases()
    text = "\n".join(" ".join(str(int(v)) for v in row) for row in cases) + "\n"
    r = subprocess.run([str(exe)], input=text, capture_output=True, text=True)
    out = np.array([[int(v) for v in line.split()] for line in r.stdout.splitlines()], dtype=np.int64)
    if r.returncode or out.shape != (len(cases), 2 * len(Rounding)):
        raise RuntimeError(f"the PPU sweep stopped (exit {r.returncode}): {r.stderr[-2000:]}")
    acc, shift = torch.from_numpy(cases[:, 0]), torch.from_numpy(cases[:, 1])
    zp, lo, hi, requant = (torch.from_numpy(cases[:, i]) for i in (2, 3, 4, 5))
    result = {"cases": len(cases)}
    for rule in Rounding:
        want_r = shift_round(acc, shift.clamp(min=-31), rule)  # left shifts past 31 only saturate the clamp
        code = torch.maximum(torch.minimum(want_r + zp, hi), lo)
        # exactly: a nonzero int32 shifted left 32 bits or more lies beyond every code (int64 can't hold it)
        code = torch.where((shift < -31) & (acc != 0), torch.where(acc > 0, hi, lo), code)
        want_y = torch.where(requant == 1, code, acc)
        result[rule.label] = {
            "shifter_mismatches": int((torch.from_numpy(out[:, int(rule)]) != want_r).sum()),
            "ppu_mismatches": int((torch.from_numpy(out[:, len(Rounding) + int(rule)]) != want_y).sum()),
        }
    return result
