"""potq.accel (issue 18): workloads, architecture files, systolic closed forms, the model's totals, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import potq
from potq import energy
from potq.accel import systolic
from potq.accel.arch import PRESETS, RTL_TIMING, load_arch, parse_arch, preset_path
from potq.accel.model import accel_report, format_table, to_csv
from potq.accel.peers import scalesim_topology
from potq.accel.workload import Workload, scalesim_compat, scalesim_out_size, workloads
from potq.cli import main
from potq.energy import Arith
from potq.errors import UserError
from potq.ir.capture import capture
from potq.models import build_model
from potq.quant.scheme import policy_zero_points


def _flows(arch) -> list[str]:
    """The architecture's dataflows this build models (row-stationary once search.py is merged in)."""
    try:
        import potq.accel.search  # noqa: F401
    except ImportError:
        return [df for df in arch.dataflows if df != "rs"]
    return list(arch.dataflows)


def _zp(g):
    """A float graph's zero points by potq's policy (the accel model, an interpreter, takes them as given)."""
    return policy_zero_points(g)


def _captured(name: str):
    torch.manual_seed(0)
    return capture(build_model(name).eval(), (3, 32, 32), [0.0] * 3, [1.0] * 3)


@pytest.fixture(scope="module")
def graphs():
    return {m: _captured(m) for m in ("seed", "resnet20", "mobilenet-cifar")}


@pytest.fixture(scope="module")
def tiny_q():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return potq.quantize(build_model("tiny").eval(), images, "pot-channel"), images


# ---- workloads ------------------------------------------------------------------------------------


def test_workload_macs_equal_the_energy_models_count(graphs, tiny_q):
    for g in [*graphs.values(), tiny_q[0].graph]:
        by_node = {c.name: c.macs for c in energy.graph_costs(g, None if g.quantized else _zp(g))}
        for w in workloads(g):
            assert w.macs == by_node.get(w.node, 0), w.node
        assert len(workloads(g)) == len(g.nodes)


def test_workload_shapes_depthwise_and_linear(graphs):
    ws = {w.node: w for w in workloads(graphs["mobilenet-cifar"])}
    dw = [w for w in ws.values() if w.op == "conv" and w.groups > 1]
    assert dw and all(w.C == 1 and w.M == 1 for w in dw)
    lin = [w for w in ws.values() if w.op == "linear"]
    assert lin and all((w.H, w.W, w.R, w.S, w.E, w.F) == (1,) * 6 for w in lin)
    g = graphs["resnet20"]
    for n, w in zip(g.nodes, workloads(g), strict=True):
        if w.is_mac:
            assert w.M * w.groups * w.E * w.F == math.prod(g.shapes[n.output])


def test_workload_bits_come_from_the_graph(tiny_q):
    g = tiny_q[0].graph
    ws = [w for w in workloads(g) if w.is_mac]
    assert [w.bits_ofmap for w in ws] == [8] * (len(ws) - 1) + [32]  # the logits are int32 accumulators
    assert all((w.bits_ifmap, w.bits_filter, w.bits_bias, w.bits_psum) == (8, 8, 32, 32) for w in ws)
    last = ws[-1]
    assert last.bytes_of("ofmap") == 4 * last.outputs and last.bytes_of("bias") == 4 * last.M


def test_scalesim_output_size_rule():
    assert scalesim_out_size(34, 3, 2) == 17 and (34 - 3) // 2 + 1 == 16  # SCALE-Sim vs PyTorch
    assert scalesim_out_size(34, 3, 1) == 32
    w = Workload("c", "conv", 1, 16, 32, 1, 32, 32, 3, 3, 16, 16, 2, 2, 1, 1)
    assert (scalesim_compat(w).E, scalesim_compat(w).F) == (17, 17)
    assert scalesim_compat(w).macs * 256 == w.macs * 289


# ---- architecture files ---------------------------------------------------------------------------


def test_presets_load():
    for name in PRESETS:
        a = load_arch(name)
        assert a.pes > 0 and a.dataflows
    e = load_arch("eyeriss")
    assert (e.pe_rows, e.pe_cols, e.spad_bytes, e.glb_bytes) == (6, 8, {"ifmap": 12, "filter": 48, "psum": 16}, 65536)
    assert (e.bus_bytes_per_cycle, e.noc_bytes_per_cycle, e.glb_cycles_per_transaction) == (4, 4, 2)
    assert (e.dram_cycles_per_transaction, e.clock_hz, e.leakage_w) == (5, 200e6, 50e-6)
    assert (e.energy["mac"], e.energy["glb"], e.energy["dram"]) == (2, 10, 200)
    t = energy.load_table()
    nm = load_arch("eyeriss-45nm")
    assert nm.energy["mac"] == t.compute["int8_mult"] + t.compute["int32_add"]
    assert nm.energy["dram"] == t.memory["dram"] / 8
    assert [load_arch(f"systolic-{n}").pe_rows for n in (8, 16, 32)] == [8, 16, 32]


def _raw():
    return json.loads(preset_path("systolic-16").read_text())


def _breaks(edit):
    raw = _raw()
    edit(raw)
    return raw


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.pop("glb_bytes"), "missing field 'glb_bytes'"),
        (lambda r: r.update(pe_rows=0), "field 'pe_rows' must be at least 1"),
        (lambda r: r["energy"].update(dram=-1), "field 'energy.dram' must be non-negative"),
        (lambda r: r.update(pe_cols="16"), "field 'pe_cols' must be an integer"),
        (lambda r: r["spad_bytes"].pop("psum"), "missing field 'spad_bytes.psum'"),
        (lambda r: r["spad_bytes"].update(ifmap=0), "field 'spad_bytes.ifmap' must be at least 1"),
        (lambda r: r.update(dataflows=["zz"]), "field 'dataflows'"),
        (lambda r: r.update(clock_hz=0), "field 'clock_hz' must be positive"),
        (lambda r: r.update(dram_cycles_per_transaction=0), "field 'dram_cycles_per_transaction' must be at least 1"),
        (lambda r: r["energy"].update(mac=float("nan")), "field 'energy.mac' must be a finite number"),
        (lambda r: r["energy"].update(mac="int8_mult"), "'energy_table' is not set"),
        (lambda r: r.update(energy_table="7nm"), "field 'energy_table'"),
        (lambda r: r.update(pe_rowz=3), "unknown field 'pe_rowz'"),
        (lambda r: r.update(energy_unit="eV"), "field 'energy_unit'"),
        (lambda r: r.update(timing="fast"), "field 'timing' must be one of serial, potq-rtl"),
        (lambda r: r.update(overlap="triple"), "field 'overlap' must be one of none, double-buffered"),
        (lambda r: r.update(timing="potq-rtl"), "field 'dataflows' must be [\"os\"] with timing potq-rtl"),
    ],
)
def test_bad_architecture_is_one_line_naming_file_and_field(edit, field):
    with pytest.raises(UserError) as e:
        parse_arch(_breaks(edit), "--arch my.json")
    msg = str(e.value)
    assert msg.startswith("--arch my.json: ") and field in msg and "\n" not in msg


def test_bad_architecture_via_cli_exit_2_nothing_written(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_breaks(lambda r: r.update(pe_rows=0))))
    out_csv, out_dir = tmp_path / "out.csv", tmp_path / "scalesim"
    args = ["accel", "--model", "tiny", "--arch", str(bad), "--csv", str(out_csv), "--scalesim-out", str(out_dir)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "pe_rows" in err and err.count("\n") == 1
    assert not out_csv.exists() and not out_dir.exists()
    assert main(["accel", "--model", "tiny", "--arch", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad.write_text("{")
    assert main(["accel", "--model", "tiny", "--arch", str(bad)]) == 2
    assert "can't read it as JSON" in capsys.readouterr().err


def test_dataflow_the_architecture_lacks(capsys):
    assert main(["accel", "--model", "tiny", "--arch", "systolic-8", "--dataflow", "rs"]) == 2
    assert "runs ws, os, is" in capsys.readouterr().err
    assert main(["accel", "--model", "tiny", "--batch", "0"]) == 2
    assert "--batch must be an integer from 1 to 4096, got 0" in capsys.readouterr().err


def test_bad_output_paths_write_nothing(tmp_path, capsys):
    a_file, out_csv = tmp_path / "f", tmp_path / "a.csv"
    a_file.write_text("mine")
    assert main(["accel", "--model", "tiny", "--csv", str(out_csv), "--scalesim-out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and not out_csv.exists()
    assert main(["accel", "--model", "tiny", "--csv", str(tmp_path / "no" / "a.csv")]) == 2
    assert "no folder" in capsys.readouterr().err


def _arch_file(folder, edit) -> str:
    """eyeriss's preset as a file, changed by edit(raw), or by edit(path) where edit writes the file itself."""
    path = folder / "arch.json"
    if isinstance(edit, dict):
        raw = json.loads(preset_path("eyeriss").read_text())
        raw.update(edit)
        path.write_text(json.dumps(raw))
    else:
        edit(path)
    return str(path)


def _sparse_2gib(path):
    with path.open("wb") as f:
        f.truncate(2 << 30)  # 2 GiB that take no disk: the reader must refuse it from its size


def _nested(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


HOSTILE = {  # issue 30's "Hostile input" and their neighbours: (arguments, architecture edit or None, the line)
    "1e9 PEs, rs": ([], {"pe_rows": 31623, "pe_cols": 31623}, "field 'pe_rows' must be at most 512, got 31623"),
    "1e9 PEs, ws": ([], {"pe_rows": 31623, "pe_cols": 31623, "dataflows": ["ws"]}, "field 'pe_rows' must be at most"),
    "pe_rows 10**30": ([], {"pe_rows": 10**30}, "field 'pe_rows' must be at most 512, got 1000000000000000000000"),
    "pe_rows of 5,000 digits": (
        [],
        lambda p: p.write_text('{"pe_rows": 1' + "0" * 5000 + "}"),
        "can't read it as JSON",
    ),
    "glb 10**30": ([], {"glb_bytes": 10**30}, "field 'glb_bytes' must be at most 1,073,741,824"),
    "glb 1e300": ([], {"glb_bytes": 1e300}, "field 'glb_bytes' must be an integer, got 1e+300"),
    "spad 10**6": (
        [],
        {"spad_bytes": {"ifmap": 10**6, "filter": 48, "psum": 16}},
        "'spad_bytes.ifmap' must be at most",
    ),
    "clock 1e300": ([], {"clock_hz": 1e300}, "field 'clock_hz' must be at most 1e+11"),
    "a dataflow 1,000 times": ([], {"dataflows": ["rs"] * 1000}, "field 'dataflows' must be a non-empty list"),
    "deep nesting": ([], _nested, "nested deeper than 8 levels"),
    "2 GiB file": ([], _sparse_2gib, "larger than 1024 KiB"),
    "rs grid": (
        [],
        {"pe_rows": 512, "pe_cols": 512, "spad_bytes": {"ifmap": 1024, "filter": 1024, "psum": 1024}},
        "more than 20,000,000",
    ),
    "batch 1e9": (["--batch", "1000000000"], None, "--batch must be an integer from 1 to 4096, got 1000000000"),
    "dse-arrays 100000x100000": (["--dse", "--dse-arrays", "100000x100000"], None, "every side must be 1 to 512"),
    "dse-glb inf": (["--dse", "--dse-glb", "inf"], None, "--dse-glb: every size must be from 1 B to 1048576 KiB"),
    "dse-glb nan": (["--dse", "--dse-glb", "16,nan"], None, "--dse-glb: every size must be from 1 B"),
    "dse-glb 1e300": (["--dse", "--dse-glb", "1e300"], None, "--dse-glb: every size must be from 1 B"),
    "4,000 design points": (
        [
            "--dse",
            "--dse-arrays",
            ",".join(f"{i}x{i}" for i in range(1, 41)),
            "--dse-glb",
            ",".join(map(str, range(1, 101))),
        ],
        None,
        "--dse: 4,000 design points (bases x PE arrays x buffers x dataflows), more than 64",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    """Issue 30, item 7: each bound of potq.accel.limits through the CLI, before any output is written."""
    extra, edit, says = HOSTILE[case]
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    arch = ["--arch", _arch_file(tmp_path / "in", edit)] if edit is not None else []
    outs = ["--csv", str(out / "a.csv"), "--mappings-csv", str(out / "m.csv"), "--scalesim-out", str(out / "ss")]
    outs += ["--dse-out", str(out / "d.png")] if "--dse" in extra else []
    assert main(["accel", "--model", "tiny", *arch, *extra, *outs]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and err.startswith("potq: error: "), err[:300]
    assert list(out.iterdir()) == []


def test_json_depth_skips_strings():
    from potq.accel.arch import json_depth

    assert json_depth('{"a": [1, {"b": "[[[{"}]}') == 3
    assert json_depth('{"a": "q\\"[[[", "b": "x\\\\", "c": [[]]}') == 3  # escaped quotes and backslashes
    assert json_depth("[" * 9 + "]" * 9) == 9 and json_depth("{}") == 1 and json_depth("1") == 0


def test_scalesim_export_writes_the_padded_input_and_the_array(graphs):
    from potq.accel.peers import scalesim_config, scalesim_layout

    topo = scalesim_topology(graphs["seed"]).splitlines()
    assert topo[0].startswith("Layer name, IFMAP Height, IFMAP Width, Filter Height")
    assert topo[1] == "features.0, 34, 34, 3, 3, 3, 32, 1,"  # 32 + 2 x padding 1: the topology has no padding
    assert topo[-1] == "classifier.4, 1, 1, 1, 1, 64, 10, 1,"
    assert len(scalesim_layout(graphs["seed"]).splitlines()) == len(topo)
    cfg = scalesim_config(load_arch("systolic-16"), "os")
    assert "ArrayHeight : 16" in cfg and "Dataflow : os" in cfg and "InterfaceBandwidth : CALC" in cfg


# ---- systolic closed forms ------------------------------------------------------------------------


def test_systolic_cycles_by_hand():
    # seed's first conv (C=3, 3x3, M=32, 32x32 out, SCALE-Sim's 34x34 padded input) on 8x8:
    w = Workload("c", "conv", 1, 3, 32, 1, 32, 32, 3, 3, 32, 32, 1, 1, 1, 1)
    # ws: ceil(27/8) * ceil(32/8) = 16 folds of 2*8 + 8 + 1024 - 2 = 1046 cycles, less one
    assert systolic.compute_cycles(w, 8, 8, "ws") == 16 * 1046 - 1 == 16735  # SCALE-Sim 3.0.0 says 16735
    # os: ceil(1024/8) * ceil(32/8) = 512 folds of (27 - 1) + 8 + 7 = 41 cycles, less one
    assert systolic.compute_cycles(w, 8, 8, "os") == 512 * 41 - 1 == 20991  # SCALE-Sim 3.0.0 says 20991
    # is: ceil(27/8) * ceil(1024/8) = 512 folds of 8 + 7 + 32 + 7 = 54 cycles, less one
    assert systolic.compute_cycles(w, 8, 8, "is") == 512 * 54 - 1 == 27647


def test_batch_streams_more_pixels_through_the_same_weights():
    w1 = Workload("c", "conv", 1, 16, 32, 1, 8, 8, 3, 3, 8, 8, 1, 1, 1, 1)
    w4 = Workload("c", "conv", 4, 16, 32, 1, 8, 8, 3, 3, 8, 8, 1, 1, 1, 1)
    assert w4.macs == 4 * w1.macs
    # ws: the pixels are streamed: T grows from 64 to 256 in each of the same 9 x 2 folds (window 144, 32 filters)
    assert systolic.compute_cycles(w4, 16, 16, "ws") - systolic.compute_cycles(w1, 16, 16, "ws") == 18 * 192
    t1, t4 = (systolic.traffic(w, 16, 16, "ws", 1 << 20)["dram"] for w in (w1, w4))
    assert t4["filter"] == t1["filter"] and t4["ifmap"] == 4 * t1["ifmap"] and t4["ofmap"] == 4 * t1["ofmap"]


def test_grouped_layer_is_one_gemm_per_group(graphs):
    w = Workload("dw", "conv", 1, 1, 1, 64, 16, 16, 3, 3, 16, 16, 1, 1, 1, 1)
    one = Workload("dw", "conv", 1, 1, 1, 1, 16, 16, 3, 3, 16, 16, 1, 1, 1, 1)
    for df in systolic.DATAFLOWS:
        assert systolic.compute_cycles(w, 8, 8, df) == 64 * systolic.compute_cycles(one, 8, 8, df)
    topo = scalesim_topology(graphs["mobilenet-cifar"]).splitlines()
    dw = [w for w in workloads(graphs["mobilenet-cifar"]) if w.is_mac]
    assert len(topo) - 1 == sum(w.groups for w in dw) and "DP" not in "".join(topo[1:])


def test_partial_sums_spill_at_four_bytes_only_when_they_do_not_fit():
    w = Workload("c", "conv", 1, 64, 32, 1, 16, 16, 3, 3, 16, 16, 1, 1, 1, 1)  # window 576: 72 row folds on 8x8
    big = systolic.traffic(w, 8, 8, "ws", 3 * 1024 * 1024)
    small = systolic.traffic(w, 8, 8, "ws", 3 * 1024)  # 256 pixels x 8 cols x 4 B = 8 KiB > 1 KiB third
    assert big["dram"]["psum"] == 0
    assert small["dram"]["psum"] == 2 * (72 - 1) * 256 * 32 * 4
    assert small["glb"]["psum"] == big["glb"]["psum"] == 2 * (72 - 1) * 256 * 32 * 4
    assert big["dram"]["filter"] == 32 * 576 and big["dram"]["bias"] == 4 * 32 and big["dram"]["ofmap"] == 32 * 256
    assert systolic.traffic(w, 8, 8, "os", 3 * 1024)["dram"]["psum"] == 0  # os keeps its sums in the PEs


# ---- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["systolic-16-45nm", "eyeriss-45nm"])
def test_45nm_compute_energy_equals_the_energy_model_per_node(tiny_q, graphs, arch):
    a = load_arch(arch)
    flows = _flows(a)
    for g in (tiny_q[0].graph, graphs["resnet20"]):
        costs = {c.name: c.compute_pj(Arith.INT8_POT, energy.load_table()) for c in energy.graph_costs(g, _zp(g))}
        for df in flows:
            r = accel_report(g, a, df, zero_points=_zp(g))
            for lay in r["layers"]:
                got = lay["energy"]["compute"] + lay["energy"]["ppu"]
                assert got == pytest.approx(costs.get(lay["node"], 0.0), rel=1e-12, abs=1e-9), lay["node"]


def test_compulsory_dram_bytes_equal_the_export_of_what_moves(tiny_q, tmp_path):
    """Compulsory DRAM bytes: the export's weights and biases, and its test vector of every value the schedule
    moves: the image and each node's output, less flatten's view and, under rs, a conv's output its fused
    pool reduces on the way out (issue 30: 40,666 B counted those against 36,828 B moved on eyeriss)."""
    from potq.accel.search import fused_pools
    from potq.ir.graph import OpType

    q, images = tiny_q
    q.export(tmp_path / "exp", images[:1])
    desc = json.loads((tmp_path / "exp" / "model.json").read_text())
    weights = np.load(tmp_path / "exp" / "weights.npz")
    vectors = np.load(tmp_path / "exp" / "vectors.npz")
    w_bytes = sum(weights[k].nbytes for k in weights.files if k.endswith(".weight"))
    assert all(weights[k].dtype == np.int8 for k in weights.files if k.endswith(".weight"))
    b_bytes = sum(weights[k].size * 4 for k in weights.files if k.endswith(".bias"))
    acts = [k for k in vectors.files if k not in ("labels", "logits")]
    bits = {k: (v.get("q") or {"bits": 8})["bits"] for k, v in desc["values"].items()}  # the image: uint8
    assert len(acts) == len(q.graph.nodes) + 1  # the image and every node's output
    views = {n.output for n in q.graph.nodes if n.op == OpType.FLATTEN}
    pooled = {n.output for n in q.graph.nodes if n.name in fused_pools(q.graph)}
    assert len(views) == 1 and len(pooled) == 2
    for arch in ("systolic-16", "eyeriss"):
        for df in _flows(load_arch(arch)):
            still = views | (pooled if df == "rs" else set())
            a_bytes = sum(vectors[k][0].size * bits[k] // 8 for k in acts if k not in still)
            r = accel_report(q.graph, load_arch(arch), df)
            assert r["total"]["compulsory_dram_bytes"] == w_bytes + b_bytes + a_bytes
            assert sum(r["total"]["bytes"]["dram"].values()) >= r["total"]["compulsory_dram_bytes"]


@pytest.fixture(scope="module")
def zoo_reports():
    """accel_report of every zoo net (captured, at 8 bits) on every preset and each of its dataflows."""
    from potq.models import ZOO

    out = {}
    for name in ZOO:
        g = _captured(name)
        for preset in PRESETS:
            a = load_arch(preset)
            for df in _flows(a):
                out[name, preset, df] = accel_report(g, a, df, zero_points=_zp(g))
    return out


def test_compulsory_traffic_never_exceeds_the_modeled_dram_total_on_the_zoo(zoo_reports):
    for key, r in zoo_reports.items():
        t = r["total"]
        on_chip = load_arch(key[1]).timing == RTL_TIMING  # potq's RTL holds the whole model: no DRAM at all
        assert (0 if on_chip else 1) <= t["compulsory_dram_bytes"] <= sum(t["bytes"]["dram"].values()), key
        assert on_chip == (sum(t["bytes"]["dram"].values()) == 0), key


def test_report_is_deterministic_and_complete(tiny_q, graphs):
    for g in (tiny_q[0].graph, graphs["seed"]):
        for a, df in [(load_arch("systolic-8"), df) for df in ("ws", "os", "is")] + [(load_arch("eyeriss"), "rs")]:
            r1, r2 = accel_report(g, a, df, zero_points=_zp(g)), accel_report(g, a, df, zero_points=_zp(g))
            assert json.dumps(r1) == json.dumps(r2) and to_csv(r1) == to_csv(r2)
            assert len(r1["layers"]) == len(g.nodes)
            assert sum(r1["energy_share"].values()) == pytest.approx(1.0)
            for lay in r1["layers"]:
                c = lay["cycles"]
                assert c["latency"] == c["compute"] + c["dram"] + c["glb"] + c["ppu"]
                assert 0 <= lay["utilization"] <= 1
                assert lay["attainable_macs_per_cycle"] <= a.pes
    text = format_table(accel_report(graphs["seed"], load_arch("systolic-8"), "ws", zero_points=_zp(graphs["seed"])))
    assert "| features.0 | conv | 884,736 |" in text and "Energy by level" in text


def test_rs_layers_are_row_stationary_evaluate_of_the_lab_conv_blocks(graphs):
    """`potq accel`'s row-stationary latency and energy of a conv block are row_stationary.evaluate()'s
    (the best mapping, the max pool fused after the conv); the fused pool costs nothing of its own."""
    from potq.accel.search import conv_blocks, search

    a, g = load_arch("eyeriss"), graphs["seed"]
    r = accel_report(g, a, "rs", zero_points=_zp(g))
    by = {lay["node"]: lay for lay in r["layers"]}
    blocks = conv_blocks(g)
    assert [k for _, k in blocks if k > 1] == [2, 2, 2]
    for w, k in blocks:
        mapping, m = search(w, a, "latency", k)
        lay = by[w.node]
        assert lay["mapping"] == str(mapping) and lay["cycles"]["latency"] == m["latency"], w.node
        assert lay["cycles"]["ppu"] == m["cycles_ppu"] and sum(lay["bytes"]["dram"].values()) == m["dram_access"]
        assert lay["energy"]["total"] == pytest.approx(m["energy_total"], rel=1e-12)
        assert lay["bound"] == m["bound"] and lay["balance_point"] == m["balance_point"] == 60  # 48 PEs / 0.8 B
    fused = [lay for lay in r["layers"] if lay["dataflow"] == "fused"]
    assert [f["mapping"] for f in fused] == ["into features.0", "into features.4", "into features.14"]
    assert all(f["cycles"]["latency"] == 0 and f["energy"]["total"] == 0 for f in fused)
    # systolic runs the same pools as their own PPU nodes
    ws = accel_report(g, load_arch("systolic-16"), "ws", zero_points=_zp(g))
    assert all(lay["dataflow"] != "fused" for lay in ws["layers"])


def test_one_dram_bandwidth_for_the_latency_the_roofline_and_the_bound():
    from potq.accel.model import roofline
    from potq.accel.row_stationary import bound

    a = load_arch("eyeriss")  # 4 B per transaction of 5 cycles
    assert a.dram_bytes_per_cycle == 0.8 and [a.dram_cycles(b) for b in (4, 5, 8)] == [5, 7, 10]
    assert roofline(48 * 600, 480, a) == {"intensity": 60, "attainable_macs_per_cycle": 48, "balance_point": 60}
    assert roofline(100, 10, a)["attainable_macs_per_cycle"] == 10 * 0.8
    assert [bound(c, 10) for c in (9, 10, 11)] == ["memory", "balanced", "compute"] and bound(0, 0) == "none"


def test_bound_label_agrees_with_the_latency_model_on_the_zoo(zoo_reports):
    """Issue 30: the Bound column, the roofline and the latency read one DRAM bandwidth, so a node labelled
    compute-bound spends at least as many cycles computing as moving DRAM bytes, and a memory-bound one no
    more; a node above the roofline's ridge is compute-bound."""
    for key, r in zoo_reports.items():
        bw = r["dram_bytes_per_cycle"]
        assert r["balance_point"] == r["peak_macs_per_cycle"] / bw, key
        for lay in [*r["layers"], {**r["total"], "node": "total", "bound": r["bound"], "intensity": r["intensity"]}]:
            c, dram_bytes = lay["cycles"], sum(lay["bytes"]["dram"].values())
            where = (*key, lay["node"])
            ceilings = len(r["layers"]) if lay["node"] == "total" else 1  # the DRAM cycles round up per node
            assert dram_bytes / bw <= c["dram"] < dram_bytes / bw + ceilings, where
            want = {"compute": c["compute"] >= c["dram"], "memory": c["compute"] <= c["dram"]}
            assert want.get(lay["bound"], c["compute"] == c["dram"]), where
            if lay["intensity"] > r["balance_point"]:
                assert lay["bound"] == "compute", where


def test_overlapped_latency_by_hand():
    from potq.accel.model import overlapped

    cyc = {"compute": 100, "dram": 300, "glb": 50, "ppu": 10}
    # the slowest level whole, one tile of the others (fill and drain); the array waits 200 cycles for DRAM
    assert overlapped(cyc, 10, "double-buffered") == (300 + 16, 200)
    assert overlapped(cyc, 1, "double-buffered") == (460, 0) == overlapped(cyc, 10, "none")
    assert overlapped({"compute": 0, "dram": 40, "glb": 8, "ppu": 20}, 4, "double-buffered") == (40 + 7, 20)


@pytest.mark.parametrize("name", ["seed", "mobilenet-cifar"])
def test_double_buffering_overlaps_the_levels_and_moves_the_same_bytes(graphs, name):
    """Issue 30, item 1: with double buffering a node takes between its slowest level and the serial sum,
    the slowest level plus ceil((sum - slowest) / tiles); its levels' cycles, bytes and every energy but
    leakage are the serial model's; `none` is the serial sum."""
    g = graphs[name]
    for preset, df in (("eyeriss", "rs"), ("systolic-16", "os"), ("systolic-8", "ws")):
        a = load_arch(preset)
        serial = accel_report(g, a, df, zero_points=_zp(g))
        db = accel_report(g, a, df, zero_points=_zp(g), overlap="double-buffered")
        assert (serial["overlap"], db["overlap"]) == ("none", "double-buffered")
        for s, d in zip(serial["layers"], db["layers"], strict=True):
            levels = [d["cycles"][k] for k in ("compute", "dram", "glb", "ppu")]
            assert levels == [s["cycles"][k] for k in ("compute", "dram", "glb", "ppu")], s["node"]
            assert s["cycles"]["latency"] == sum(levels) and s["cycles"]["stall"] == 0
            slow = max(levels)
            one = d["tiles"] <= 1  # a single tile (or a fused pool's none) overlaps nothing
            want = sum(levels) if one else slow + math.ceil((sum(levels) - slow) / d["tiles"])
            assert d["cycles"]["latency"] == want, s["node"]
            assert slow <= d["cycles"]["latency"] <= s["cycles"]["latency"], s["node"]
            engine = levels[0] or levels[3]
            assert d["cycles"]["stall"] == (0 if one else slow - engine), s["node"]
            assert s["bytes"] == d["bytes"] and s["bound"] == d["bound"]
            assert {k: v for k, v in s["energy"].items() if k not in ("leakage", "total")} == {
                k: v for k, v in d["energy"].items() if k not in ("leakage", "total")
            }
        assert db["total"]["cycles"]["latency"] < serial["total"]["cycles"]["latency"], (preset, df)


def test_overlap_from_the_file_or_the_cli(tmp_path, capsys):
    raw = _raw()
    raw["overlap"] = "double-buffered"
    (tmp_path / "db.json").write_text(json.dumps(raw))
    assert main(["accel", "--model", "tiny", "--arch", str(tmp_path / "db.json"), "--dataflow", "os", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    argv = ["accel", "--model", "tiny", "--arch", "systolic-16", "--dataflow", "os", "--overlap", "double-buffered"]
    assert main([*argv, "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    assert from_file["layers"] == from_cli["layers"] and from_cli["overlap"] == "double-buffered"
    assert main(argv) == 0 and ", double-buffered (" in capsys.readouterr().out
    assert main([*argv[:6], str(tmp_path / "db.json"), "--dataflow", "os", "--overlap", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overlap"] == "none"
    assert main(["accel", "--model", "tiny", "--arch", "potq-rtl", "--overlap", "double-buffered"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not apply to timing potq-rtl" in err and "\n" not in err


def test_scalesim_compat_changes_only_layers_whose_stride_leaves_a_remainder(graphs):
    a = load_arch("systolic-16")
    g = graphs["resnet20"]
    zp = _zp(g)
    plain, compat = accel_report(g, a, "ws", zero_points=zp), accel_report(g, a, "ws", compat=True, zero_points=zp)
    for w, p, c in zip(workloads(g), plain["layers"], compat["layers"], strict=True):
        changed = p["cycles"]["compute"] != c["cycles"]["compute"]
        # only where (H + 2p - R) is not a multiple of the stride: every stride-2 layer here, the 1x1 shortcuts too
        assert changed == (w.is_mac and (w.H + 2 * w.pad_h - w.R) % w.stride_h != 0), w.node
    assert sum(lay["macs"] for lay in compat["layers"]) == sum(lay["macs"] for lay in plain["layers"])


def test_cli_and_api(tiny_q, tmp_path, capsys):
    q, _ = tiny_q
    r = q.accel("systolic-16", "os")
    assert r["dataflow"] == "os" and len(r["layers"]) == len(q.graph.nodes)
    out_csv, out_dir = tmp_path / "a.csv", tmp_path / "ss"
    args = ["accel", "--model", "tiny", "--arch", "systolic-16", "--csv", str(out_csv), "--scalesim-out", str(out_dir)]
    assert main(args) == 0
    assert "| features.0 | conv |" in capsys.readouterr().out
    rows = out_csv.read_text().splitlines()
    assert rows[0].startswith("node,op,dataflow,mapping,macs") and len(rows) == 1 + len(q.graph.nodes)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        ".potq-manifest.json",
        "layout.csv",
        "scale_is.cfg",
        "scale_os.cfg",
        "scale_ws.cfg",
        "topology.csv",
    ]
    assert main(["accel", "--model", "tiny", "--arch", "systolic-8", "--dataflow", "is", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataflow"] == "is"


def test_cli_on_a_runs_quantized_graph(tiny_q, tmp_path, capsys):
    from potq.runs.paths import quant_paths
    from potq.runs.quantized import save_quantized
    from potq.train import TrainConfig

    save_quantized(tiny_q[0].graph, TrainConfig(model="tiny"), quant_paths(tmp_path, "pot-channel")[0], None)
    out_csv = tmp_path / "a.csv"
    assert main(["accel", "--run", str(tmp_path), "--arch", "systolic-8", "--csv", str(out_csv)]) == 0
    rows = out_csv.read_text().splitlines()
    head, last = rows[0].split(","), rows[-1].split(",")
    assert last[head.index("dram_ofmap_bytes")] == "40"  # the 10 int32 logits of the quantized graph
    assert main(["accel", "--run", str(tmp_path), "--scheme", "pot-seed"]) == 2
    assert "no quantized model" in capsys.readouterr().err


def test_cli_dse_and_mappings_csv(tmp_path, capsys):
    png, maps = tmp_path / "dse.png", tmp_path / "maps.csv"
    args = ["accel", "--model", "tiny", "--arch", "eyeriss", "--dse", "--dse-with", "systolic-8"]
    args += ["--dse-arrays", "6x8,12x16", "--dse-glb", "64", "--dse-out", str(png), "--mappings-csv", str(maps)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| architecture | dataflow | PE array |" in out and "Pareto front, latency vs energy (" in out
    assert out.count("| eyeriss-") == 2 and out.count("| systolic-8-") == 6  # 2 arrays x (rs; ws, os, is)
    assert png.read_bytes()[:4] == b"\x89PNG"
    rows = maps.read_text().splitlines()
    assert rows[0].startswith("layer,pe_array_h,pe_array_w,ifmap_spad_size,filter_spad_size,psum_spad_size,glb_size")
    assert rows[1].startswith("features.0,6,8,12,48,16,65536,4,4,") and len(rows) > 10
    assert main(["accel", "--model", "tiny", "--arch", "eyeriss", "--dse", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["dse"]
    assert len(points) == 9 and {p["dataflow"] for p in points} == {"rs"}  # 3 arrays x 3 buffers by default


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--dse", "--dse-arrays", "6by8"], "--dse-arrays wants ROWSxCOLS"),
        (["--dse", "--dse-glb", "0"], "--dse-glb: every size must be from 1 B to 1048576 KiB, got 0"),
        (["--dse-out", "{tmp}/d.png"], "needs --dse"),
        (["--dse", "--dse-out", "{tmp}/d.jpg"], "must be a .png file"),
        (["--dse", "--dse-out", "{tmp}/no/d.png"], "no folder"),
        (
            ["--arch", "systolic-8", "--mappings-csv", "{tmp}/m.csv"],
            "--mappings-csv: lists row-stationary (rs) mappings; the dataflow here is ws",
        ),
        (["--dse", "--dse-with", "eyeriss-45nm", "--dse-arrays", "6x8", "--dse-glb", "64"], "different units"),
        (["--dse", "--dse-with", "{tmp}/nope.json"], "no such file"),
        (["--dse", "--dse-arrays", "6x8", "--dse-glb", "0.01"], "no design point fits, nothing to plot (layer "),
    ],
)
def test_cli_dse_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, says):
    outs = ["--csv", str(tmp_path / "a.csv")]
    if "--mappings-csv" not in extra:
        outs += ["--mappings-csv", str(tmp_path / "m.csv")]
    if "--dse-out" not in extra and "--dse" in extra:
        outs += ["--dse-out", str(tmp_path / "d.png")]
    args = ["accel", "--model", "tiny", *[x.format(tmp=tmp_path) for x in extra], *outs]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
