"""`potq verify --rtl` against planted faults and hostile modules (issues 31 and 32): one test per fault class,
each caught with its node and its cause (a 20-bit PE accumulator by the stress test; a PPU that clamps one code
too low and one that rounds negative ties away from zero by the edge sweep; a renamed port or a missing module
named in the user's file before any build), potq's own modules given as the user's passing; simulations and
builds bounded (a module that loops, floods its output or calls $finish is one line, exit 2; nothing of the
process group outlives the call); the Verilator cache rebuilt when its model is not the one potq built."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from potq.cli import main
from potq.deploy.rtl import BUILT, cached_model, source_text, source_texts
from potq.deploy.rtl.bounded import run_bounded, sweep_stale
from potq.deploy.rtl_causes import Requant, accumulator, causes, pe_accumulators, value_causes, worst_dot
from potq.deploy.rtl_check import check_rtl, ppu_sweep
from potq.deploy.rtl_stress import stress_images, stress_input
from potq.errors import UserError
from potq.golden import IntegerModel
from potq.ir.graph import OpType
from potq.ir.rules import Rounding
from tests.test_deploy import graph_of
from tests.test_graph import EXAMPLE
from tests.test_rtl import needs_verilator, tiny_graph

FIXTURES = Path(__file__).parent / "fixtures" / "rtl"
NARROW_PE = FIXTURES / "narrow_acc_pe.sv"  # a 20-bit accumulator
LOW_CLAMP_PPU = FIXTURES / "low_clamp_ppu.sv"  # clamps at hi - 1
AWAY_PPU = FIXTURES / "away_ties_ppu.sv"  # half-up with negative ties away from zero
RENAMED_PE = FIXTURES / "renamed_port_pe.sv"  # x_in named x_i
TIE = "a tie rounded the other way"
CLAMP = "a clamp off by one (one code inside the bound the exact value reaches)"


# ---- without Verilator ---------------------------------------------------------------------------


def test_a_users_module_file_is_named_with_what_is_wrong_in_it(tmp_path):
    with pytest.raises(UserError, match=rf"--pe {RENAMED_PE}: module potq_pe lacks port x_in and has port x_i"):
        source_texts(pe=RENAMED_PE)
    cases = {
        "misnamed.sv": (
            "module potq_pe2 (input logic clk);\nendmodule\n",
            r"no module potq_pe \(it defines potq_pe2\)",
        ),
        "empty.sv": ("", r"no module potq_pe \(it defines no module: the file is empty\)"),
        "comment.sv": ("// module potq_pe (\n", r"no module potq_pe \(it defines no module\)"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=rf"--pe {tmp_path / name}: {message}"):
            source_texts(pe=tmp_path / name)
    (tmp_path / "binary.sv").write_bytes(b"\x7fELF\x00\x01\xff\xfe")
    with pytest.raises(UserError, match="--ppu .*binary.sv: not a SystemVerilog text file"):
        source_texts(ppu=tmp_path / "binary.sv")
    with pytest.raises(UserError, match="no such SystemVerilog file"):
        source_texts(ppu=tmp_path / "absent.sv")
    # potq's own files, as a user's, pass the check (plain port lists too)
    shutil.copy(FIXTURES.parent.parent.parent / "src/potq/deploy/rtl/potq_pe.sv", tmp_path / "mine.sv")
    assert source_texts(pe=tmp_path / "mine.sv")["potq_pe.sv"] == source_text("potq_pe.sv")
    (tmp_path / "plain.sv").write_text(
        "module potq_pe(clk, rst, x_in, w_in, last, out_in, x_out, w_out, out);\ninput clk;\nendmodule\n"
    )
    source_texts(pe=tmp_path / "plain.sv")


def test_negative_ties_away_from_zero_are_ties_not_a_floor():
    # half-up: -2.5 -> -2; away from zero -3, which floor gives too at every tie (and nowhere else)
    acc = torch.tensor([-5, -3, -1, 1, 3, 5, -6, -4, 7, -7])  # shift 1: ties at every odd value
    rq = Requant(acc, 1, 128, 0, 255, Rounding.HALF_UP)
    want = rq.codes()
    away = torch.where(acc < 0, -((-acc + 1) >> 1), (acc + 1) >> 1) + 128
    floor = rq.codes(rule=Rounding.FLOOR)
    assert bool((away[away != want] == floor[away != want]).all())  # floor agrees at every mismatch...
    from potq.deploy.rtl_causes import rounding_candidates

    assert value_causes(rq, away, want, rounding_candidates(rq)) == {
        TIE: int(((acc < 0) & (acc % 2 == 1)).sum())
    }  # not named
    assert value_causes(rq, floor, want, rounding_candidates(rq)) == {
        "rounds as floor, the model half-up": int((acc % 2 == 1).sum())
    }


def test_a_clamp_one_code_low_is_named_as_such():
    acc = torch.arange(-400, 400, 7)
    rq = Requant(acc, 0, 128, 0, 255, Rounding.HALF_EVEN)
    want = rq.codes()
    got = want.clamp(max=254)
    from potq.deploy.rtl_causes import rounding_candidates

    assert value_causes(rq, got, want, rounding_candidates(rq)) == {CLAMP: int((want == 255).sum())}


def test_pe_faults_are_named_from_the_accumulator():
    graph, _ = graph_of("tiny", rounding="half-up", n=1)
    golden = IntegerModel(graph)
    convs = [n for n in graph.mac_nodes() if n.op is OpType.CONV]
    widest = max(convs, key=lambda n: worst_dot(graph, n))
    first = graph.mac_nodes()[0]  # its input's zero point is 128: x - zp takes both signs
    for n, fault in ((widest, "wraps at 20 bits"), (first, "multiplies |x - zp|"), (first, "reads x - zp as unsigned")):
        x = stress_input(graph, n).x  # the worst case: past 2^19 on `widest`, so a 20-bit accumulator wraps
        want = golden.requantize(n, accumulator(graph, n, [x]).to(torch.int32))[0].to(torch.int64)
        label, acc = next((label, a) for label, a in pe_accumulators(graph, n, [x]) if fault in label)
        got = golden.requantize(n, acc.to(torch.int32))[0].to(torch.int64)
        assert bool((got != want).any()) and causes(graph, n, [x], got, want) == {label: int((got != want).sum())}


def test_stress_inputs_reach_each_nodes_reachable_worst_case():
    graph, images = tiny_graph("half-up", n=1)
    record: dict = {}
    IntegerModel(graph).run(torch.from_numpy(images), record)
    base = {v: t[0] for v, t in record.items()}
    base[graph.input] = torch.from_numpy(images[0]).to(torch.int32)
    groups = stress_images(graph, base)
    nodes = {n.name: n for n in graph.nodes}
    stressed = [s for _, group in groups for s in group]
    assert sorted(s.node for s in stressed) == sorted(n.name for n in graph.mac_nodes())
    for values, group in groups:
        touched = [v for s in group for v in (*nodes[s.node].inputs, nodes[s.node].output)]
        assert len(touched) == len(set(touched))  # no value shared by two stressed nodes of one image
        for s in group:
            q = graph.q[nodes[s.node].inputs[0]]
            assert int(values[nodes[s.node].inputs[0]].min()) >= q.lo
            assert s.reached_dot <= s.worst_dot
    fc = next(s for s in stressed if s.node == "fc")  # a Linear over codes in [lo, hi]: the reachable maximum
    n, q = nodes["fc"], graph.q[nodes["fc"].inputs[0]]
    w = n.tensors["weight"].to(torch.int64)
    up, down = q.hi - q.zero_point, q.lo - q.zero_point
    best = torch.maximum(torch.where(w > 0, w * up, w * down).sum(1), -torch.where(w > 0, w * down, w * up).sum(1))
    assert fc.reached_dot == int(best.max())


def test_a_bounded_run_is_stopped_and_leaves_nothing_running(tmp_path):
    r = run_bounded(["sh", "-c", "while :; do :; done"], timeout=0.2, max_bytes=1 << 16)
    assert r.timed_out and not r.flooded
    r = run_bounded(["yes"], timeout=600, max_bytes=1 << 16)  # stopped by its output cap, not by the clock
    assert r.flooded and len(r.stdout) <= 1 << 16
    pid_file = tmp_path / "pid"
    r = run_bounded(["sh", "-c", f"sleep 600 & echo $! > {pid_file}; echo done"], timeout=600, max_bytes=1 << 16)
    assert r.returncode == 0 and r.stdout == "done\n"
    assert _killed(int(pid_file.read_text()))  # the background sleep went with the group
    r = run_bounded([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"], 600, 1 << 16, stdin=b"abc")
    assert r.stdout == "cba\n"


def _killed(pid: int) -> bool:
    """Gone, a zombie, or with SIGKILL pending (the kernel has yet to run it to its end): no waiting."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return fields["State"].split()[0] in ("Z", "X") or bool(pending & (1 << 8))  # signal 9: bit 8


def test_a_cached_model_is_used_only_when_it_is_the_one_potq_built(tmp_path):
    cached = tmp_path / "potq_tb-4x4-0123"
    (cached / "obj_dir").mkdir(parents=True)
    exe = cached / "obj_dir" / "potq_sim"
    exe.write_bytes(b"a model")
    assert cached_model(cached) is None and not cached.exists()  # no record of the build: removed
    (cached / "obj_dir").mkdir(parents=True)
    exe.write_bytes(b"a model")
    import hashlib

    (cached / BUILT).write_text(hashlib.sha256(b"a model").hexdigest())
    assert cached_model(cached) == exe
    exe.write_bytes(b"#!/bin/sh\necho another program\n")  # replaced, or truncated
    assert cached_model(cached) is None and not cached.exists()


def test_a_killed_runs_work_folders_are_removed(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    dead, alive = tmp_path / f".build-{p.pid}.x1", tmp_path / f".build-{os.getpid()}.x2"
    dead.mkdir()
    alive.mkdir()
    sweep_stale(tmp_path, ".build-")
    assert not dead.exists() and alive.exists()


# ---- under Verilator -------------------------------------------------------------------------------


@needs_verilator
def test_a_20_bit_pe_accumulator_passes_the_vectors_and_fails_the_stress_test():
    graph, images = graph_of(EXAMPLE, rounding="half-up", n=1)
    r = check_rtl(graph, images, 4, 4, pe=NARROW_PE)
    assert r["mismatches"] == 0  # the vectors stay below 2^19
    bad = [s for s in r["stress"] if s["mismatches"]]
    assert bad and r["all_mismatches"] == sum(s["mismatches"] for s in bad)
    for s in bad:
        assert s["reached_dot"] >= 1 << 19 and s["worst_case_dot"] >= s["reached_dot"]
        (cause,) = s["causes"]
        assert cause.startswith("an accumulator overflow: the PE's accumulator wraps at 20 bits"), s


@needs_verilator
def test_a_ppu_clamping_one_code_low_is_caught_by_the_edge_sweep():
    r = ppu_sweep(LOW_CLAMP_PPU)
    for rule in Rounding:
        c = r[rule.label]["causes"]
        assert r[rule.label]["ppu_mismatches"] > 0 and c[CLAMP] > 0.99 * r[rule.label]["ppu_mismatches"], c
        assert not any(label.startswith("rounds as") for label in c)


@needs_verilator
def test_a_ppu_rounding_negative_ties_away_is_named_a_tie_not_a_floor():
    r = ppu_sweep(AWAY_PPU)
    assert r["half-up"]["ppu_mismatches"] > 0 and r["half-up"]["causes"] == {TIE: r["half-up"]["ppu_mismatches"]}
    assert r["half-even"]["ppu_mismatches"] == r["floor"]["ppu_mismatches"] == 0
    graph, images = graph_of(EXAMPLE, rounding="half-up", n=1)
    v = check_rtl(graph, images, 4, 4, ppu=AWAY_PPU)
    assert v["ppu_sweep"]["causes"] == {TIE: r["half-up"]["ppu_mismatches"]}
    assert v["all_mismatches"] == v["mismatches"] + v["ppu_sweep"]["mismatches"]
    causes_seen = {c for n in v["mismatching_nodes"] for c in n["causes"]}
    assert causes_seen <= {TIE}, causes_seen  # never "rounds as floor"


@needs_verilator
def test_verify_rtl_cli_per_fault_class(tiny_run, tmp_path, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--calib", "64"]) == 0
    base = ["verify", "--run", str(tiny_run), "--rtl", "--array", "4x4"]
    src = FIXTURES.parent.parent.parent / "src" / "potq" / "deploy" / "rtl"
    for name in ("potq_ppu.sv", "potq_pe.sv"):  # potq's own modules, given as the user's: exit 0
        shutil.copy(src / name, tmp_path / name)
    assert main([*base, "--ppu", str(tmp_path / "potq_ppu.sv"), "--pe", str(tmp_path / "potq_pe.sv")]) == 0
    out = capsys.readouterr().out
    assert "PPU edge sweep" in out and "PE stress test" in out and "0 mismatching values of" in out
    assert main([*base, "--pe", str(NARROW_PE)]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "wraps at 20 bits" in line]
    assert rows and all(line.startswith("| ") for line in rows)  # a node's row: its name, then the cause
    assert main([*base, "--ppu", str(LOW_CLAMP_PPU)]) == 1
    assert CLAMP in capsys.readouterr().out
    assert main([*base, "--pe", str(RENAMED_PE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(RENAMED_PE) in err[0] and "lacks port x_in" in err[0]


@needs_verilator
def test_hostile_modules_are_one_line_exit_2(tiny_run, monkeypatch, capsys):
    from potq.deploy import rtl_check

    assert main(["quantize", "--run", str(tiny_run), "--calib", "64"]) == 0
    base = ["verify", "--run", str(tiny_run), "--rtl", "--array", "4x4", "--pe"]
    assert main([*base, str(FIXTURES / "finishing_pe.sv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    finishing = FIXTURES / "finishing_pe.sv"  # named, and its line too (Verilator's name for it: potq_pe.sv)
    assert len(err) == 1 and f"--pe {finishing}" in err[0] and f"{finishing}:" in err[0] and "$finish" in err[0], err
    # the time limit, shortened: the loop in an initial block never reaches the first clock edge
    monkeypatch.setattr(rtl_check, "SIM_START_S", 0.5)
    monkeypatch.setattr(rtl_check, "SIM_IMAGE_S", 0.0)
    monkeypatch.setattr(rtl_check, "SIM_PE_CYCLES_PER_S", 1e12)
    assert main([*base, str(FIXTURES / "looping_pe.sv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "looping_pe.sv" in err[0] and "time limit" in err[0], err
