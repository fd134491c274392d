"""Does the RTL compute the golden model's integers? Every node of every test vector runs through potq's
accelerator (potq.deploy.rtl: PPU, PE, output-stationary array, vector unit) under Verilator, and each output
value is compared with the golden model's. Each node reads the golden values of its inputs, so a mismatch is
the node's own (never inherited); each mismatching value gets one cause (potq.deploy.rtl_causes). Cycles per
node are Verilator's count; `predicted_cycles` is the closed form (potq.deploy.rtl.program.rtl_cycles) and
must equal it.

With a user's module the check goes further than the vectors, which rarely reach the edges: a user's PPU first
runs the edge sweep (`ppu_sweep`, the cases tests/test_rtl.py holds potq's PPU to), a user's PE the stress test
(potq.deploy.rtl_stress: every MAC node at its worst-case accumulator). Every simulation runs bounded
(potq.deploy.rtl.bounded): a time limit from the cycles it should take, its output capped; a module that loops,
floods the output or stops the simulation is one line (UserError)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from potq.deploy.rtl import PE_KINDS, build_sim, in_user_files, user_files
from potq.deploy.rtl.bounded import Ran, pid_folder, run_bounded
from potq.deploy.rtl.pe import pe_build
from potq.deploy.rtl.program import Program, build_program, rtl_cycles, write_image, write_program
from potq.deploy.rtl_causes import Requant, causes, rounding_candidates, value_causes
from potq.deploy.rtl_stress import Stress, stress_images
from potq.errors import UserError
from potq.golden import IntegerModel
from potq.ir.arith import shift_round
from potq.ir.graph import Graph
from potq.ir.rules import Rounding

# The simulation's time limit: SIM_START_S to load the memories, then SIM_IMAGE_S per image and the cycles it
# should take, each costing one PE-cycle per PE and SIM_CYCLE_OVERHEAD for the rest, at SIM_PE_CYCLES_PER_S:
# about a tenth of the speed Verilator ran resnet20 at here with the load at 10 on 2 cores (a 16x16 array
# 139,000 cycles/s, 4x4 1.5 million); a module that loops is stopped there instead of running for ever.
SIM_START_S, SIM_IMAGE_S, SIM_CYCLE_OVERHEAD, SIM_PE_CYCLES_PER_S = 60.0, 5.0, 64, 4e6
SIM_LINE_BYTES = 200  # the output kept per line the simulation should print (a module that $displays: stopped)
TMP = "potq-rtl-"  # the simulation's folder in the system's temporary folder: potq-rtl-<pid>.<random>


def parse_array(text: str) -> tuple[int, int]:
    """--array RxC (each 1..64)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if m is None or not all(1 <= int(v) <= 64 for v in m.groups()):
        raise UserError(f"--array {text!r}: give rows x columns, each from 1 to 64, e.g. 16x16")
    return int(m.group(1)), int(m.group(2))


LINE = re.compile(r"img (\d+) desc (\d+) cycles (\d+) mismatches (\d+)")


def sim_seconds(cycles: int, images: int, pes: int) -> float:
    """The time limit of a simulation of `images` images on an array of `pes` PEs, `cycles` cycles in all."""
    return SIM_START_S + SIM_IMAGE_S * images + cycles * (pes + SIM_CYCLE_OVERHEAD) / SIM_PE_CYCLES_PER_S


def check_ran(r: Ran, what: str, limit: float, lines: int, expected: int, users: dict[str, Path]) -> None:
    """One line (UserError) when a bounded simulation ran past its limit, flooded its output or stopped early,
    naming the user's files (`users`: potq.deploy.rtl.user_files) where they were in it."""
    who = _who(users)
    if r.timed_out:
        raise UserError(
            f"{what} with {who} ran past its time limit of {limit:.0f} s (from the cycles it should take) and was "
            "stopped: does a module loop?"
        )
    if r.flooded:
        raise UserError(f"{what} with {who} printed too much and was stopped: does a module $display every cycle?")
    if r.returncode or lines != expected:
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
        raise UserError(
            f"{what} with {who} stopped after {lines} of {expected} results (exit {r.returncode})"
            + (f": {in_user_files(last[0][:200], users)}" if last else "")
        )


def run_sim(
    exe: Path,
    folder: Path,
    images: int,
    descriptors: int,
    rounding: Rounding,
    cycles: int,
    pes: int,
    users: dict[str, Path] | None = None,
) -> list[tuple[int, ...]]:
    """Run the Verilator model of an array of `pes` PEs over a written program, bounded (sim_seconds of the
    `cycles` it should take in all; SIM_LINE_BYTES per expected line); (image, descriptor, cycles, mismatches)
    per line."""
    expected, limit = images * descriptors, sim_seconds(cycles, images, pes)
    cmd = [str(exe), f"+dir={folder}", str(images), str(descriptors), str(int(rounding))]
    r = run_bounded(cmd, limit, max(1 << 20, SIM_LINE_BYTES * expected))
    rows = [tuple(int(v) for v in m.groups()) for m in LINE.finditer(r.stdout)]
    check_ran(r, "the RTL simulation", limit, len(rows), expected, users or {})
    return rows


def _who(users: dict[str, Path]) -> str:
    """Whose modules a simulation runs, for its messages: "your --pe FILE" (and --ppu), or potq's RTL."""
    flags = [f"{'--ppu' if name == 'potq_ppu.sv' else '--pe'} {path}" for name, path in users.items()]
    return "your " + " and ".join(flags) if flags else "potq's RTL"


@dataclass
class Images:
    """The memory images one simulation runs: per image its values (name -> no batch axis) and the nodes whose
    comparison counts (None: every node; a stress image: its stressed nodes)."""

    values: list[dict[str, torch.Tensor]] = field(default_factory=list)
    counted: list[set[str] | None] = field(default_factory=list)


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
    weights' storage codes); `pe` replaces that kind's module file, and adds the stress test; `ppu` replaces
    potq_ppu.sv, and runs the edge sweep first."""
    shift, pe_format = pe_build(graph, pe_kind)  # a graph the shift PE can't take is refused before the build
    users = user_files(ppu, pe, shift)
    sweep = ppu_sweep(ppu) if ppu is not None else None
    t0 = time.perf_counter()
    exe, built = build_sim(rows, cols, ppu, pe, shift=shift)
    t_build = time.perf_counter() - t0
    todo, stressed = _images(graph, images, stress=pe is not None)
    prog = build_program(graph, codes=shift is not None)
    with pid_folder(TMP) as folder:
        write_program(prog, folder)
        for k, values in enumerate(todo.values):
            write_image(graph, prog, {v: t.numpy() for v, t in values.items()}, folder, k)
        cycles = len(todo.values) * sum(rtl_cycles(d, rows, cols) for d in prog.desc)
        t1 = time.perf_counter()
        lines = run_sim(exe, folder, len(todo.values), len(prog.desc), graph.rounding, cycles, rows * cols, users)
        t_sim = time.perf_counter() - t1
        nodes = _per_node(graph, prog, lines, todo, folder, rows, cols)
    vectors = [n for n in nodes if n["image_kind"] == "vector"]
    stress = _stress_rows(nodes, stressed)
    bad = sum(n["mismatches"] for n in vectors)
    extra = sum(n["mismatches"] for n in stress) + (sweep[graph.rounding.label]["ppu_mismatches"] if sweep else 0)
    return {
        "consumer": "RTL (Verilator)",
        "array": f"{rows}x{cols}",
        "ppu": str(ppu) if ppu else "potq_ppu.sv",
        "pe": str(pe) if pe else ("potq_pe_shift.sv" if shift else "potq_pe.sv"),
        "pe_kind": pe_kind,
        "pe_format": pe_format,  # the shift PE's weight format (its parameters); None for mac (values)
        "rounding": graph.rounding.label,
        "images": len(images),
        "compared_values": sum(n["values"] for n in vectors),
        "mismatches": bad,  # the vectors'
        "all_mismatches": bad + extra,  # and the edge sweep's and the stress test's: the verdict
        "mismatching_nodes": [n for n in vectors if n["mismatches"]],
        "cycles_per_image": sum(n["cycles"] for n in vectors),
        "predicted_cycles_per_image": sum(n["predicted_cycles"] for n in vectors),
        "nodes": [{k: v for k, v in n.items() if k != "image_kind"} for n in vectors],
        "ppu_sweep": _sweep_summary(sweep, graph.rounding) if sweep else None,  # --ppu: the edge sweep
        "stress": stress,  # --pe: every MAC node at its worst-case accumulator
        "build_seconds": t_build if built else 0.0,
        "simulation_seconds": t_sim,
    }


def _images(graph: Graph, images: np.ndarray, stress: bool) -> tuple[Images, list[Stress]]:
    """The vectors' memory images (every value of each, the golden model's) and, with `stress`, the PE's
    stress images after them (potq.deploy.rtl_stress); the stressed nodes in graph order."""
    record: dict[str, torch.Tensor] = {}
    IntegerModel(graph).run(torch.from_numpy(np.ascontiguousarray(images)), record)
    record[graph.input] = torch.from_numpy(np.ascontiguousarray(images)).to(torch.int32)
    todo = Images([{v: t[k] for v, t in record.items()} for k in range(len(images))], [None] * len(images))
    stressed: list[Stress] = []
    for values, group in stress_images(graph, todo.values[0]) if stress else []:
        todo.values.append(values)
        todo.counted.append({s.node for s in group})
        stressed += group
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return todo, sorted(stressed, key=lambda s: order[s.node])


def _per_node(graph: Graph, prog: Program, lines, todo: Images, folder: Path, rows: int, cols: int) -> list[dict]:
    """One row per node over the vectors (image_kind "vector", with its cycles on image 0) and one per stressed
    node over the stress images ("stress"): values compared, mismatches and their causes."""
    nodes = {n.name: n for n in graph.nodes}
    out: dict[tuple[str, str], dict] = {}
    for img, d, cycles, bad in lines:
        name, counted = prog.node_of[d], todo.counted[img]
        if counted is not None and name not in counted:
            continue  # a stress image: only its stressed nodes read inputs meant for them
        kind = "vector" if counted is None else "stress"
        e = out.setdefault(
            (kind, name),
            {"node": name, "op": nodes[name].op.value, "values": 0, "mismatches": 0, "causes": {}, "cycles": 0}
            | {"predicted_cycles": 0, "image_kind": kind},
        )
        if img == 0:
            e["cycles"] += cycles
            e["predicted_cycles"] += rtl_cycles(prog.desc[d], rows, cols)
        if prog.desc[d].get("CHK_SIZE", 0) == 0:
            continue
        e["values"] += prog.desc[d]["CHK_SIZE"]
        if bad:
            e["mismatches"] += bad
            for cause, count in _causes_of(graph, nodes[name], todo.values[img], folder / f"out_img{img}_d{d}.hex"):
                e["causes"][cause] = e["causes"].get(cause, 0) + count
    return list(out.values())


def _causes_of(graph: Graph, n, values: dict[str, torch.Tensor], out_hex: Path) -> list[tuple[str, int]]:
    """The causes of node n's mismatches in one image, from the output the testbench wrote (out_hex)."""
    want = values[n.output].to(torch.int64)
    words = [int(x, 16) for x in out_hex.read_text().split() if not x.startswith("@")]
    raw = np.array(words, dtype=np.int64)
    got = torch.from_numpy(np.where(raw >= 1 << 31, raw - (1 << 32), raw)).view(want.shape)
    return list(causes(graph, n, [values[v][None] for v in n.inputs], got, want).items())


def _stress_rows(rows: list[dict], stressed: list[Stress]) -> list[dict]:
    """The stress test's result per MAC node: the worst case, what the synthetic input reached, the verdict."""
    by_node = {r["node"]: r for r in rows if r["image_kind"] == "stress"}
    out = []
    for s in stressed:
        r = by_node[s.node]
        out.append(
            {"node": s.node, "op": r["op"], "worst_case_dot": s.worst_dot, "reached_dot": s.reached_dot}
            | {"values": r["values"], "mismatches": r["mismatches"], "causes": r["causes"]}
        )
    return out


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
    itself when requant = 0) and name the PPU's causes (potq.deploy.rtl_causes)."""
    exe, _ = build_sim(0, 0, ppu=ppu, sweep=True)
    cases = sweep_cases()
    text = "\n".join(" ".join(str(int(v)) for v in row) for row in cases) + "\n"
    limit = sim_seconds(0, 0, 0) + len(cases) / 1000
    r = run_bounded([str(exe)], limit, SIM_LINE_BYTES * len(cases), stdin=text.encode())
    lines = [line.split() for line in r.stdout.splitlines()]
    ok = [row for row in lines if len(row) == 2 * len(Rounding) and all(re.fullmatch(r"-?\d+", v) for v in row)]
    users = user_files(ppu, None)  # potq's PPU, or the user's
    check_ran(r, "the PPU's edge sweep", limit, len(ok), len(cases), users)
    out = torch.tensor([[int(v) for v in row] for row in ok], dtype=torch.int64)
    acc, shift = torch.from_numpy(cases[:, 0]), torch.from_numpy(cases[:, 1]).clamp(min=-31)
    zp, lo, hi, requant = (torch.from_numpy(cases[:, i]) for i in (2, 3, 4, 5))
    result = {"cases": len(cases)}
    for rule in Rounding:
        # left shifts past 31 only saturate the clamp: a nonzero int32 shifted 31 bits lies beyond every code
        rq = Requant(acc, shift, zp, lo, hi, rule)
        want_y = torch.where(requant == 1, rq.codes(), acc)
        got_r, got_y = out[:, int(rule)], out[:, len(Rounding) + int(rule)]
        result[rule.label] = {
            "shifter_mismatches": int((got_r != shift_round(acc, shift, rule)).sum()),
            "ppu_mismatches": int((got_y != want_y).sum()),
            "causes": _sweep_causes(rq, requant == 1, got_y, want_y),
        }
    return result


def _sweep_causes(rq: Requant, requant: torch.Tensor, got: torch.Tensor, want: torch.Tensor) -> dict[str, int]:
    """The causes of the sweep's PPU mismatches: requantized cases as a node's (rtl_causes.value_causes), and
    the accumulator passed through changed where requant = 0."""
    out = {}
    passed = int(((got != want) & ~requant).sum())
    if passed:
        out["changes the accumulator it should pass through (requant = 0)"] = passed
    sub = Requant(rq.acc[requant], rq.shift[requant], rq.zp[requant], rq.lo[requant], rq.hi[requant], rq.rule)
    g, w = got[requant], want[requant]
    if bool((g != w).any()):
        out |= value_causes(sub, g, w, rounding_candidates(sub))
    return out


def _sweep_summary(sweep: dict, rule: Rounding) -> dict:
    """What check_rtl keeps of the edge sweep: the model's rule's mismatches and their causes."""
    mine = sweep[rule.label]
    return {"cases": sweep["cases"], "rounding": rule.label, "mismatches": mine["ppu_mismatches"]} | {
        "causes": mine["causes"]
    }
