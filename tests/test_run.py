"""`potq run` end to end on real images, resume after an interruption, and step failures."""

import importlib.util
import json
import re

import pytest

from potq import workflow
from potq.cli import main

SECTIONS = [
    "## 1. Model architecture",
    "## 2. Training",
    "### Overfitting",
    "## 3. Training configuration",
    "## 4. Power-of-two quantization",
    "### Scheme comparison",
    "### Integer golden model",
    "## 5. Energy",
    "### Worked example: Linear 128 -> 10",
    "## 7. Accelerator",
    "### eyeriss, dataflow rs",
    "### systolic-16, dataflow os",
]


@pytest.fixture(scope="module")
def full_run(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("potq-run") / "run"
    args = [
        "run",
        "--data",
        str(real_data),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--epochs",
        "2",
        "--train-limit",
        "3000",
        "--val-size",
        "1000",
        "--qat",
        "1",
        "--calib",
        "200",
        "--vectors",
        "3",
    ]
    assert main(args) == 0
    return out, args


def test_every_artifact_is_there(full_run):
    out, _ = full_run
    for name in [
        "summary.json",
        "history.csv",
        "curves.png",
        "metrics.json",
        "weights.pt",
        "compare.md",
        "compare.png",
        "energy.json",
        "energy.png",
        "accel.json",
        "accel_roofline.png",
        "accel_energy.png",
        "report.md",
        "report.html",
        "steps.json",
        "export/model.json",
        "export/model.h",
        "export/weights.npz",
        "export/vectors.npz",
        "export/model.onnx",
        "export/potq_model.c",
        "deploy_pot-channel-qat.json",
    ]:
        assert (out / name).exists(), name
    for scheme in workflow.PTQ_SCHEMES + ("pot-channel-qat",):
        assert (out / f"quant_{scheme}.json").exists()
    for scheme in ("pot-seed", "pot-tensor", "pot-channel", "pot-channel-qat"):
        v = json.loads((out / f"verify_{scheme}.json").read_text())
        assert v["mismatches"] == 0 and v["images"] == 10000
        assert v["golden_accuracy"] == v["simulated_accuracy"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_images"] == 3000 and m["test_images"] == 10000
    assert m["test_accuracy"] > 0.2  # real CIFAR-10 images: well above chance after two short epochs


def test_report_has_every_section_with_numbers(full_run):
    out, _ = full_run
    md = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    assert "measured on the JPEG copy" in md
    assert "### Deployment" in md and "Formats exported: hw, c, onnx." in md
    assert "`export/` holds the quantized model `pot-channel-qat` (scheme pot-channel" in md  # which model
    # the default rule rounds half to even, as onnxruntime and TVM do: every consumer exact (issue 31)
    assert re.search(r"- ONNX \(onnxruntime, QDQ opset 13\): 0 of [\d,]+ values differ", md)
    assert "rounding half-even" in md and "causes:" not in md
    if importlib.util.find_spec("tvm") is not None:  # potq[tvm]: the deploy step checks TVM too
        assert re.search(r"- TVM \S+ \(Relax ONNX frontend, llvm\): 0 of [\d,]+ values differ", md)
    assert re.search(r"- C99 runtime .*: 0 mismatching logits and 0 differing classes in 200 test images", md)
    assert "= 5,888 pJ" in md and "= 422.8 pJ" in md
    # time read three ways (issue 30): the serial sum, double-buffered levels, potq's own RTL
    timings = json.loads((out / "accel.json").read_text())["timings"]
    serial, overlapped = timings["systolic-16 (os), none"], timings["systolic-16 (os), double-buffered"]
    assert overlapped["latency"] < serial["latency"] and serial["stall"] == 0 and timings["potq-rtl (os)"]["latency"]
    assert "### Time: serial, overlapped, and potq's RTL" in md
    assert f"| potq-rtl (os) | {timings['potq-rtl (os)']['latency']:,} | 0 |" in md
    assert re.search(r"Validation loss is lowest at epoch \d", md)
    assert "| Scheduler | `CosineAnnealingLR(T_max=2, eta_min=1e-06)`, per epoch |" in md
    assert "| Training arithmetic | fp32 (weights and evaluation float32) |" in md
    assert "| pot-channel-qat |" in md and "| FP32 |" in md
    acc = md[md.index("## 7. Accelerator") :]
    assert re.search(r"\| features\.0 \| conv \| [\d,]+ \| [\d,]+ \| [\d.]+% \| (compute|memory|balanced) \|", acc)
    assert "| features.3 | maxpool | 0 | 0 | 0.0% | fused into features.0 |" in acc  # eyeriss rs: the lab's block
    assert acc.count("Share of energy by level: compute ") == 2 and "![Roofline](accel_roofline.png)" in acc
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "<table>" in html and "@media print" in html  # + precision.png
    assert 'src="curves.png"' not in html  # self-contained


def test_second_call_redoes_nothing(full_run, capsys):
    out, args = full_run
    before = (out / "weights.pt").stat().st_mtime_ns
    assert main(args) == 0
    text = capsys.readouterr().out
    for step in ("summary", "train", "quantize", "verify", "energy", "accel", "export"):
        assert f"{step}: already done" in text
    assert (out / "weights.pt").stat().st_mtime_ns == before


def small_run_args(data, out, *extra: str) -> list[str]:
    return [
        "run",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--epochs",
        "1",
        "--val-size",
        "60",
        "--calib",
        "30",
        *extra,
    ]


def test_interrupted_run_resumes(learnable_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = small_run_args(learnable_data, out, "--vectors", "2")
    from potq.jobs import quantize as pipeline

    real = pipeline.quantize_run
    calls = {"n": 0}

    def dies_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "quantize_run", dies_on_third)
    assert main(args) == 130
    assert (out / "metrics.json").exists() and len(list(out.glob("quant_*.json"))) == 2
    monkeypatch.setattr(pipeline, "quantize_run", real)
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "train: already done" in text and "[3/9] quantize ..." in text
    assert len(list(out.glob("quant_*.json"))) == 5 and (out / "report.html").exists()


def test_failing_step_names_itself_and_keeps_earlier_work(learnable_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = small_run_args(learnable_data, out)
    from potq import energy

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(energy, "graph_costs", broken)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.endswith("potq: step energy failed: RuntimeError: disk on fire\n")
    assert (out / "metrics.json").exists() and (out / "verify_pot-channel.json").exists()
    assert not (out / "report.md").exists()


def test_run_bad_input(tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--memory", "tape"], "--memory 'tape'"),
        (["--qat-lr", "-1"], "--qat-lr"),
        (["--vectors", "0"], "--vectors"),
        # bounded by the data (360 training images, 60 held out; 180 test images): checked before the first step
        (["--calib", "301"], "--calib 301 is more than the 300 training images"),
        (["--calib", "101", "--train-limit", "100"], "--calib 101 is more than the 100 training images"),
        (["--vectors", "181"], "--vectors 181 is more than the 180 test images"),
        (["--val-size", "360"], "--val-size must be in [0, 359]"),
        (["--cache", ""], "--cache: must name a folder"),
        (["--mixed", "0"], "--budget 0.0: give a positive fraction"),
        (["--mixed", "0.5", "--qat-scheme", "pot-tensor", "--quick"], "--mixed: --quick does not size"),
    ],
)
def test_options_of_later_steps_are_checked_before_training(learnable_data, tmp_path, capsys, bad, message):
    assert main([*small_run_args(learnable_data, tmp_path / "o"), *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_run_of_a_user_residual_net(learnable_data, tmp_path, capsys):
    """`potq run --model file.py:factory`: the whole path on a residual net with concat and average pooling;
    later commands read the model from the run folder."""
    from tests.test_graph import EXAMPLE

    out = tmp_path / "run"
    args = small_run_args(learnable_data, out, "--vectors", "2", "--qat", "1")
    args[args.index("tiny")] = EXAMPLE
    assert main(args) == 0
    for scheme in ("pot-seed", "pot-tensor", "pot-channel", "pot-channel-qat"):
        v = json.loads((out / f"verify_{scheme}.json").read_text())
        assert v["mismatches"] == 0 and v["nodes"] == 14
    md = (out / "report.md").read_text()
    assert "user_resnet.py:build" in md and "| Add |" in md and "| AvgPool |" in md
    assert "block2.add" in md and "## 6. Export" in md and "BatchNorm is folded" in md
    model = json.loads((out / "export" / "model.json").read_text())
    assert {n["op"] for n in model["nodes"]} >= {"add", "concat", "avgpool", "conv", "linear"}
    capsys.readouterr()
    assert main(["verify", "--run", str(out), "--scheme", "pot-tensor"]) == 0  # no --model needed
    assert main(["quantize", "--run", str(out), "--model", "resnet20"]) == 2
    assert "leave --model out" in capsys.readouterr().err
    assert main(["energy", "--run", str(out), "--scheme", "pot-channel"]) == 0
    assert "| block1.add |" in capsys.readouterr().out


def test_force_never_deletes_the_users_files_in_export(learnable_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = small_run_args(learnable_data, out, "--vectors", "1")
    assert main(args) == 0
    (out / "export" / "my-testbench.v").write_text("module tb; endmodule\n")
    capsys.readouterr()
    assert main([*args, "--force"]) == 2
    err = capsys.readouterr().err
    assert "my-testbench.v" in err and err.count("\n") == 1
    assert (out / "export" / "my-testbench.v").exists() and (out / "weights.pt").exists()


def test_a_changed_question_is_not_answered_with_a_stale_run(learnable_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = small_run_args(learnable_data, out, "--vectors", "1")
    assert main(args) == 0
    before = (out / "weights.pt").stat().st_mtime_ns
    capsys.readouterr()
    for changed, flag in (
        (["--epochs", "2"], "--epochs"),
        (["--seed", "3"], "--seed"),
        (["--calib", "20"], "--calib"),
        (["--qat", "1"], "--qat"),
    ):
        assert main([*args, *changed]) == 2
        err = capsys.readouterr().err
        assert f"made with {flag} " in err and "--force" in err and err.count("\n") == 1
    assert (out / "weights.pt").stat().st_mtime_ns == before


def test_report_html_never_runs_what_names_carry():
    from potq.report import to_html

    page = to_html("# potq `<script>x</script>` on <img src=x onerror=alert(1)>\n\n[a](javascript:alert(1))")
    assert "<script" not in page and "<img" not in page and "href" not in page
    assert "&lt;script&gt;" in page


def test_a_second_process_on_the_same_folder_stops(learnable_data, tmp_path, capsys):
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".potq.lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"pid 4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)  # another potq holds the folder
    try:
        assert main(small_run_args(learnable_data, out)) == 2
        err = capsys.readouterr().err
        assert "in use by another potq process (pid 4242)" in err and err.count("\n") == 1
        assert not (out / "config.json").exists()
    finally:
        os.close(fd)


def test_a_first_run_stopped_at_once_leaves_no_folder(learnable_data, tmp_path, monkeypatch, capsys):
    from potq import summary

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "summarize", stopped)
    out = tmp_path / "new"
    assert main(small_run_args(learnable_data, out)) == 130
    assert capsys.readouterr().err == "potq: interrupted\n" and not out.exists()


def test_an_unsupported_model_stops_before_training(learnable_data, tmp_path, capsys):
    net = tmp_path / "net.py"
    net.write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n        self.fc = nn.Linear(4 * 30 * 30, 3)\n\n"
        "    def forward(self, x):\n        return self.fc(torch.flatten(torch.tanh(self.conv(x)), 1))\n\n\n"
        "def build(in_shape, classes):\n    return Net()\n"
    )
    args = small_run_args(learnable_data, tmp_path / "o")
    args[args.index("tiny")] = f"{net}:build"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "step summary failed: model node tanh (net.py:12): function torch.tanh()" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_report_names_the_fast_recipes_schedule():
    from dataclasses import asdict

    from potq.recipes import RECIPES
    from potq.report import schedule_text

    text = schedule_text(asdict(RECIPES["fast"]))
    assert text.startswith("linear warm-up over the first 10% of the steps from 0.1 x lr") and "Cosine" not in text


def _limited_file_size(limit: int):
    """A full disk without root: files may grow to `limit` bytes; a write beyond fails with EFBIG, as one on a
    full disk fails with ENOSPC (SIGXFSZ ignored, so the write returns the error instead of killing)."""
    import resource
    import signal

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


def _potq(args: list[str], limit: int):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "potq", *args], capture_output=True, text=True, preexec_fn=_limited_file_size(limit)
    )


def test_quantize_on_a_full_disk_is_one_line_and_writes_nothing(tiny_run, tmp_path):
    """potq 0.3: torch's own error (its writer's RuntimeError) and exit 1."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    r = _potq(["quantize", "--run", str(run), "--scheme", "pot-tensor", "--calib", "20"], 2048)
    *warnings, last = r.stderr.strip().splitlines()  # the data cache can't be written either: a warning
    assert r.returncode == 2 and all(w.startswith("potq: warning: data cache") for w in warnings), r.stderr
    assert last.startswith("potq: error:")
    assert re.search(r"quant_pot-tensor\.pt: can't write it \(File too large, [0-9,]+ bytes needed\)", last)
    assert sorted(p.name for p in run.iterdir()) == before  # no half-written file, no temporary one


def test_run_on_a_full_disk_is_one_line_exit_2(learnable_data, tmp_path):
    """potq 0.3: inside `potq run`, torch's message and exit 1."""
    out = tmp_path / "run"
    r = _potq(small_run_args(learnable_data, out), 64 * 1024)
    last = r.stderr.strip().splitlines()[-1]  # after the progress bars
    assert r.returncode == 2 and "Traceback" not in r.stderr and last.startswith("potq: error: step train failed")
    assert re.search(r"checkpoint\.pt: can't write it \(File too large, [0-9,]+ bytes needed\)", last)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".potq.lock"]


def test_export_on_a_full_disk_is_one_line_and_keeps_the_old_export(tiny_run, tmp_path):
    """numpy's and zipfile's writers raise an OSError that names no file: potq names the export."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert main(["quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "20"]) == 0
    out = tmp_path / "exp"
    r = _potq(["export", "--run", str(run), "--scheme", "pot-channel", "--out", str(out)], 4096)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert last.startswith(f"potq: error: --out {out}: can't write the export (File too large"), last
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left


def test_run_mixed_searches_both_methods_and_deploys_potqs_choice(learnable_data, tmp_path, capsys):
    """`potq run --mixed F`: potq's search and HAWQ-V3's at F of the all-INT8 model's energy, both models
    quantized and verified, potq's the headline that energy, accel, export and deploy take; the report lists
    both searches and the front. HAWQ-V3's cheapest lies above F here: it is searched at its cheapest."""
    from potq.workflow import RunOptions, mixed_label

    out = tmp_path / "run"
    args = small_run_args(learnable_data, out, "--schemes", "pot-channel", "--vectors", "2", "--mixed", "0.7")
    assert main(args) == 0
    o = RunOptions(data=str(learnable_data), out=out, mixed=0.7)
    potq, hawq = mixed_label(o, "potq"), mixed_label(o, "hawq")
    assert potq and hawq and potq != hawq and o.headline == potq
    for label in (potq, hawq):
        assert json.loads((out / f"verify_{label}.json").read_text())["mismatches"] == 0
    assert json.loads((out / "export" / "model.json").read_text())["quantized_model"]["label"] == potq
    deploy = json.loads((out / f"deploy_{potq}.json").read_text())
    assert deploy["c"]["logit_mismatches"] == 0 and all(deploy[k]["unexplained"] == 0 for k in ("onnx", "tvm"))
    assert "rtl" not in deploy or deploy["rtl"]["mismatches"] == 0  # where Verilator is installed
    priced = json.loads((out / "precision.json").read_text())
    assert priced[potq]["energy_pj"] <= 0.7 * priced["pot-channel"]["energy_pj"] * 1.001
    assert priced[hawq]["energy_pj"] > 0.7 * priced["pot-channel"]["energy_pj"]  # its cheapest is above 0.7
    md = (out / "report.md").read_text()
    assert "### Mixed precision: the searches" in md and "| potq | energy | 0.7 |" in md
    assert re.search(r"\| hawq \| energy \| 0.7 \(its cheapest: 0\.\d+\) \|", md)
    assert f"| {potq} | mixed | per node |" in md and "| Latency (cycles) |" in md
    capsys.readouterr()
    assert main(args) == 0  # resumed: nothing redone
    assert "mixed: already done" in capsys.readouterr().out
    args[args.index("0.7")] = "0.01"
    assert main(args) == 2  # a question this folder does not answer
    assert "--mixed 0.7, not 0.01" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "low")]) == 2  # below potq's cheapest: one line, after training
    err = capsys.readouterr().err
    assert "step mixed failed: --budget 0.01: below the cheapest assignment" in err and err.count("\n") == 1
