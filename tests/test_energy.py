import json

import pytest

from potq import energy
from potq.api import network_costs
from potq.cli import main
from potq.energy import Arith
from potq.models import build_model


def test_reference_worked_example_term_by_term():
    table = energy.load_table()
    cost = energy.linear_cost(128, 10, act_zero_point=128)
    assert cost.compute_pj(Arith.FP32, table) == pytest.approx(5888)
    assert cost.compute_pj(Arith.INT8_POT, table) == pytest.approx(422.8)
    terms = [(t.what, t.op, t.count) for t in cost.terms[Arith.INT8_POT]]
    assert terms == [
        ("subtract zero point", "int8_add", 128),
        ("input times weight", "int8_mult", 128),
        ("summation", "int32_add", 127),
        ("add bias", "int32_add", 1),
        ("power-of-two scale shift", "shift", 1),
        ("add zero point", "int8_add", 1),
    ]
    assert [(t.op, t.count) for t in cost.terms[Arith.FP32]] == [("fp32_mult", 128), ("fp32_add", 127), ("fp32_add", 1)]
    # potq's convention: zero point 0 after ReLU removes the zero-point additions
    assert energy.linear_cost(128, 10, 0).compute_pj(Arith.INT8_POT, table) == pytest.approx(384.1)


def test_linear_command_shows_every_term(capsys):
    assert main(["energy", "--linear", "128", "10", "--act-zero-point", "128"]) == 0
    out = capsys.readouterr().out
    assert "= 5,888 pJ" in out and "= 422.8 pJ" in out
    assert "128 x INT8 add 0.03 [subtract zero point]" in out and "1 x bit shift 0.01" in out
    assert main(["energy", "--linear", "128", "10"]) == 0
    out = capsys.readouterr().out
    assert "= 422.8 pJ" in out and "= 384.1 pJ" in out  # both conventions side by side


def test_network_counts_for_seed():
    costs = network_costs(build_model("seed"), (3, 32, 32))
    assert [c.type for c in costs] == ["Conv2d"] * 5 + ["Linear"] * 3
    assert costs[0].macs == 27 * 32 * 32 * 32 and costs[1].macs == 288 * 64 * 16 * 16
    assert sum(c.macs for c in costs) == 29_467_264
    subtracts = [any(t.what == "subtract zero point" for t in c.terms[Arith.INT8_POT]) for c in costs]
    assert subtracts == [True] + [False] * 7  # only the signed input has zero point 128
    assert not costs[-1].requant and all(c.requant for c in costs[:-1])
    r = energy.report(costs, energy.load_table(), "sram_1mb")
    table = energy.load_table()
    first = costs[0]
    assert r["layers"][0]["compute_pj"]["fp32"] == pytest.approx(first.outputs * (27 * 3.7 + 27 * 0.9))
    assert r["ratios"]["compute_fp32_over_int8_pot"] > 10
    assert r["total"]["compute_pj"]["int8-float"] > r["total"]["compute_pj"]["int8-pot"]
    assert r["total"]["memory_bytes"]["fp32"] > 3.9 * r["total"]["memory_bytes"]["int8-pot"]
    assert r["layers"][0]["memory_pj"]["fp32"] == pytest.approx(
        -(-first.memory_bytes(Arith.FP32) // 8) * table.memory["sram_1mb"]
    )


def test_energy_command_json_and_chart(tmp_path, capsys):
    png = tmp_path / "energy.png"
    assert main(["energy", "--model", "seed", "--json", "--out", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["layers"]) == 8 and png.read_bytes()[:4] == b"\x89PNG"


def test_custom_table(tmp_path, capsys):
    raw = json.loads((energy.resources.files("potq") / "energy_45nm.json").read_text())
    raw["compute"]["shift"] = 1.0
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    assert main(["energy", "--linear", "128", "10", "--act-zero-point", "0", "--table", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["zero_point_0"]["int8-pot"] == pytest.approx(10 * (25.6 + 12.7 + 0.1 + 1))


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"compute": 3}', "must be objects"),
        ("not json", "can't read it"),
    ],
)
def test_malformed_tables(tmp_path, capsys, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    assert main(["energy", "--table", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "3", True, -1])
def test_table_values_must_be_finite_numbers(tmp_path, capsys, value):
    raw = json.loads((energy.resources.files("potq") / "energy_45nm.json").read_text())
    raw["compute"]["shift"] = value
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    assert main(["energy", "--table", str(path)]) == 2
    assert "energy of shift must be a finite non-negative number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--linear", "-3", "10"], "must be positive"),
        (["--model", "alexnet"], "not a zoo model"),
        (["--memory", "l7-cache"], "not in the table"),
    ],
)
def test_energy_bad_input(args, message, capsys):
    assert main(["energy", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_table_missing_an_operation(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"compute": {"fp32_mult": 3.7}}))
    assert main(["energy", "--table", str(path)]) == 2
    assert "missing operation fp32_add" in capsys.readouterr().err


def test_chart_into_a_missing_folder(tmp_path, capsys):
    assert main(["energy", "--out", str(tmp_path / "nope" / "e.png")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
