"""Below eight bits (issue 27): every node's precision in the graph, the integer golden model equal to the
simulated model bit for bit at every format and rounding, the first and last layers kept at 8 bits, and the
user's mistakes (a width out of range, a format the bits can't hold, a precision file naming no node) refused
in one line with nothing written."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from potq.cli import main
from potq.ir.capture import capture
from potq.ir.codes import WeightCode, weight_values
from potq.ir.tensor import normalize
from potq.quant.lower import calibrate, lower
from potq.quant.rules import QuantSettings
from tests.test_golden import MEAN, STD, compare, random_bn_model

FORMATS = [("4/4", "int"), ("4/8", "pot"), ("4/4", "apot"), ("2/8", "int"), ("3/3", "pot"), ("5/6", "apot")]


def lowbit(model: str, bits: str, code: str, rounding: str = "half-up", bits_all: bool = False, precision=()):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    settings = QuantSettings.parse("pot-channel", "ceil", rounding, None, bits, code, bits_all, precision)
    fgraph = capture(random_bn_model(model, 0), (3, 32, 32), MEAN, STD)
    return lower(fgraph, calibrate(fgraph, normalize(images[:16], MEAN, STD), settings), settings), images


@pytest.mark.parametrize(("bits", "code"), FORMATS)
@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
def test_golden_equals_simulated_below_eight_bits(bits, code, rounding):
    graph, images = lowbit("tiny", bits, code, rounding, bits_all=True)
    rec = compare(graph, images)
    w_bits, a_bits = (int(b) for b in bits.split("/"))
    for n in graph.mac_nodes():
        assert (n.weight_bits, n.weight_code) == (w_bits, WeightCode.of(code))
        assert torch.isin(n.tensors["weight"], torch.tensor(weight_values(n.weight_code, w_bits))).all()
    for v, q in graph.q.items():
        if not q.accumulator:
            assert q.bits == a_bits and 0 <= int(rec[v].min()) and int(rec[v].max()) < 1 << a_bits


USER_NET = str(Path(__file__).resolve().parents[1] / "examples" / "user_resnet.py") + ":build"


ISSUE_FORMATS = [("8/8", "int"), ("4/4", "int"), ("4/8", "pot"), ("4/4", "apot"), ("2/8", "int")]


@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
@pytest.mark.parametrize("model", ["resnet20", "mobilenet-cifar", "seed", USER_NET])
def test_the_zoo_and_the_readmes_user_net_below_eight_bits(model, rounding):
    """Issue 27's matrix: four nets, its five formats, every rounding rule: golden equal to simulated."""
    for bits, code in ISSUE_FORMATS:
        compare(*lowbit(model, bits, code, rounding))


def test_first_and_last_layers_stay_at_eight_bits_unless_bits_all():
    graph, _ = lowbit("resnet20", "4/4", "apot")
    macs = graph.mac_nodes()
    assert [(n.weight_bits, n.weight_code.value) for n in (macs[0], macs[-1])] == [(8, "int"), (8, "int")]
    assert {(n.weight_bits, n.weight_code.value) for n in macs[1:-1]} == {(4, "apot")}
    assert graph.q[graph.nodes[0].output].bits == 8  # the image's codes
    assert graph.q[macs[-1].inputs[0]].bits == 8  # what the last layer reads
    assert {graph.q[n.output].bits for n in macs[1:-1]} == {4}


def test_a_precision_file_sets_each_node(tmp_path):
    graph, _ = lowbit("tiny", "8/8", "int")
    mac = graph.mac_nodes()[1].name
    entries = ((mac, 3, "pot", 5),)
    graph, images = lowbit("tiny", "8/8", "int", precision=entries)
    node = next(n for n in graph.nodes if n.name == mac)
    assert (node.weight_bits, node.weight_code.value, graph.q[node.output].bits) == (3, "pot", 5)
    compare(graph, images)
    assert QuantSettings.parse(precision=entries).label().startswith("pot-channel-mixed-")


def test_labels_name_the_precision():
    assert QuantSettings.parse(bits="4/4", weights="apot").label() == "pot-channel-w4a4-apot"
    assert QuantSettings.parse(bits="4/8", weights="pot").label(qat=True) == "pot-channel-w4a8-pot-qat"
    assert QuantSettings.parse(bits="2/8").label() == "pot-channel-w2a8"
    assert QuantSettings.parse().label() == "pot-channel"  # 0.4's labels unchanged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "1/8"], "int weights take 2 to 8 bits, not 1"),
        (["--bits", "9/8"], "int weights take 2 to 8 bits, not 9"),
        (["--bits", "4/9"], "activations take 2 to 8 bits, not 9"),
        (["--bits", "5/8", "--weights", "pot"], "pot weights take 2 to 4 bits, not 5"),
        (["--bits", "2/8", "--weights", "apot"], "apot weights take 3 to 5 bits, not 2"),
        (["--bits", "four"], "give the weights' and the activations' bits as W/A"),
        (["--bits", "4/4", "--scheme", "float-channel"], "power-of-two schemes only"),
    ],
)
def test_bad_bits_are_one_line_and_write_nothing(tiny_run, capsys, args, message):
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["quantize", "--run", str(tiny_run), "--calib", "16", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_a_precision_file_naming_no_node_is_refused(tiny_run, tmp_path, capsys):
    path = tmp_path / "precision.json"
    path.write_text(json.dumps({"nodes": {"no.such.layer": {"w_bits": 4, "w_code": "int", "a_bits": 4}}}))
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["quantize", "--run", str(tiny_run), "--calib", "16", "--precision", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no node 'no.such.layer' in this model" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tiny_run.iterdir()) == before
    path.write_text(json.dumps({"nodes": {"x": {"w_bits": 6, "w_code": "pot"}}}))
    assert main(["quantize", "--run", str(tiny_run), "--calib", "16", "--precision", str(path)]) == 2
    assert "pot weights take 2 to 4 bits, not 6" in capsys.readouterr().err


def test_quantize_a_run_below_eight_bits(tiny_run, tmp_path, capsys):
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # a private copy: the session's run stays as it was
    assert main(["quantize", "--run", str(tiny_run), "--calib", "32", "--bits", "4/4", "--weights", "apot"]) == 0
    record = json.loads((tiny_run / "quant_pot-channel-w4a4-apot.json").read_text())
    assert (record["bits"], record["weights"]) == ("4/4", "apot")
    assert main(["verify", "--run", str(tiny_run), "--scheme", "pot-channel-w4a4-apot"]) == 0
    assert "0 mismatching values" in capsys.readouterr().out
    assert main(["quantize", "--run", str(tiny_run), "--calib", "32"]) == 0  # 8-bit, for the comparison
    eight = json.loads((tiny_run / "quant_pot-channel.json").read_text())
    assert record["packed_weights_mb"] < eight["packed_weights_mb"]
    assert main(["compare", "--run", str(tiny_run)]) == 0 and (tiny_run / "precision.png").exists()
    rows = {r.split(" | ")[0].strip("| "): r for r in (tiny_run / "compare.md").read_text().splitlines()}
    low = rows["pot-channel-w4a4-apot"]
    assert f"| {record['packed_weights_mb']:.6f} | half-even | ceil, mse below 8 bits |" in low
    assert f"| {eight['packed_weights_mb']:.6f} | half-even | ceil |" in rows["pot-channel"]
    priced = json.loads((tiny_run / "precision.json").read_text())
    low, high = priced["pot-channel-w4a4-apot"], priced["pot-channel"]
    assert 0 < low["compute_pj"] < high["compute_pj"] and low["dram_bytes"] < high["dram_bytes"]
    assert low["energy_pj"] > low["compute_pj"]
    from potq.report import build_markdown

    md = build_markdown(tiny_run)
    assert "### Precision: accuracy against size, energy and latency" in md
    assert "| pot-channel-w4a4-apot | 4/4 | apot |" in md


def test_the_accelerator_model_moves_weights_at_their_width():
    from potq.accel.workload import workloads

    w8 = {w.node: w for w in workloads(lowbit("resnet20", "8/8", "int", bits_all=True)[0])}
    w4 = {w.node: w for w in workloads(lowbit("resnet20", "4/8", "pot", bits_all=True)[0])}
    filters = [name for name, w in w8.items() if w.filter_values]
    assert filters and all(2 * w4[n].bytes_of("filter") == w8[n].bytes_of("filter") for n in filters)
    assert all(w4[n].bits_filter == 4 and w8[n].bits_filter == 8 for n in filters)


def test_the_accelerator_model_runs_low_bit_products_in_the_array():
    """A product below 8 bits (a narrower multiply, a shift, apot's two shifts and their add) is a MAC of the PE
    array as at 8 bits: each node's PPU operations and compute cycles stay 8-bit's, its latency does not grow, and
    its array and PPU energy is potq.energy's compute energy of it (a narrower multiply priced narrower)."""
    from potq import energy
    from potq.accel.arch import COST_ARCH, COST_DATAFLOW, load_arch
    from potq.accel.model import accel_report

    arch, table = load_arch(COST_ARCH), energy.load_table(None)
    eight = accel_report(lowbit("resnet20", "8/8", "int", bits_all=True)[0], arch, COST_DATAFLOW)["layers"]
    for bits, code in [("4/8", "int"), ("3/8", "pot"), ("4/8", "apot")]:
        graph, _ = lowbit("resnet20", bits, code, bits_all=True)
        costs = {c.name: c.compute_pj(energy.Arith.INT8_POT, table) for c in energy.graph_costs(graph)}
        for r, r8 in zip(accel_report(graph, arch, COST_DATAFLOW)["layers"], eight, strict=True):
            assert (r["ppu_ops"], r["cycles"]["compute"]) == (r8["ppu_ops"], r8["cycles"]["compute"]), r["node"]
            assert r["cycles"]["latency"] <= r8["cycles"]["latency"]
            assert r["energy"]["compute"] + r["energy"]["ppu"] == pytest.approx(costs.get(r["node"], 0.0), rel=1e-12)


def test_the_energy_model_prices_each_format():
    from potq import energy

    table = energy.load_table(None)
    per_mac = {}
    for bits, code in [("8/8", "int"), ("4/8", "pot"), ("4/8", "apot"), ("4/4", "int")]:
        graph, _ = lowbit("resnet20", bits, code, bits_all=True) if code != "apot" else lowbit("resnet20", "4/8", code)
        costs = {c.name: c for c in energy.graph_costs(graph)}
        mid = costs[graph.mac_nodes()[3].name]
        terms = mid.terms[energy.Arith.INT8_POT]
        product = [t for t in terms if t.what.startswith("input times weight") or "shifted terms" in t.what]
        per_mac[(bits, code)] = sum(t.pj(table) for t in product) / mid.k
        per_mac[(bits, code, "mac")] = per_mac[(bits, code)] + table.compute["int32_add"]
        per_mac[(bits, code, "bytes")] = (mid.memory_bytes(energy.Arith.INT8_POT), mid.weights)
    assert per_mac[("8/8", "int")] == table.compute["int8_mult"]  # 0.4's INT8 product, unchanged
    assert per_mac[("4/8", "pot")] == table.compute["shift"]  # a shift per product: 1/20 of the multiply
    assert per_mac[("4/8", "apot")] == 2 * table.compute["shift"] + table.compute["int8_add"]
    assert per_mac[("4/4", "int")] == table.compute["int8_mult"] * 16 / 64
    # with the int32 summation the whole MAC: 0.11 pJ against 0.3 pJ (0.37) for pot weights
    assert per_mac[("4/8", "pot", "mac")] / per_mac[("8/8", "int", "mac")] < 0.4
    (b8, weights), (b4, _) = per_mac[("8/8", "int", "bytes")], per_mac[("4/8", "pot", "bytes")]
    assert b8 - b4 == weights // 2  # 4-bit weights move half the bytes; the 8-bit activations the same


def test_adds_are_priced_linearly_in_their_width_through_the_tables_eight_and_thirty_two_bit_adds():
    from potq import energy

    table = energy.load_table(None)
    assert table.add_pj(8) == table.compute["int8_add"] and table.add_pj(32) == table.compute["int32_add"]
    assert abs(table.add_pj(16) - 0.05) < 0.004  # Horowitz's 16-bit add, 0.05 pJ, on the line
    assert table.add_pj(4) == table.compute["int8_add"] / 2
    widths = [table.add_pj(b) for b in range(2, 33)]
    assert widths == sorted(widths)


@pytest.mark.parametrize(("bits", "code"), [("8/8", "int"), ("4/8", "pot"), ("4/4", "int")])
def test_proven_accumulators_are_as_wide_as_each_nodes_worst_case(bits, code):
    from potq.ir.bounds import accumulator_bits, accumulator_bound

    graph, _ = lowbit("resnet20", bits, code, bits_all=True)
    for n in graph.mac_nodes():
        b, bound = accumulator_bits(graph, n, "proven"), accumulator_bound(graph, n)
        assert -(1 << (b - 1)) <= -bound and bound <= (1 << (b - 1)) - 1  # two's complement holds it
        assert bound >= 1 << (b - 2) or b == 2  # and one bit fewer would not
        assert accumulator_bits(graph, n) == 32


def test_sized_accumulators_narrow_the_sums_and_the_partial_sums_and_nothing_else():
    """systolic-16-45nm-sized: each MAC node's summation adds and scratchpad partial sums at its proven width;
    every other figure as systolic-16-45nm's. A pot-weight MAC (a shift and its add) against an INT8 MAC."""
    from potq import energy
    from potq.accel.arch import load_arch
    from potq.accel.model import accel_report
    from potq.ir.bounds import accumulator_bits

    table = energy.load_table(None)
    graph, _ = lowbit("resnet20", "4/8", "pot", bits_all=True)
    wide, sized = (accel_report(graph, load_arch(a), "os") for a in ("systolic-16-45nm", "systolic-16-45nm-sized"))
    nodes = {n.name: n for n in graph.mac_nodes()}
    for w, s in zip(wide["layers"], sized["layers"], strict=True):
        assert w["cycles"] == s["cycles"] and w["bytes"]["dram"] == s["bytes"]["dram"]
        if w["node"] in nodes:
            b = accumulator_bits(graph, nodes[w["node"]], "proven")
            assert s["bytes"]["spad"]["psum"] == 2 * -(-w["macs"] * b // 8) < w["bytes"]["spad"]["psum"]
            assert s["energy"]["compute"] < w["energy"]["compute"]
        else:
            assert s["energy"] == w["energy"]
    costs = {c.name: c for c in energy.graph_costs(graph, accumulator="proven")}
    mid = nodes[graph.mac_nodes()[3].name]
    b = accumulator_bits(graph, mid, "proven")
    pot_mac = table.compute["shift"] + table.add_pj(b)
    summed = [t for t in costs[mid.name].terms[energy.Arith.INT8_POT] if t.what.startswith("summation")]
    assert summed[0].pj(table) == pytest.approx((mid.tensors["weight"][0].numel() - 1) * table.add_pj(b))
    int8_mac = table.compute["int8_mult"] + table.add_pj(b)  # at the same accumulator
    assert pot_mac / int8_mac < 0.4 and pot_mac < table.compute["shift"] + table.compute["int32_add"]


def test_the_export_packs_low_bit_weights_and_the_accelerator_model_moves_those_bytes(tmp_path):
    import numpy as np

    from potq.deploy.export import write_export

    for bits, code in [("4/4", "apot"), ("3/8", "pot"), ("7/8", "int")]:  # 3 and 7 bits: words not filled
        graph, images = lowbit("resnet20", bits, code)
        out = tmp_path / f"export{bits[0]}"
        write_export(graph, out, images[:2].numpy(), np.zeros(2, dtype=np.int64), [str(i) for i in range(10)])
        assert (
            check_packed(graph, json.loads((out / "model.json").read_text())["tensor_files"], out)
            == len(graph.mac_nodes()) - 2
        )  # all but the first and the last layer
    c_only = tmp_path / "c"
    write_export(
        graph, c_only, images[:2].numpy(), np.zeros(2, dtype=np.int64), [str(i) for i in range(10)], formats=("c",)
    )
    assert not any("packed_hex" in t for t in json.loads((c_only / "model.json").read_text())["tensor_files"].values())


def check_packed(graph, files: dict, out) -> int:
    """The packed hex of every low-bit weight tensor decodes to its values, in the accelerator model's bytes."""
    import numpy as np

    from potq.accel.arch import load_arch
    from potq.accel.model import accel_report
    from potq.accel.workload import node_workload
    from potq.ir.codes import decode_weights, unpack_words

    dram = {
        r["node"]: r["bytes"]["dram"]["filter"] for r in accel_report(graph, load_arch("systolic-16"), "os")["layers"]
    }
    packed = 0
    for n in graph.mac_nodes():
        entry = files[f"{n.name}.weight"]
        assert (entry["w_bits"], entry["w_code"]) == (n.weight_bits, n.weight_code.value)
        if n.weight_bits == 8:
            assert "packed_hex" not in entry
            continue
        words = [int(line, 16) for line in (out / entry["packed_hex"]).read_text().split()]
        codes = unpack_words(np.array(words), n.weight_bits, n.tensors["weight"].numel())
        assert (decode_weights(codes, n.weight_code, n.weight_bits) == n.tensors["weight"].numpy().reshape(-1)).all()
        assert 4 * len(words) == entry["packed_bytes"] == node_workload(graph, n).bytes_of("filter") == dram[n.name]
        packed += 1
    return packed


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="no C compiler (CI installs gcc)")
def test_the_c_runtime_and_onnxruntime_compute_the_golden_integers_below_eight_bits():
    import numpy as np

    from potq.deploy.consumers import check_c, check_onnx

    pytest.importorskip("onnxruntime")
    for bits, code in [("4/4", "apot"), ("4/8", "pot"), ("2/8", "int")]:
        graph, images = lowbit("resnet20", bits, code, "half-even")
        c = check_c(graph, images[:4].numpy())
        assert (c["logit_mismatches"], c["class_mismatches"]) == (0, 0)
        o = check_onnx(graph, images.numpy(), np.zeros(len(images), dtype=np.int64))
        assert o["mismatches"] == 0 and o["compared_values"] > 0


@pytest.mark.parametrize(("bits", "code"), [("4/4", "int"), ("4/4", "apot"), ("3/8", "pot")])
def test_qat_below_eight_bits_ends_in_the_integer_model_exactly(bits, code):
    """A few straight-through steps, then the fake-quantized net (weight scales tracked, formats projected) and
    the integer graph lowered from it give the same codes at every value."""
    from potq.golden import IntegerModel
    from potq.quant.lower import min_weight_exponents, weight_scales_of
    from potq.quant.simulate import SimNet

    torch.manual_seed(1)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    settings = QuantSettings.parse("pot-channel", "ceil", "half-even", None, bits, code, True)
    fgraph = capture(random_bn_model("tiny", 0), (3, 32, 32), MEAN, STD)
    qgraph = lower(fgraph, calibrate(fgraph, normalize(images[:16], MEAN, STD), settings), settings)
    net = SimNet(fgraph, settings, qgraph.q, weight_scales_of(qgraph))
    net.track_weights, net.min_exponent = True, min_weight_exponents(qgraph, settings)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = normalize(images, MEAN, STD).float(), torch.randint(0, 10, (24,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    activations = {v: q for v, q in qgraph.q.items() if not q.accumulator}
    lowered = lower(net.float_graph(), activations, settings)
    fake, exact = {}, {}
    net(normalize(images, MEAN, STD), fake)
    IntegerModel(lowered).run(images, exact)
    for v in exact:
        assert torch.equal(exact[v].long(), fake[v].long()), v
    changed = [
        n
        for n, m in zip(lowered.mac_nodes(), qgraph.mac_nodes(), strict=True)
        if not torch.equal(n.tensors["weight"], m.tensors["weight"])
    ]
    assert changed  # the steps moved some weight across a level


def test_precision_json_is_stale_once_a_model_is_quantized_again(tiny_run, tmp_path):
    from potq.jobs.costs import price_run, priced_change

    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert main(["quantize", "--run", str(run), "--calib", "16", "--bits", "4/8", "--weights", "pot"]) == 0
    assert priced_change(run) is not None  # nothing priced yet
    price_run(run)
    assert priced_change(run) is None
    assert main(["quantize", "--run", str(run), "--calib", "24", "--bits", "4/8", "--weights", "pot"]) == 0
    assert priced_change(run) == "precision.json does not price today's pot-channel-w4a8-pot"


def test_an_unknown_accumulator_is_one_line_naming_the_field():
    import json

    from potq.accel.arch import parse_arch, preset_path
    from potq.errors import UserError

    raw = json.loads(preset_path("systolic-16-45nm").read_text())
    assert parse_arch(raw, "x").accumulator == "int32"  # the default: every preset but -sized
    with pytest.raises(UserError, match="field 'accumulator' must be one of int32, proven, got 'wide'"):
        parse_arch({**raw, "accumulator": "wide"}, "x")
