"""Issue 32, item 4: a run's record (a JSON file potq wrote) that lacks a field its reader needs is one line,
exit 2, naming the file and the field; never a KeyError traceback (`potq compare`, the report)."""

import json
import shutil

import pytest

from potq.cli import main
from potq.errors import UserError
from potq.files import MissingField, read_json


def test_a_missing_field_names_the_file_and_its_place(tmp_path):
    path = tmp_path / "verify_x.json"
    path.write_text(json.dumps({"accumulators": [{"layer": "fc"}]}))
    record = read_json(path)
    with pytest.raises(UserError, match=r"verify_x.json: no field 'accumulators\[0\].bits'"):
        record["accumulators"][0]["bits"]
    with pytest.raises(KeyError):  # readers that take a missing key for "not potq's file" still catch it
        record["mismatches"]
    assert record.get("mismatches") is None and json.loads(json.dumps(record)) == json.loads(path.read_text())


def test_a_record_copies_as_a_dict_does(tmp_path):
    """dataclasses.asdict and copy rebuild a dict by its type (budget.Plan holds what plan.json read)."""
    import copy
    from dataclasses import asdict, dataclass

    @dataclass
    class Holder:
        reasons: dict

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"reasons": {"train": "why"}}))
    record = read_json(path)
    assert asdict(Holder(record["reasons"])) == {"reasons": {"train": "why"}}
    assert copy.deepcopy(record) == record and copy.copy(record)["reasons"]["train"] == "why"


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the trained tiny run, to plant broken records in."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def one_line_naming(capsys, path, field: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and f"no field '{field}'" in err, err


def test_compare_with_an_empty_quantized_record_is_one_line(run, capsys):
    planted = run / "quant_pot-channel.json"
    planted.write_text("{}\n")
    before = sorted(p.name for p in run.iterdir())
    assert main(["compare", "--run", str(run)]) == 2
    one_line_naming(capsys, planted, "label")
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    "name, content, field",
    [
        ("verify_pot-channel.json", {}, "mismatches"),
        ("quant_pot-channel.json", {}, "scheme"),
        ("metrics.json", {}, "epochs"),
        ("summary.json", {}, "layers"),
        ("energy.json", {}, "ratios"),
        ("accel.json", {}, "scheme"),
        ("accel.json", {"scheme": "pot-channel", "reports": [{}]}, "reports[0].total"),
        ("plan.json", {}, "throughput"),
        ("steps.json", {"train": {}}, "train.seconds"),
    ],
)
def test_the_report_names_a_record_missing_a_field(run, capsys, name, content, field):
    from potq.report import build_markdown

    (run / name).write_text(json.dumps(content))
    with pytest.raises(MissingField) as e:
        build_markdown(run)
    assert str(run / name) in str(e.value) and f"no field '{field}'" in str(e.value)


def test_the_reports_deployment_names_a_consumer_record_missing_a_field(run):
    """deploy_<label>.json whose onnx entry lacks its fields, beside an export of that label."""
    from potq.report import build_markdown
    from potq.runs.paths import EXPORT_DIR, deploy_json

    (run / EXPORT_DIR).mkdir()
    model = {"scheme": "pot-channel", "quantized_model": {"label": "pot-channel"}, "formats": ["hw"], "nodes": []}
    (run / EXPORT_DIR / "model.json").write_text(json.dumps(model))
    deploy_json(run, "pot-channel").write_text(json.dumps({"onnx": {}}))
    with pytest.raises(MissingField, match="no field 'onnx.mismatches'"):
        build_markdown(run)
