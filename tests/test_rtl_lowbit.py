"""potq's RTL below eight bits (issue 27): random-weight tiny nets and one resnet20 through the 4x4 array under
Verilator, every value of every node against the golden model, with potq's multiplier PE (weight values; int,
pot formats, activations of 4 and 8 bits with zero points 0 and 2^(b-1)) and with the shift-add PE
(`--pe-kind shift`: potq_pe_shift for the graph's one pot/apot format, the weight memory holding storage codes).
A graph of mixed formats is refused with --pe-kind shift in one line before anything is built, and a shift PE
that ignores the sign bit (tests/fixtures/rtl/signless_shift_pe.sv) is caught. One Verilator build per PE
kind and format (4 in all), cached for the session."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from potq.cli import main
from potq.deploy.rtl import rtl_sources, shift_tag
from potq.deploy.rtl.pe import pe_build, pe_shift_params
from potq.deploy.rtl.program import build_program
from potq.deploy.rtl_check import check_rtl
from potq.errors import UserError
from potq.ir.codes import WeightCode, encode_weights
from tests.test_lowbit import lowbit

needs_verilator = pytest.mark.skipif(
    shutil.which("verilator") is None, reason="Verilator is not installed (apt-get install verilator; CI installs it)"
)
SIGNLESS_PE = Path(__file__).parent / "fixtures" / "rtl" / "signless_shift_pe.sv"
IMAGES = 2  # per tiny case; resnet20 runs one


def graph(model: str, bits: str, code: str, bits_all: bool):
    return lowbit(model, bits, code, "half-even", bits_all=bits_all)


def assert_exact(g, r: dict, images: int) -> None:
    assert r["mismatches"] == 0, r["mismatching_nodes"]
    assert r["compared_values"] == images * sum(math.prod(g.shapes[n.output]) for n in g.nodes)
    assert [n["node"] for n in r["nodes"]] == [n.name for n in g.nodes]  # every node ran
    assert all(n["cycles"] == n["predicted_cycles"] for n in r["nodes"])


# ---- without Verilator ---------------------------------------------------------------------------


def test_the_weight_memory_holds_values_for_mac_and_storage_codes_for_shift():
    g, _ = graph("tiny", "4/4", "apot", True)
    values, codes = build_program(g), build_program(g, codes=True)
    macs = g.mac_nodes()
    (chunks_v, chunks_c) = ([c for c in p.wgt[1:]] for p in (values, codes))  # after the input's table
    assert len(chunks_v) == len(chunks_c) == len(macs)
    for n, v, c in zip(macs, chunks_v, chunks_c, strict=True):
        w = n.tensors["weight"].numpy().reshape(-1)
        assert (v == (w.astype(np.int64) & 0xFF)).all()  # int8 values, two's complement bytes
        assert (c == encode_weights(w, WeightCode.APOT, 4)).all() and c.max() < 16  # 4-bit codes, upper bits 0
    assert values.desc == codes.desc  # the same program: only the bytes differ
    assert (values.wgt[0] == codes.wgt[0]).all()  # the input's table is uint8 codes either way


def test_shift_sources_wrap_the_shift_pe_under_potq_pes_name(tmp_path):
    params = pe_shift_params("apot", 5)
    names = [p.name for p in rtl_sources(tmp_path, shift=params)]
    assert "potq_pe_shift.sv" in names and names.index("potq_pe_shift.sv") < names.index("potq_array_os.sv")
    wrapper = (tmp_path / "potq_pe.sv").read_text()
    assert "module potq_pe import potq_pkg::*;" in wrapper
    assert 'potq_pe_shift #(.WCODE("apot"), .W_BITS(5), .M1(2), .M2(2), .TOP(5))' in wrapper
    assert shift_tag(params) == "shift-apot-W_BITS5-M12-M22-TOP5"  # the cache folder names kind and parameters
    assert shift_tag(pe_shift_params("pot", 4)) != shift_tag(pe_shift_params("pot", 3))
    mac = tmp_path / "mac"
    assert "potq_pe_shift.sv" not in [p.name for p in rtl_sources(mac)]  # mac: today's sources
    assert (mac / "potq_pe.sv").read_text().startswith("// potq_pe: one multiply-accumulate cell")


@pytest.mark.parametrize(
    ("bits", "code", "bits_all", "message"),
    [
        ("4/8", "pot", False, "node features.0 holds 8-bit int weights;"),  # the first layer kept at 8 bits
        ("4/4", "int", True, "node features.0 holds 4-bit int weights;"),
    ],
)
def test_shift_refuses_a_graph_without_one_pot_or_apot_format(bits, code, bits_all, message, tmp_path, monkeypatch):
    g, images = graph("tiny", bits, code, bits_all)
    monkeypatch.setenv("POTQ_RTL_CACHE", str(tmp_path / "rtl"))
    with pytest.raises(UserError) as e:
        check_rtl(g, images[:1].numpy(), 4, 4, pe_kind="shift")
    text = str(e.value)
    assert "\n" not in text and text.startswith("--pe-kind shift: ") and message in text
    assert "the shift-add PE takes one pot/apot format (quantize with --bits-all)" in text
    assert not (tmp_path / "rtl").exists()  # refused before the build
    with pytest.raises(UserError, match="--pe-kind 'adder': choose from mac, shift"):
        pe_build(g, "adder")


def test_shift_names_the_first_node_of_another_pot_format():
    g, _ = graph("tiny", "4/8", "pot", True)
    last = g.mac_nodes()[-1]
    last.attrs["w_bits"] = 3  # a graph edited by hand (--precision could make one): two pot widths
    with pytest.raises(UserError, match=f"node {last.name} holds 3-bit pot weights \\(node features.0: 4-bit pot\\)"):
        pe_build(g, "shift")
    assert pe_build(graph("tiny", "4/4", "apot", True)[0], "shift")[1] == "4-bit apot"


# ---- under Verilator -------------------------------------------------------------------------------


@needs_verilator
@pytest.mark.parametrize(
    ("bits", "code", "bits_all", "pe_kind"),
    [
        ("4/4", "int", False, "mac"),  # 8-bit first and last layers around 4-bit ones
        ("4/4", "int", True, "mac"),  # 4-bit codes everywhere, the input's zero point 8
        ("4/8", "pot", True, "mac"),
        ("4/8", "pot", True, "shift"),
        ("4/4", "apot", True, "shift"),
        ("2/8", "int", False, "mac"),
    ],
)
def test_tiny_below_eight_bits_is_bit_and_cycle_exact(bits, code, bits_all, pe_kind):
    g, images = graph("tiny", bits, code, bits_all)
    r = check_rtl(g, images[:IMAGES].numpy(), 4, 4, pe_kind=pe_kind)
    assert_exact(g, r, IMAGES)
    assert r["pe_kind"] == pe_kind
    if pe_kind == "shift":
        assert r["pe"] == "potq_pe_shift.sv" and r["pe_format"] == f"{bits.split('/')[0]}-bit {code}"
    else:
        assert r["pe"] == "potq_pe.sv" and r["pe_format"] is None


@needs_verilator
def test_resnet20_w4a4_apot_on_the_shift_pe_is_bit_and_cycle_exact():
    g, images = graph("resnet20", "4/4", "apot", True)
    assert {g.q[v].zero_point for v in g.q if not g.q[v].accumulator} == {0, 8}  # 4-bit codes, both zero points
    assert_exact(g, check_rtl(g, images[:1].numpy(), 4, 4, pe_kind="shift"), 1)


@needs_verilator
def test_a_signless_shift_pe_is_caught():
    g, images = graph("tiny", "4/8", "pot", True)
    r = check_rtl(g, images[:1].numpy(), 4, 4, pe=SIGNLESS_PE, pe_kind="shift")
    assert r["mismatches"] > 0 and r["pe"] == str(SIGNLESS_PE) and r["pe_kind"] == "shift"
    assert {n["op"] for n in r["mismatching_nodes"]} <= {"conv", "linear"}  # only the PE's nodes


@needs_verilator
def test_verify_pe_kind_shift_runs_one_format_and_refuses_mixed_ones(tiny_run, tmp_path, monkeypatch, capsys):
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # a private copy: the session's run stays as it was
    quantize = ["quantize", "--run", str(tiny_run), "--calib", "64", "--bits", "4/8", "--weights", "pot"]
    assert main([*quantize, "--bits-all"]) == 0
    verify = ["verify", "--run", str(tiny_run), "--rtl", "--array", "4x4", "--rtl-vectors", "1", "--pe-kind", "shift"]
    assert main([*verify, "--scheme", "pot-channel-w4a8-all-pot"]) == 0
    assert "PE potq_pe_shift.sv (shift, 4-bit pot storage codes)): 0 mismatching values" in capsys.readouterr().out
    saved = json.loads((tiny_run / "deploy_pot-channel-w4a8-all-pot.json").read_text())["rtl"]
    assert (saved["pe_kind"], saved["pe_format"], saved["mismatches"]) == ("shift", "4-bit pot", 0)

    assert main(quantize) == 0  # the first and last layers at 8-bit int
    monkeypatch.setenv("POTQ_RTL_CACHE", str(tmp_path / "rtl"))
    assert main([*verify, "--scheme", "pot-channel-w4a8-pot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pe-kind shift: node " in err[0] and "holds 8-bit int weights" in err[0], err
    assert not (tmp_path / "rtl").exists()  # nothing built
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-channel-w4a8-pot", "--pe-kind", "shift"]) == 2


@needs_verilator
def test_export_format_rtl_pe_kind_shift_runs_in_the_testbench(tmp_path):
    """`potq export --format rtl --pe-kind shift`: the folder holds the shift PE behind potq_pe's wrapper and a
    weight memory of storage codes, and its testbench (built with those sources) finds 0 mismatches."""
    from potq.deploy.export import write_export
    from potq.deploy.rtl import SHIFT_PE, build_sim
    from potq.deploy.rtl.program import rtl_cycles
    from potq.deploy.rtl_check import run_sim

    g, images = graph("tiny", "4/4", "apot", True)
    out, picked = tmp_path / "export", images[:IMAGES].numpy()
    write_export(g, out, picked, np.zeros(IMAGES, dtype=np.int64), ["a"] * 10, formats=("rtl",), pe_kind="shift")
    desc = json.loads((out / "model.json").read_text())["rtl"]
    assert (desc["pe_kind"], desc["pe_format"]) == ("shift", "4-bit apot") and SHIFT_PE in desc["build"]
    assert "potq_pe_shift #(" in (out / "rtl" / "potq_pe.sv").read_text()  # the wrapper, not the multiplier
    exe, _ = build_sim(4, 4, shift=pe_shift_params("apot", 4))
    cycles = IMAGES * sum(rtl_cycles(d, 4, 4) for d in desc["descriptors"])
    lines = run_sim(exe, out / "rtl", IMAGES, len(desc["descriptors"]), g.rounding, cycles, 16)
    assert all(bad == 0 for *_, bad in lines)
    assert [c for img, _, c, _ in lines if img == 0] == [rtl_cycles(d, 4, 4) for d in desc["descriptors"]]


def test_export_pe_kind_shift_is_refused_without_rtl_or_for_int_weights(tmp_path):
    from potq.deploy.export import write_export

    g, images = graph("tiny", "4/4", "int", True)
    labels = np.zeros(1, dtype=np.int64)
    for formats, message in (("hw",), "add rtl to --format"), (("rtl",), "holds 4-bit int weights"):
        with pytest.raises(UserError, match=message):
            write_export(g, tmp_path / "x", images[:1].numpy(), labels, ["a"] * 10, formats=formats, pe_kind="shift")
        assert not (tmp_path / "x").exists()
