"""potq.budget: the duration parser, the planner on synthetic throughputs (nothing here is timed), the CLI's
bad values, and one small `potq run --budget` end to end with a fixed measurement."""

import json

import pytest

from potq import budget
from potq.budget import ESSENTIAL_SCHEMES, Plan, Throughput, parse_duration, plan
from potq.cli import main
from potq.errors import UserError

CIFAR = dict(train_total=50_000, test_total=10_000, deploy={"onnx", "c"})
SLOW = Throughput(train=120, evaluate=470, seconds=10)  # a loaded 2-core AVX2 machine, fp32
IDLE = Throughput(train=400, evaluate=1500, seconds=4)  # the same machine idle
AMX = Throughput(train=2600, evaluate=4000, seconds=2)  # a Xeon with AMX, bf16 autocast


@pytest.mark.parametrize(
    "text, seconds",
    [("3m", 180), ("90s", 90), ("1m30s", 90), ("10m", 600), ("0.5h", 1800), ("180", 180), (" 2M ", 120)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "3 minutes", "m", "-3m", "3m-", "1.m", "0", "0s", "0m0s", "9999h"])
def test_bad_durations_are_one_line(text):
    with pytest.raises(UserError, match="--budget") as e:
        parse_duration(text)
    assert "\n" not in str(e.value)


def predicted_total(p: Plan) -> float:
    return sum(p.predicted_s.values())


@pytest.mark.parametrize("tp", [IDLE, AMX], ids=["idle-avx2", "amx"])
@pytest.mark.parametrize("seconds", [180, 600])
def test_the_plan_fits_its_budget(tp, seconds):
    p = plan(tp, seconds, **CIFAR)
    assert predicted_total(p) <= seconds
    full = p.epochs == budget.MAX_EPOCHS and p.train_limit == 49_000 and p.test_limit is None
    assert predicted_total(p) >= 0.6 * seconds or full  # it uses the time, up to the recipe's full run
    assert p.schemes[: len(ESSENTIAL_SCHEMES)] == ESSENTIAL_SCHEMES == ("pot-channel",)
    assert p.epochs >= budget.MIN_EPOCHS and p.train_limit >= budget.MIN_TRAIN
    assert set(p.reasons) >= {"train", "schemes", "test_limit", "calib", "deploy"}


def test_a_faster_machine_gets_more_work():
    slow, idle, amx = (plan(tp, 180, **CIFAR) for tp in (SLOW, IDLE, AMX))
    passes = [p.epochs * p.train_limit for p in (slow, idle, amx)]
    assert passes[0] < passes[1] < passes[2]
    tests = [p.test_limit or CIFAR["test_total"] for p in (slow, idle, amx)]
    assert tests[0] <= tests[1] <= tests[2]
    assert amx.test_limit is None and len(amx.schemes) > len(ESSENTIAL_SCHEMES)  # the whole test set fits


def test_a_longer_budget_gets_more_work():
    short, long = plan(IDLE, 180, **CIFAR), plan(IDLE, 900, **CIFAR)
    assert long.epochs * long.train_limit > short.epochs * short.train_limit
    assert (long.test_limit or 10_000) >= (short.test_limit or 10_000)


def test_a_budget_too_small_says_so():
    p = plan(SLOW, 30, **CIFAR)
    assert p.epochs * p.train_limit == budget.SUBSET_EPOCHS * budget.MIN_TRAIN  # the smallest plan
    assert "exceeded" in p.reasons["train"]
    assert p.test_limit == budget.MIN_TEST and p.calib == budget.MIN_CALIB


def test_small_data_bounds_every_size():
    p = plan(AMX, 600, train_total=360, test_total=180, deploy=set())
    assert p.val_size == 36 and p.train_limit == 324 and p.test_limit is None
    assert p.epochs == budget.MAX_EPOCHS


@pytest.mark.parametrize("train_total, test_total", [(42, 21), (150, 60)])
@pytest.mark.parametrize("tp", [SLOW, IDLE, AMX])
def test_every_count_stays_within_the_data(tp, train_total, test_total):
    """Folders of 40 and 150 training images (issue 31): calibration within the images trained on, the vectors
    and the C and TVM checks within the test images evaluated, the printed reasons saying the same."""
    p = plan(tp, 60, train_total=train_total, test_total=test_total, deploy={"onnx", "c", "tvm"})
    test = p.test_limit or test_total
    assert p.val_size + p.train_limit <= train_total and p.calib <= p.train_limit
    assert max(p.vectors, p.c_vectors, p.tvm_images) <= test
    text = "\n".join(p.lines())
    assert f"{p.calib} calibration images" in text and f"C runtime on {p.c_vectors} images" in text


def test_the_plan_survives_json():
    p = plan(IDLE, 180, **CIFAR)
    assert Plan.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_the_printed_plan_names_each_choice():
    text = "\n".join(plan(IDLE, 180, **CIFAR).lines())
    assert "400 training and 1500 evaluation images/s" in text
    for word in ("epochs of", "test images", "calibration images", "pot-channel", "C runtime"):
        assert word in text


def test_measure_gives_throughputs():
    from potq.recipes import RECIPES

    tp = budget.measure("tiny", (3, 8, 8), 3, RECIPES["fast"], min_seconds=0.0)
    assert tp.train > 0 and tp.evaluate > 0 and tp.seconds > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "0"], "--budget '0': the budget must be more than 0 seconds"),
        (["--budget", "abc"], "--budget 'abc': not a duration"),
        (["--quick", "--budget", "5m"], "--quick is --budget 3m"),
        (["--quick", "--epochs", "3"], "--epochs: --quick sizes the run itself"),
        (["--budget", "2m", "--calib", "100"], "--calib: --budget sizes the run itself"),
        (["--budget", "2m", "--schemes", "pot-channel"], "--schemes: --budget sizes"),
        (["--quick", "--qat", "1"], "--qat: --quick sizes"),
    ],
)
def test_bad_budget_options_are_one_line(tmp_path, capsys, extra, message):
    assert main(["run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--test-limit", "0"], "--test-limit must be at least 1"), (["--schemes", "pot-tensor"], "must include")],
)
def test_bad_sizes_are_one_line(learnable_data, tmp_path, capsys, extra, message):
    assert main(["run", "--data", str(learnable_data), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_run_with_a_budget(learnable_data, tmp_path, monkeypatch, capsys):
    """The plan from a fixed measurement sizes the run; it is printed, saved, applied, reused on resume."""
    monkeypatch.setattr(budget, "measure", lambda *a, **k: Throughput(train=50, evaluate=2000, seconds=1.5))
    out = tmp_path / "run"
    args = ["run", "--data", str(learnable_data), "--out", str(out), "--model", "tiny", "--budget", "1m"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "plan.json").read_text())
    assert "budget 60 s: measured 50 training and 2000 evaluation images/s" in printed
    steps = json.loads((out / "steps.json").read_text())
    assert list(steps)[:2] == ["plan", "summary"] and steps["plan"]["seconds"] == 1.5
    options = json.loads((out / "run.json").read_text())
    assert options["recipe"] == "fast" and options["model"] == "tiny" and options["epochs"] == saved["epochs"]
    assert options["calib"] == saved["calib"] and options["schemes"] == saved["schemes"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == saved["epochs"] and metrics["train_images"] == saved["train_limit"]
    assert {p.name for p in out.glob("quant_*.json")} == {f"quant_{s}.json" for s in saved["schemes"]}
    assert "budget" in (out / "report.md").read_text().lower()
    # a second call takes the saved plan (no new measurement) and redoes nothing
    monkeypatch.setattr(budget, "measure", lambda *a, **k: pytest.fail("measured again"))
    assert main(args) == 0
    assert "the plan" in capsys.readouterr().out


def test_a_test_subset_spans_the_classes():
    import numpy as np

    from potq.data import test_subset

    y = np.repeat(np.arange(10), 100)  # class-sorted, as an image folder's test split is
    x, sub_y = test_subset(np.arange(1000), y, 50)
    assert np.bincount(sub_y).tolist() == [5] * 10 and (y[x] == sub_y).all()
    assert len(test_subset(np.arange(1000), y, None)[1]) == len(test_subset(np.arange(1000), y, 5000)[1]) == 1000


def test_test_limit_is_applied(tiny_run, tmp_path):
    """quantize and verify on the first N test images (the FP32 accuracy beside it on the same images)."""
    import shutil

    from potq.jobs.quantize import quantize_run
    from potq.jobs.verify import verify_run
    from potq.quant.rules import QuantSettings

    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # a private copy: the session's run stays unverified
    r = quantize_run(tiny_run, QuantSettings("pot-channel"), calib=30, test_limit=50)
    assert r["test_images"] == 50
    assert verify_run(tiny_run, "pot-channel", test_limit=50)["images"] == 50
    assert quantize_run(tiny_run, QuantSettings("pot-channel"), calib=30)["test_images"] == 180


def test_a_foreign_plan_is_one_line(learnable_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "plan.json").write_text('{"budget_s": 180}')
    assert main(["run", "--data", str(learnable_data), "--out", str(out), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "plan.json is not a plan potq wrote" in err and err.count("\n") == 1
