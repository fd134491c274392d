"""Row-stationary model and mapping search (potq.accel.row_stationary, potq.accel.search): the course lab's
example layer exactly, each legality rule, the vectorized search against the scalar reference, the CSV,
and the one-line error for a layer no mapping fits."""

from __future__ import annotations

import csv
import itertools
from dataclasses import replace

import pytest

from potq.accel.arch import load_arch, preset_path
from potq.accel.dse import DesignPoint, dse, format_dse, pareto, plot_dse
from potq.accel.row_stationary import FIELDS, Mapping, evaluate, legal, space, space_size
from potq.accel.search import LAB_COLUMNS, conv_blocks, legal_mappings, mappings_csv, search, search_scalar
from potq.accel.workload import Workload
from potq.errors import UserError

EYERISS = load_arch("eyeriss")
# The handout's example: N=1, C=3, M=64, H=W=32, R=S=3, E=F=32, stride 1, padding 1, a 2x2 max pool after.
EXAMPLE = Workload("example", "conv", 1, 3, 64, 1, 32, 32, 3, 3, 32, 32, 1, 1, 1, 1)
EXAMPLE_MAPPING = Mapping(m=16, n=1, e=8, p=4, q=4, r=1, t=2)
# A small array keeps the scalar reference search fast.
SMALL = replace(
    EYERISS, name="small", pe_rows=3, pe_cols=4, glb_bytes=4096, spad_bytes={"ifmap": 6, "filter": 24, "psum": 12}
)


def conv(name, c, m, hw, k, stride=1, groups=1, n=1) -> Workload:
    e = (hw + 2 * (k // 2) - k) // stride + 1
    return Workload(name, "conv", n, c, m, groups, hw, hw, k, k, e, e, stride, stride, k // 2, k // 2)


def test_course_example_terms_exactly():
    d = evaluate(EXAMPLE, EYERISS, EXAMPLE_MAPPING, pool=2)
    assert d["glb_usage_ifmap"] == 1280  # n*qr*(U(e-1)+R)*W = 1*4*10*32
    assert d["dram_ifmap_read"] == 20480  # ceil(M/m)*ceil(E/e)*ceil(N/n)*ceil(C/qr) * 1280 = 4*4*1*1*1280
    assert d["glb_ifmap_read"] == 40960  # ... * ceil(m/pt) = 2
    assert d["macs"] == 1_769_472
    assert round(d["intensity_kernel"], 2) == 25.16  # 1769472 / (3072 + 1728 + 65536)
    # The handout's balance point is 48 PEs / its 4 B bus = 12, which makes the kernel compute-bound; potq
    # reads one DRAM bandwidth, the latency's 4 B per 5-cycle transaction (issue 30): 48 / 0.8 = 60, and
    # the kernel at peak (36,864 array cycles) against its 70,336 B at 0.8 B/cycle (87,920) is memory-bound.
    assert d["balance_point"] == 60.0
    assert d["bound_kernel"] == "memory"


def test_course_example_open_terms_by_hand():
    """The terms the handout leaves open, as docs/accel-row-stationary.md defines them."""
    d = evaluate(EXAMPLE, EYERISS, EXAMPLE_MAPPING, pool=2)
    passes = 4 * 4 * 1 * 1 * 2  # M/m * E/e * N/n * C/qr * m/pt
    assert d["passes"] == passes
    assert d["glb_usage_filter"] == 8 * 4 * 3 * 3  # pt*qr*R*S int8
    assert d["glb_usage_bias"] == 8 * 4  # pt int32
    assert d["glb_usage_psum"] == 1 * 16 * 8 * 32 * 4  # n*m*e*F int32
    assert d["glb_usage"] == 1280 + 288 + 32 + 16384
    assert d["dram_filter_read"] == d["glb_filter_read"] == passes * 288
    assert d["dram_bias_read"] == d["glb_bias_read"] == passes * 32  # one channel block: every pass loads B
    assert d["glb_psum_read"] == d["glb_psum_write"] == 0  # C fits one channel block: no psum round trip
    assert d["dram_ofmap_write"] == d["glb_ofmap_write"] == 64 * 16 * 16  # pooled, uint8
    assert d["dram_access"] == 20480 + 9216 + 1024 + 16384
    assert d["glb_access"] == 40960 + 9216 + 1024 + 16384
    assert d["cycles_dram"] == 47104 * 5 // 4
    assert d["cycles_glb"] == 67584 * 2 // 4
    assert d["cycles_compute"] == passes * 1 * 4 * 4 * 32 * 3  # per pass a PE does n*q*p*F*S MACs
    assert d["cycles_ppu"] == 64 * 32 * 32 * 5  # the lab's PPU: 1 operation per cycle, 5 per pooled output
    assert d["latency"] == d["cycles_dram"] + d["cycles_glb"] + d["cycles_compute"] + d["cycles_ppu"] == 469_504
    assert d["utilization"] == 0.75  # q = 4 channel rows where the layer has 3
    assert d["intensity"] == 1_769_472 / 47104 and d["bound"] == "memory"  # DRAM 58,880 > compute 49,152 cycles
    assert d["energy_compute"] == 1_769_472 * 2
    assert d["energy_dram"] == 47104 * 200 and d["energy_glb"] == 67584 * 10
    assert d["energy_spad"] == 1_769_472 * (1 + 1 + 4 + 4)
    assert d["energy_leakage"] == pytest.approx(50e-6 * d["latency"] / 200e6 * 1e12)


def test_the_lab_preset_has_the_labs_ppu_and_the_faster_one_says_so():
    """Issue 30, item 6: `eyeriss` is the lab's accelerator, PPU included; potq's 8-operation PPU is
    `eyeriss-ppu8`, otherwise the same (the handout's layer: 469,504 against 182,784 cycles)."""
    fast = load_arch("eyeriss-ppu8")
    assert EYERISS.ppu_ops_per_cycle == load_arch("eyeriss-45nm").ppu_ops_per_cycle == 1
    assert replace(fast, name="eyeriss", ppu_ops_per_cycle=1, source=EYERISS.source) == EYERISS
    d = evaluate(EXAMPLE, fast, EXAMPLE_MAPPING, pool=2)
    assert (d["cycles_ppu"], d["latency"]) == (40_960, 182_784)


def test_psums_round_trip_when_channels_split():
    wl = conv("c", 32, 16, 8, 3)
    d = evaluate(wl, EYERISS, Mapping(m=16, n=1, e=8, p=4, q=4, r=2, t=1))
    cblocks, blocks, mtiles = 32 // 8, 1 * 1 * 1, 16 // 4
    psum_tile = 1 * 4 * 8 * 8 * 4  # n*pt*e*F int32
    assert d["glb_psum_read"] == d["glb_psum_write"] == blocks * (cblocks - 1) * mtiles * psum_tile
    assert d["dram_bias_read"] == blocks * mtiles * 4 * 4  # B only with the first channel block
    assert d["dram_ofmap_write"] == 16 * 8 * 8


def test_operand_widths_come_from_the_workload():
    wide = replace(EXAMPLE, bits_ifmap=16)
    d = evaluate(wide, EYERISS, Mapping(m=16, n=1, e=8, p=4, q=2, r=1, t=2))
    assert d["glb_usage_ifmap"] == 1 * 2 * 10 * 32 * 2
    assert not legal(wide, EYERISS, EXAMPLE_MAPPING)  # q=4 rows of 3 16-bit values overflow 12 B
    assert legal(wide, EYERISS, EXAMPLE_MAPPING).rule == "spad_ifmap"


@pytest.mark.parametrize(
    "mapping, arch, pool, rule",
    [
        (Mapping(16, 1, 5, 4, 4, 1, 2), EYERISS, 1, "e"),
        (Mapping(16, 1, 8, 4, 4, 2, 2), EYERISS, 1, "pe_array"),
        (Mapping(16, 1, 4, 4, 4, 4, 1), EYERISS, 1, "pe_array"),  # r*t = 4 but only 2 sets stack
        (Mapping(16, 1, 8, 4, 5, 1, 2), EYERISS, 1, "spad_ifmap"),
        (
            Mapping(16, 1, 8, 4, 4, 1, 2),
            replace(EYERISS, spad_bytes={"ifmap": 12, "filter": 24, "psum": 16}),
            1,
            "spad_filter",
        ),
        (Mapping(15, 1, 8, 5, 3, 1, 2), EYERISS, 1, "spad_psum"),
        (Mapping(12, 1, 8, 4, 4, 1, 2), EYERISS, 1, "m"),
        (Mapping(16, 1, 8, 3, 4, 1, 2), EYERISS, 1, "m"),
        (Mapping(16, 1, 8, 4, 4, 1, 2), EYERISS, 3, "pool"),
        (Mapping(64, 1, 16, 4, 4, 1, 1), replace(EYERISS, glb_bytes=16384), 1, "glb"),
    ],
)
def test_each_rule_names_itself(mapping, arch, pool, rule):
    """Each rule, broken alone by a hand-made mapping of the example layer."""
    verdict = legal(EXAMPLE, arch, mapping, pool)
    assert not verdict and verdict.rule == rule and verdict.reason
    with pytest.raises(UserError, match="example: mapping .* is not legal"):
        evaluate(EXAMPLE, arch, mapping, pool)


def test_out_of_range_mappings_are_illegal_not_errors():
    point = conv("point", 16, 16, 8, 1)
    assert legal(point, EYERISS, Mapping(16, 1, 16, 4, 4, 1, 3)).rule == "range"  # e=16 > E=8, though r*t fits
    assert legal(point, EYERISS, Mapping(16, 1, 8, 4, 4, 0, 6)).rule == "range"  # no division by zero
    assert legal(point, EYERISS, Mapping(16, 1, 8, 4, 4, 1, 6))


def test_space_is_the_labs():
    sp = space(EXAMPLE, EYERISS)
    assert sp["m"] == [1, 2, 4, 8, 16, 32, 64] and sp["n"] == [1]
    assert sp["e"] == list(range(1, 17)) and sp["p"] == [1, 2, 3, 4] and sp["q"] == [1, 2, 3, 4]
    assert sp["r"] == [1, 2] and sp["t"] == list(range(1, 17))
    assert space_size(EXAMPLE, EYERISS) == 7 * 16 * 4 * 4 * 2 * 16


LAYERS = [
    conv("stem", 3, 8, 8, 3),
    conv("down", 8, 16, 8, 3, stride=2),
    conv("point", 6, 4, 4, 1, stride=2),
    conv("dw", 1, 1, 8, 3, groups=8),
    Workload("fc", "linear", 2, 12, 6, 1, 1, 1, 1, 1, 1, 1),
]


@pytest.mark.parametrize("wl", LAYERS, ids=lambda w: w.node)
def test_vectorized_legal_set_equals_scalar(wl):
    params, size = legal_mappings(wl, SMALL)
    sp = space(wl, SMALL)
    scalar = [v for v in itertools.product(*(sp[k] for k in FIELDS)) if legal(wl, SMALL, Mapping(*v))]
    assert size == space_size(wl, SMALL)
    assert list(zip(*(params[k].tolist() for k in FIELDS), strict=True)) == scalar


@pytest.mark.parametrize("objective", ["latency", "energy", "edp"])
@pytest.mark.parametrize("wl", LAYERS, ids=lambda w: w.node)
def test_search_equals_scalar_reference(wl, objective):
    best, metrics = search(wl, SMALL, objective)
    best_s, metrics_s = search_scalar(wl, SMALL, objective)
    assert best == best_s
    assert metrics == metrics_s


def test_search_on_the_course_array_and_tie_break():
    best, metrics = search(EXAMPLE, EYERISS, "latency", pool=2)
    assert metrics["legal"] > 1 and metrics["space"] == space_size(EXAMPLE, EYERISS)
    assert metrics["latency"] <= evaluate(EXAMPLE, EYERISS, EXAMPLE_MAPPING, pool=2)["latency"]
    # ties: the mapping with the smallest (m, n, e, p, q, r, t) among the best objective wins
    params, _ = legal_mappings(EXAMPLE, EYERISS, pool=2)
    tuples = list(zip(*(params[k].tolist() for k in FIELDS), strict=True))
    lat = {v: evaluate(EXAMPLE, EYERISS, Mapping(*v), pool=2)["latency"] for v in tuples}
    assert tuple(vars(best).values()) == min(tuples, key=lambda v: (lat[v], v))


def test_no_mapping_is_one_line_naming_layer_and_rule(tmp_path):
    tiny_glb = replace(EYERISS, glb_bytes=256)
    with pytest.raises(UserError, match=r"layer example .*global buffer.*smallest pass needs \d+ B") as err:
        search(EXAMPLE, tiny_glb)
    assert "\n" not in str(err.value)
    (tmp_path / "small.json").write_text(preset_path("eyeriss").read_text().replace("65536", "512"))
    with pytest.raises(UserError, match=r"fits --arch .*small.json: .*512 B global buffer \(glb_bytes\)"):
        search(EXAMPLE, load_arch(tmp_path / "small.json"))
    with pytest.raises(UserError, match="layer big .*R=7 rows high but the PE array has 6 rows"):
        search(conv("big", 3, 8, 16, 7), EYERISS)
    with pytest.raises(UserError, match="psum scratchpad"):
        search(EXAMPLE, replace(EYERISS, spad_bytes={"ifmap": 12, "filter": 48, "psum": 2}))
    with pytest.raises(UserError, match="no MACs"):
        search(replace(EXAMPLE, op="add"), EYERISS)
    with pytest.raises(UserError, match="--objective speed"):
        search(EXAMPLE, EYERISS, "speed")


def test_mappings_csv(tmp_path):
    path = tmp_path / "dse_mappings.csv"
    rows = mappings_csv(path, LAYERS[:2], SMALL, "energy")
    table = list(csv.reader(path.open()))
    assert tuple(table[0][: len(LAB_COLUMNS)]) == LAB_COLUMNS
    assert len(table) - 1 == rows == sum(len(legal_mappings(wl, SMALL)[0]["m"]) for wl in LAYERS[:2])
    first = dict(zip(table[0], table[1], strict=True))
    best, metrics = search(LAYERS[0], SMALL, "energy")
    assert first["layer"] == "stem" and first["rank"] == "1"
    assert [int(first[k]) for k in FIELDS] == list(vars(best).values())
    assert float(first["energy_total"]) == metrics["energy_total"] and int(first["latency"]) == metrics["latency"]
    again = tmp_path / "again.csv"
    mappings_csv(again, LAYERS[:2], SMALL, "energy")
    assert again.read_bytes() == path.read_bytes()
    bad = tmp_path / "bad.csv"
    with pytest.raises(UserError, match="layer big"):
        mappings_csv(bad, [LAYERS[0], conv("big", 3, 8, 16, 7)], SMALL)
    assert not bad.exists()


def test_ties_break_on_the_smallest_mapping_tuple():
    """Only MACs cost energy here, so every legal mapping ties: the smallest (m, n, e, p, q, r, t) wins."""
    flat = replace(SMALL, energy={"mac": 2.0, "spad": 0.0, "glb": 0.0, "dram": 0.0, "ppu_op": 0.0}, leakage_w=0.0)
    for wl in LAYERS:
        params, _ = legal_mappings(wl, flat)
        smallest = min(zip(*(params[k].tolist() for k in FIELDS), strict=True))
        assert len(params["m"]) > 1
        assert tuple(vars(search(wl, flat, "energy")[0]).values()) == smallest
        assert tuple(vars(search_scalar(wl, flat, "energy")[0]).values()) == smallest


def point(name, df, lat, en, fits=True, unit="relative"):
    return DesignPoint(name, df, 6, 8, 65536, lat, en, unit, fits, "" if fits else "layer x: no mapping")


def test_pareto_front():
    pts = [
        point("a", "rs", 10, 5.0),
        point("b", "rs", 5, 10.0),
        point("c", "ws", 10, 10.0),  # dominated by a and b
        point("d", "os", 5, 10.0),  # equal to b: neither dominates, both stay
        point("e", "is", 1, 1.0, fits=False),  # does not fit: never on the front
        point("f", "rs", 10, 5.0),  # equal to a
    ]
    assert [p.arch for p in pareto(pts)] == ["b", "d", "a", "f"]
    assert pareto(list(reversed(pts))) == pareto(pts)
    with pytest.raises(UserError, match="different units"):
        pareto([point("a", "rs", 1, 1.0), point("b", "rs", 2, 2.0, unit="pJ")])


def test_dse_on_a_small_graph(tmp_path):
    from potq.accel.model import accel_report
    from potq.ir.capture import capture
    from potq.models import build_model
    from potq.quant.scheme import policy_zero_points

    graph = capture(build_model("tiny", (3, 16, 16)), (3, 16, 16), [0.0] * 3, [1.0] * 3)
    zp = policy_zero_points(graph)
    pts = dse(graph, [EYERISS], pe_arrays=[(6, 8), (3, 4)], glb_sizes=[65536, 64], zero_points=zp)
    assert [(p.pe_rows, p.pe_cols, p.glb_bytes, p.dataflow) for p in pts] == [
        (6, 8, 65536, "rs"),
        (6, 8, 64, "rs"),
        (3, 4, 65536, "rs"),
        (3, 4, 64, "rs"),
    ]
    assert [p.fits for p in pts] == [True, False, True, False]
    assert "global buffer" in pts[1].reason and pts[1].reason.startswith("layer ")
    direct = accel_report(graph, EYERISS, "rs", zero_points=zp)["total"]
    assert pts[0].latency == direct["cycles"]["latency"] and pts[0].energy == direct["energy"]["total"]
    assert pts[2].latency > pts[0].latency  # a quarter of the PEs
    assert dse(graph, [EYERISS], pe_arrays=[(6, 8), (3, 4)], glb_sizes=[65536, 64], zero_points=zp) == pts
    table = format_dse(pts)
    assert table.count("\n") == 2 + len(pts) and "does not fit: layer " in table and "| yes |" in table
    plot_dse(pts, tmp_path / "dse.png", "tiny")
    assert (tmp_path / "dse.png").read_bytes()[:4] == b"\x89PNG"


def test_large_array_space_stays_small_in_memory():
    """A 32x32 row-stationary array: the product has 7*8*4*12*32*1024 mappings for a 1x1 layer; t is
    solved, not enumerated, so the grid holds 1/1024 of them."""
    big = replace(EYERISS, name="rs-32", pe_rows=32, pe_cols=32)
    wl = conv("point", 64, 64, 8, 1)
    best, metrics = search(wl, big, "edp")
    assert metrics["space"] == 7 * 8 * 4 * 12 * 32 * 1024
    assert legal(wl, big, best) and metrics["legal"] == len(legal_mappings(wl, big)[0]["m"])


def test_conv_blocks_fuse_the_max_pool_after_a_conv(tmp_path):
    from potq.ir.capture import capture
    from potq.models import build_model

    graph = capture(build_model("seed"), (3, 32, 32), [0.0] * 3, [1.0] * 3)
    blocks = conv_blocks(graph)
    assert [(w.node, pool) for w, pool in blocks if pool > 1] == [
        ("features.0", 2),
        ("features.4", 2),
        ("features.14", 2),
    ]
    assert len(blocks) == len(graph.mac_nodes())
    w, pool = blocks[0]
    best, m = search(w, EYERISS, "latency", pool)
    assert m["dram_ofmap_write"] == w.M * (w.E // 2) * (w.F // 2)  # written pooled, uint8
    rows = mappings_csv(
        tmp_path / "dse_mappings.csv", [w for w, _ in blocks], EYERISS, "latency", [p for _, p in blocks]
    )
    assert rows == sum(len(legal_mappings(w, EYERISS, p)[0]["m"]) for w, p in blocks)
