"""potq's RTL (potq.deploy.rtl) under Verilator against the golden model: the PPU's edge sweep, every value of
every node of tiny synthetic nets (every op type, grouped and depthwise convolutions, padded max pooling,
partial folds on both array axes) under each rounding rule on a 4x4 and a 16x16 array, the zoo's nets and the
README's user net, the cycle count's closed form, a user's broken PPU caught with its causes, the export, and
Verilator's absence. Verilator builds once per array size per session (the cache); CI installs it."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from potq.cli import main
from potq.deploy.export import write_export
from potq.deploy.rtl import SOURCES, build_sim, rtl_sources
from potq.deploy.rtl.pkg import package_text
from potq.deploy.rtl.program import build_program, mac_cycles, rtl_cycles, scale_sim_os_cycles
from potq.deploy.rtl_check import check_rtl, parse_array, ppu_sweep, run_sim
from potq.errors import UserError
from potq.ir.capture import capture
from potq.ir.graph import OpType
from potq.ir.rules import SHIFT_CAP, Rounding
from potq.ir.tensor import normalize
from potq.quant.lower import calibrate, lower
from potq.quant.scheme import QuantSettings
from tests.test_deploy import graph_of
from tests.test_graph import EXAMPLE, MEAN, STD
from tests.test_quant import randomized

needs_verilator = pytest.mark.skipif(
    shutil.which("verilator") is None, reason="Verilator is not installed (apt-get install verilator; CI installs it)"
)
ROUNDINGS = ["half-up", "half-even", "floor"]
BROKEN_PPU = Path(__file__).parent / "fixtures" / "rtl" / "truncating_ppu.sv"
BROKEN_PE = Path(__file__).parent / "fixtures" / "rtl" / "unsigned_pe.sv"


class Tiny(nn.Module):
    """Every op type on a 9x9 image: padded convolution, padded max pooling, depthwise and grouped (1x3)
    convolutions, an add, a concat, a 2x2 average pooling, flatten and the int32 logits."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU6())
        self.gc = nn.Conv2d(6, 10, (1, 3), padding=(0, 1), groups=2)
        self.side = nn.Conv2d(6, 10, 1, stride=1)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool(self.c1(x))
        d = self.dw(x)
        y = torch.cat([self.gc(d) + self.side(x), d], dim=1)
        return self.fc(torch.flatten(self.avg(y), 1))


def tiny_graph(rounding: str, n: int = 2):
    torch.manual_seed(3)
    images = torch.randint(0, 256, (n, 3, 9, 9), dtype=torch.uint8)
    fgraph = capture(randomized(Tiny()), (3, 9, 9), MEAN, STD)
    settings = QuantSettings.parse("pot-channel", rounding=rounding)
    return lower(fgraph, calibrate(fgraph, normalize(images, MEAN, STD), settings), settings), images.numpy()


def assert_exact(graph, r: dict, images: int) -> None:
    assert r["mismatches"] == 0, r["mismatching_nodes"]
    assert r["compared_values"] == images * sum(math.prod(graph.shapes[n.output]) for n in graph.nodes)
    assert [n["node"] for n in r["nodes"]] == [n.name for n in graph.nodes]  # every node ran
    for n in r["nodes"]:  # the closed form is Verilator's count, node by node
        assert n["cycles"] == n["predicted_cycles"], n


# ---- without Verilator ---------------------------------------------------------------------------


def test_package_constants_come_from_potq_rules(tmp_path):
    text = package_text()
    for r in Rounding:
        assert f"localparam int ROUND_{r.name} = {int(r)};" in text
    assert f"localparam int SHIFT_CAP = {SHIFT_CAP};" in text
    rtl_sources(tmp_path)
    assert (tmp_path / "potq_pkg.sv").read_text() == text
    for name in SOURCES:  # the design names the constants, never their values
        sv = (tmp_path / name).read_text()
        assert str(SHIFT_CAP) not in sv and "SHIFT_CAP" in (tmp_path / "potq_ppu.sv").read_text()


def test_cycle_closed_form_is_scale_sims_output_stationary_count_plus_2_plus_r():
    # SCALE-Sim 3.0.0's own "Total Cycles" (fixture made by benchmarks/rtl_vs_scalesim.py, command inside)
    fixture = json.loads((Path(__file__).parent / "fixtures" / "rtl" / "scalesim_os.json").read_text())
    assert fixture["scalesim"] == "3.0.0" and len(fixture["cases"]) == 12
    for c in fixture["cases"]:
        shape = (c["M"], c["N"], c["K"], c["rows"], c["cols"])
        assert scale_sim_os_cycles(*shape) == c["scalesim_total_cycles"], c
        assert mac_cycles(*shape) == c["scalesim_total_cycles"] + 2 + c["rows"], c  # R <= K + C - 1 in each
    # a tall array with a short K: folds wait for the output chains (2R - 1), and the tail is K + C - 1
    assert mac_cycles(64, 2, 3, 16, 2) == 1 + 4 * (2 * 16 - 1) + (3 + 2 - 1)
    assert mac_cycles(16, 1, 9, 4, 4, groups=6) == 1 + 6 * 4 * (9 + 4 + 4 - 2) + 4


def test_program_describes_every_node():
    graph, _ = tiny_graph("half-even")
    prog = build_program(graph)
    assert {prog.node_of[i] for i in range(len(prog.desc))} == {n.name for n in graph.nodes}
    concat = next(n for n in graph.nodes if n.op is OpType.CONCAT)
    assert prog.node_of.count(concat.name) == len(concat.inputs)  # one copy per input
    assert sum(d.get("CHK_SIZE", 0) for d in prog.desc) == sum(math.prod(graph.shapes[n.output]) for n in graph.nodes)


def rtl_preset(rows: int = 16, cols: int = 16):
    """The `potq-rtl` preset on an R x C array (the preset is 16x16, verify --rtl's default)."""
    from dataclasses import replace

    from potq.accel.arch import load_arch

    return replace(load_arch("potq-rtl"), pe_rows=rows, pe_cols=cols)


def accel_cycles(graph, arch) -> dict[str, int]:
    """`potq accel`'s latency of every node on `arch` (one image)."""
    from potq.accel.model import accel_report

    return {lay["node"]: lay["cycles"]["latency"] for lay in accel_report(graph, arch)["layers"]}


def descriptor_cycles(graph, rows: int, cols: int) -> dict[str, int]:
    """The RTL's closed form (what verify --rtl predicts and Verilator counts), summed over each node's descriptors."""
    prog = build_program(graph)
    out: dict[str, int] = {}
    for d, node in zip(prog.desc, prog.node_of, strict=True):
        out[node] = out.get(node, 0) + rtl_cycles(d, rows, cols)
    return out


@pytest.mark.parametrize("name", ["seed", "resnet20", "mobilenet-cifar", EXAMPLE])
def test_accel_on_the_rtl_preset_equals_the_rtls_cycles_on_every_node(name):
    """Issue 30, item 5: `potq accel --arch potq-rtl` gives every node (MAC, depthwise, vector unit) the RTL's
    cycles, on square, tall and wide arrays; the Verilator tests hold the closed form equal to the simulation."""
    graph, _ = graph_of(name, rounding="half-even", n=1)
    ops = {n.op for n in graph.nodes}
    assert {OpType.CONV, OpType.LINEAR, OpType.INPUT} <= ops
    assert any(n.attrs.get("groups", 1) > 1 for n in graph.nodes) == (name == "mobilenet-cifar")
    for rows, cols in ((16, 16), (4, 4), (8, 2), (2, 8)):
        assert accel_cycles(graph, rtl_preset(rows, cols)) == descriptor_cycles(graph, rows, cols), (rows, cols)


def test_accel_rtl_preset_is_os_only_and_one_image_at_a_time(capsys):
    graph, _ = tiny_graph("half-even", n=1)
    from potq.accel.model import accel_report

    one, four = accel_report(graph, rtl_preset()), accel_report(graph, rtl_preset(), batch=4)
    assert four["total"]["cycles"]["latency"] == 4 * one["total"]["cycles"]["latency"]
    assert one["total"]["compulsory_dram_bytes"] == 0 == sum(one["total"]["bytes"]["dram"].values())
    # the depthwise conv: 6 groups of 25 pixels, 2 folds each of K + R + C - 2 cycles, ONE latch and ONE drain
    dw = next(n.name for n in graph.nodes if n.attrs.get("groups", 1) == 6)
    assert {lay["node"]: lay for lay in one["layers"]}[dw]["cycles"]["compute"] == 1 + 6 * 2 * (9 + 16 + 16 - 2) + 16
    assert main(["accel", "--model", "tiny", "--arch", "potq-rtl", "--dataflow", "ws"]) == 2
    assert "runs os" in capsys.readouterr().err
    assert main(["accel", "--model", "tiny", "--arch", "potq-rtl", "--scalesim-compat"]) == 2
    assert "potq's RTL" in capsys.readouterr().err


def test_causes_name_a_wrong_rounding_and_a_clamp():
    from potq.deploy.rtl_causes import accumulator, candidates, causes
    from potq.golden import IntegerModel

    graph, images = tiny_graph("half-even", n=1)
    record: dict = {}
    IntegerModel(graph).run(torch.from_numpy(images), record)
    n = next(n for n in graph.nodes if n.op is OpType.CONV)
    xs, want = [record[n.inputs[0]]], record[n.output][0].to(torch.int64)
    floor = dict(candidates(graph, n, accumulator(graph, n, xs)[0]))["rounds as floor, the model half-even"]
    assert bool((floor != want).any())
    assert causes(graph, n, xs, floor, want) == {"rounds as floor, the model half-even": int((floor != want).sum())}
    got = want.clone()
    got.view(-1)[0] = 300  # beyond every code
    assert causes(graph, n, xs, got, want) == {f"outside the clamp [{graph.q[n.output].lo}, {graph.q[n.output].hi}]": 1}


def test_bad_array_is_one_line():
    for bad in ("16", "0x4", "4x65", "axb"):
        with pytest.raises(UserError, match="--array"):
            parse_array(bad)
    assert parse_array("4x8") == (4, 8)


def test_verify_rtl_without_verilator_names_the_package(tiny_run, monkeypatch, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--calib", "64"]) == 0
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["verify", "--run", str(tiny_run), "--rtl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install verilator" in err[0]


# ---- under Verilator -------------------------------------------------------------------------------


@needs_verilator
def test_ppu_edge_sweep_matches_shift_round():
    r = ppu_sweep()
    assert r["cases"] > 5000
    for rule in ROUNDINGS:
        assert r[rule] == {"shifter_mismatches": 0, "ppu_mismatches": 0, "causes": {}}, (rule, r)


@needs_verilator
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("array", [(4, 4), (16, 16)])
def test_tiny_net_is_bit_and_cycle_exact(rounding, array):
    graph, images = tiny_graph(rounding)
    ops = {n.op for n in graph.nodes}
    assert ops == set(OpType)
    r = check_rtl(graph, images, *array)
    assert_exact(graph, r, len(images))
    # potq accel on the RTL's preset gives every node Verilator's own count
    assert accel_cycles(graph, rtl_preset(*array)) == {n["node"]: n["cycles"] for n in r["nodes"]}


@needs_verilator
def test_a_tall_array_waits_for_its_output_chains():
    # 8 x 2 and a 1x1 convolution of 6 channels (K = 6 < R - C + 1): folds of 2R - 1 cycles (mac_cycles)
    graph, images = tiny_graph("half-up")
    assert_exact(graph, check_rtl(graph, images, 8, 2), len(images))


@needs_verilator
@pytest.mark.parametrize(
    "name,rounding,array",
    [("seed", "half-up", (4, 4)), ("seed", "floor", (16, 16)), ("resnet20", "half-even", (16, 16)),
     ("resnet20", "floor", (4, 4)), ("mobilenet-cifar", "floor", (16, 16)), ("mobilenet-cifar", "half-up", (4, 4)),
     (EXAMPLE, "half-even", (4, 4)), (EXAMPLE, "floor", (16, 16))],
)  # fmt: skip
def test_zoo_and_user_nets_are_bit_and_cycle_exact(name, rounding, array):
    graph, images = graph_of(name, rounding=rounding, n=1)
    assert_exact(graph, check_rtl(graph, images, *array), 1)


@needs_verilator
@pytest.mark.parametrize("name,scheme,array", [(EXAMPLE, "pot-seed", (4, 4)), ("resnet20", "pot-tensor", (16, 16))])
def test_other_schemes_are_bit_exact(name, scheme, array):
    # pot-seed: zero point 128 on every value (the feeders, the Add and the pools subtract it everywhere)
    graph, images = graph_of(name, scheme, "half-up", n=1)
    assert_exact(graph, check_rtl(graph, images, *array), 1)


@needs_verilator
def test_a_truncating_ppu_is_caught_with_its_causes():
    graph, images = graph_of(EXAMPLE, rounding="half-even", n=1)
    r = check_rtl(graph, images, 4, 4, ppu=BROKEN_PPU)
    assert r["mismatches"] > 0 and r["ppu"] == str(BROKEN_PPU)
    causes = {c for n in r["mismatching_nodes"] for c in n["causes"]}
    assert "truncates toward zero instead of rounding" in causes
    assert "off by more than one" not in causes and "unexplained" not in causes
    assert {n["op"] for n in r["mismatching_nodes"]} <= {"conv", "linear", "add", "avgpool"}  # only rounding nodes


@needs_verilator
def test_a_user_pe_replaces_potqs_and_a_bad_file_is_one_line(tmp_path):
    graph, images = tiny_graph("half-even", n=1)
    r = check_rtl(graph, images, 4, 4, pe=BROKEN_PE)  # |x - zp| * w: wrong where the input's zero point is 128
    assert r["mismatches"] > 0 and r["pe"] == str(BROKEN_PE)
    assert {n["op"] for n in r["mismatching_nodes"]} <= {"conv", "linear"}
    bad = tmp_path / "bad.sv"
    bad.write_text("module potq_ppu(; endmodule\n")
    with pytest.raises(UserError, match=f"Verilator rejects your {bad}: %Error: {bad}:1"):
        check_rtl(graph, images, 4, 4, ppu=bad)


@needs_verilator
def test_verify_rtl_cli_exit_status_and_report(tiny_run, capsys):
    assert main(["quantize", "--run", str(tiny_run), "--calib", "64", "--rounding", "half-even"]) == 0
    label = "pot-channel"  # half-even: the default rule
    assert main(["verify", "--run", str(tiny_run), "--scheme", label, "--rtl", "--array", "4x4"]) == 0
    out = capsys.readouterr().out
    assert "0 mismatching values" in out and "| Node | Op | Cycles |" in out
    saved = json.loads((tiny_run / f"deploy_{label}.json").read_text())["rtl"]
    assert saved["mismatches"] == 0 and saved["cycles_per_image"] == saved["predicted_cycles_per_image"]
    args = ["verify", "--run", str(tiny_run), "--scheme", label, "--rtl", "--array", "4x4", "--ppu", str(BROKEN_PPU)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "truncates toward zero instead of rounding" in captured.out or "rounds as floor" in captured.out
    assert "differs from the golden model" in captured.err
    assert main(["verify", "--run", str(tiny_run), "--scheme", label, "--ppu", str(BROKEN_PPU)]) == 2  # no --rtl


@needs_verilator
def test_export_format_rtl_runs_in_the_testbench(tmp_path):
    graph, images = tiny_graph("half-up")
    out = tmp_path / "export"
    write_export(graph, out, images, np.zeros(len(images), dtype=np.int64), ["a"] * 5, formats=("rtl",))
    desc = json.loads((out / "model.json").read_text())["rtl"]
    names = {p.name for p in (out / "rtl").iterdir()}
    assert {"potq_pkg.sv", *SOURCES, "potq_tb.sv", "tb_main.cpp", "desc.hex", "img0.hex", "img1.hex"} <= names
    exe, _ = build_sim(4, 4)
    cycles = len(images) * sum(rtl_cycles(d, 4, 4) for d in desc["descriptors"])
    lines = run_sim(exe, out / "rtl", len(images), len(desc["descriptors"]), Rounding.HALF_UP, cycles, 16)
    assert all(bad == 0 for *_, bad in lines)
    assert [c for img, _, c, _ in lines if img == 0] == [rtl_cycles(d, 4, 4) for d in desc["descriptors"]]
    assert subprocess.run(["verilator", "--version"], capture_output=True).returncode == 0


@needs_verilator
def test_potq_run_deploy_step_runs_the_rtl_when_verilator_is_here(tiny_run, monkeypatch):
    from potq.jobs import deploy as check

    assert main(["quantize", "--run", str(tiny_run), "--calib", "64"]) == 0
    monkeypatch.setattr(check, "check_run", lambda *a, **k: {"skipped": k["skipped"]})  # the other consumers
    r = check.deploy_checks(tiny_run, "pot-channel")
    assert r["rtl"]["mismatches"] == 0 and r["rtl"]["array"] == "4x4" and "rtl" not in r["skipped"]
    assert any(line.startswith("RTL (Verilator, 4x4") for line in check.deploy_summary(r))
    monkeypatch.setenv("PATH", "/nonexistent")
    r = check.deploy_checks(tiny_run, "pot-channel")
    assert "rtl" not in r and "apt-get install verilator" in r["skipped"]["rtl"]
