import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from potq import train as potq_train
from potq.cli import main
from potq.train import TrainConfig, load_trained, train


def _history(path):
    with open(path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_train_writes_every_artifact(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"history.csv", "curves.png", "metrics.json", "weights.pt", "checkpoint.pt", "config.json"} <= names
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert {"params", "test_loss", "test_accuracy", "model_size_mb", "epochs", "seconds"} <= set(m)
    assert 0 <= m["test_accuracy"] <= 1 and m["epochs"] == 2
    assert m["model_size_mb"] == pytest.approx((tiny_run / "weights.pt").stat().st_size / 1e6)
    rows = _history(tiny_run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert (tiny_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_model_learns_the_colour_classes(tiny_run):
    # the three classes differ by mean colour: a working trainer separates them
    assert json.loads((tiny_run / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_reference_recipe_values():
    r = potq_train.RECIPES["seed"]
    assert (r.epochs, r.lr, r.momentum, r.weight_decay, r.eta_min, r.crop_pad, r.flip) == (
        50,
        0.1,
        0.9,
        5e-4,
        1e-6,
        4,
        True,
    )


def test_saved_weights_reload_for_quantization(tiny_run):
    model, cfg = load_trained(tiny_run)
    assert cfg.model == "tiny" and cfg.classes == ["cat", "dog", "frog"]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(tmp_path, learnable_data, monkeypatch):
    cfg = dict(model="tiny", data=str(learnable_data), epochs=3, val_size=60, batch_size=64, seed=5)
    train(TrainConfig(**cfg), tmp_path / "straight")

    real_epoch = potq_train.train_epoch
    calls = {"n": 0}

    def dying_epoch(model, opt, loss_fn, x, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # die part-way through the third epoch, after some optimizer steps
            real_epoch(model, opt, loss_fn, x[:64], *args)
            raise KeyboardInterrupt
        return real_epoch(model, opt, loss_fn, x, *args)

    monkeypatch.setattr(potq_train, "train_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), tmp_path / "killed")
    assert len(_history(tmp_path / "killed")) == 2
    monkeypatch.setattr(potq_train, "train_epoch", real_epoch)
    train(TrainConfig(**cfg), tmp_path / "killed", resume=tmp_path / "killed" / "checkpoint.pt")
    assert _history(tmp_path / "killed") == _history(tmp_path / "straight")
    a = torch.load(tmp_path / "killed" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from potq.files import save_torch

    target = tmp_path / "checkpoint.pt"
    save_torch({"a": torch.ones(3)}, target)

    def broken_write(path, data):  # killed half-way through the file
        open(path, "wb").write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(KeyboardInterrupt):
        save_torch({"a": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _cli_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "-1"], "--epochs must be a positive integer"),
        (["--recipe", "adam-magic"], "unknown recipe"),
        (["--model", "vgg99"], "not a zoo model"),
        (["--train-limit", "0"], "--train-limit"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--lr", "inf"], "--lr must be a positive finite number"),
        (["--lr", "nan"], "--lr must be a positive finite number"),
        (["--precision", "fp16"], "--precision must be one of fp32, bf16, auto"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, learnable_data, extra, message, capsys):
    out = tmp_path / "out"
    code, err = _cli_error(["train", "--data", str(learnable_data), "--out", str(out), *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_resume_with_another_models_checkpoint_is_refused(tmp_path, tiny_run, learnable_data, capsys):
    out = tmp_path / "other"
    code, err = _cli_error(
        [
            "train",
            "--model",
            "seed-slim",
            "--data",
            str(learnable_data),
            "--out",
            str(out),
            "--val-size",
            "60",
            "--resume",
            str(tiny_run / "checkpoint.pt"),
        ],
        capsys,
    )
    assert code == 2 and "from another run" in err and err.count("\n") == 1
    assert not out.exists()


def resume_args(data, out) -> list[str]:
    """`potq train --resume` of the tiny_run fixture's recipe (batch 32, lr 0.02) into `out`."""
    return ["train", "--model", "tiny", "--data", str(data), "--out", str(out), "--val-size", "60",
            "--batch-size", "32", "--lr", "0.02", "--resume"]  # fmt: skip


def test_resume_with_more_epochs_is_refused(tmp_path, tiny_run, learnable_data, capsys):
    """The cosine schedule follows the epoch count it started with: a resume keeps it, so it must match."""
    import shutil

    out = tmp_path / "longer"
    shutil.copytree(tiny_run, out)
    code, err = _cli_error([*resume_args(learnable_data, out), "--epochs", "5"], capsys)
    assert code == 2 and "--epochs 2, not 5" in err and err.count("\n") == 1


def test_existing_run_is_not_overwritten_without_resume(tiny_run, learnable_data, capsys):
    before = (tiny_run / "checkpoint.pt").read_bytes()
    code, err = _cli_error(
        ["train", "--model", "tiny", "--data", str(learnable_data), "--out", str(tiny_run), "--val-size", "60"], capsys
    )
    assert code == 2 and "already holds a run" in err
    assert (tiny_run / "checkpoint.pt").read_bytes() == before


def test_two_process_torchrun(tmp_path, learnable_data):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "potq",
        "train",
        "--model",
        "tiny",
        "--data",
        str(learnable_data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--val-size",
        "60",
        "--batch-size",
        "32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["train_images"] == 300
    assert len(_history(out)) == 1


def test_resume_from_a_checkpoint_that_lacks_fields(tmp_path, tiny_run, learnable_data, capsys):
    import shutil

    import torch

    out = tmp_path / "broken"
    shutil.copytree(tiny_run, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, out / "checkpoint.pt")
    code, err = _cli_error([*resume_args(learnable_data, out), "--epochs", "2"], capsys)
    assert code == 2 and "lacks or mismatches a field" in err and err.count("\n") == 1


def test_a_full_disk_names_the_users_file(tmp_path, monkeypatch):
    import errno

    import torch

    from potq.errors import UserError
    from potq.files import save_torch

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(
        UserError, match=r"checkpoint\.pt: can't write it \(No space left on device, [0-9,]+ bytes needed\)"
    ) as e:
        save_torch({"w": torch.ones(1000)}, tmp_path / "checkpoint.pt")
    assert ".checkpoint.pt." not in str(e.value) and list(tmp_path.iterdir()) == []


def test_files_left_by_a_killed_process_are_cleaned_up(tmp_path):
    import subprocess

    from potq.files import save_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".metrics.json.{dead.pid}.abc123"
    stale.write_text("half")
    live = tmp_path / f".metrics.json.{os.getpid() + 0}.x"  # this process: alive, kept
    live.write_text("mine")
    save_json({"a": 1}, tmp_path / "metrics.json")
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", live.name])


def test_fast_recipe_schedule_warms_up_then_decays_linearly_per_step():
    from dataclasses import replace

    from potq.train import make_optimizer

    recipe = replace(potq_train.RECIPES["fast"], epochs=10)
    opt, sched = make_optimizer([torch.nn.Parameter(torch.zeros(1))], recipe, steps_per_epoch=100)
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 * recipe.lr)  # warm-up from a tenth
    assert max(lrs) == pytest.approx(recipe.lr) and lrs.index(max(lrs)) == 100  # 10% of all steps
    assert lrs[550] == pytest.approx(recipe.lr / 2) and lrs[-1] == pytest.approx(recipe.lr / 900)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))


def test_weight_average_recipe_trains_and_resumes(tmp_path, learnable_data, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(potq_train.RECIPES, "fast-ema", replace(potq_train.RECIPES["fast"], ema_decay=0.9))
    cfg = dict(model="tiny", data=str(learnable_data), recipe="fast-ema", epochs=2, val_size=60, batch_size=64)
    m = train(TrainConfig(**cfg), tmp_path / "a")
    assert m["test_accuracy"] > 0.5
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert "ema" in ckpt and ckpt["config"]["recipe"] == "fast-ema"


def test_precision_choice():
    cpu = torch.device("cpu")
    assert potq_train.autocast_bf16("bf16", cpu) and not potq_train.autocast_bf16("fp32", cpu)
    assert potq_train.autocast_bf16("auto", cpu) == bool(torch.cpu._is_amx_tile_supported())
    assert potq_train.RECIPES["seed"].precision == "fp32"  # the reference report's arithmetic


def test_bf16_training_keeps_float32_weights_and_learns(tmp_path, learnable_data):
    cfg = TrainConfig(model="tiny", data=str(learnable_data), epochs=2, val_size=60, batch_size=32, lr=0.02)
    cfg.precision = "bf16"
    m = train(cfg, tmp_path / "run")
    assert m["training_arithmetic"] == "bf16 autocast" and m["test_accuracy"] > 0.9
    weights = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)
    assert all(t.dtype in (torch.float32, torch.int64) for t in weights.values())


def test_norm_and_bias_parameters_can_skip_weight_decay():
    from dataclasses import replace

    from potq.models import build_model

    model = build_model("tiny")
    decay, no_decay = potq_train.param_groups(model, replace(potq_train.RECIPES["fast"], decay_norm_and_bias=False))
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert {id(p) for p in decay["params"]} == weights and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_whitened_first_convolution_decorrelates_its_patches():
    from potq.models import build_model

    torch.manual_seed(0)
    mix = torch.randn(3, 3)  # correlated colour channels
    x = torch.einsum("ij,njhw->nihw", mix, torch.randn(64, 3, 16, 16))
    model = build_model("seed", (3, 16, 16))
    potq_train.whiten_first_conv(model, x, eps=0.0)
    conv = model.features[0]
    y = torch.nn.functional.conv2d(x, conv.weight[:27], None, 1, 1)  # every patch, as the estimate saw them
    cov = torch.cov(y.transpose(0, 1).reshape(27, -1))
    assert torch.allclose(cov, torch.eye(27), atol=1e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed", str(2**64)], "--seed must be an integer from 0 to 4294967295"),
        (["--seed", str(2**32)], "--seed must be an integer from 0 to 4294967295"),
        (["--lr", "1e308"], "--lr must be a positive finite number of at most"),
        (["--lr=-inf"], "--lr must be a positive finite number"),
    ],
)
def test_absurd_numbers_are_refused_before_anything_is_written(tmp_path, learnable_data, extra, message, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder of the user's: it stays empty
    args = [
        "train",
        "--model",
        "tiny",
        "--data",
        str(learnable_data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--val-size",
        "60",
        *extra,
    ]
    code, err = _cli_error(args, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("potq: error:")
    assert list(out.iterdir()) == []
