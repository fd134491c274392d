"""A finished run answers for what is in it now (issue 21): every artifact records the fingerprints of its
inputs, `potq run` redoes a stale step or refuses a stale training with one line, and the commands that read
a quantized model refuse one whose inputs changed. Each test here fails on potq 0.3, where the second
`potq run` said "already done" to every step whatever had changed."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from potq import workflow
from potq.cli import main
from tests.test_graph import EXAMPLE
from tests.test_run import small_run_args


@pytest.fixture(autouse=True)
def _no_deploy(monkeypatch):
    """The consumers' checks (onnxruntime, TVM, C, Verilator) are test_run's and test_deploy's; here they
    would only cost minutes."""
    monkeypatch.setattr(workflow, "_deploy_step", lambda o: None)


@pytest.fixture(scope="module")
def finished(learnable_data, tmp_path_factory):
    """A finished run of the README's user net (a model file to edit) on its own copy of the data."""
    root = tmp_path_factory.mktemp("provenance")
    data = shutil.copytree(learnable_data, root / "data")
    model = root / "user_resnet.py"
    shutil.copy(EXAMPLE.split(":")[0], model)
    args = small_run_args(data, root / "run", "--vectors", "2")
    args[args.index("tiny")] = f"{model}:build"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(workflow, "_deploy_step", lambda o: None)
        assert main(args) == 0
    return root


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run, its data and its model file, at the same relative places: the
    records name absolute paths, which are rewritten (what a run compares is content, never a path)."""
    root = shutil.copytree(finished, tmp_path / "root")
    for name in ("run.json", "config.json"):
        path = root / "run" / name
        text = path.read_text().replace(str(finished), str(root))
        path.write_text(text)
    args = small_run_args(root / "data", root / "run", "--vectors", "2")
    args[args.index("tiny")] = f"{root / 'user_resnet.py'}:build"
    return root, args


def rerun(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_an_unchanged_run_redoes_nothing(run, capsys):
    root, args = run
    status, out, _ = rerun(args, capsys)
    assert status == 0
    for step in ("summary", "train", "quantize", "verify", "energy", "accel", "export"):
        assert f"{step}: already done" in out


def test_replaced_weights_stop_the_run_with_one_line(run, capsys, tiny_run):
    root, args = run
    shutil.copy(tiny_run / "weights.pt", root / "run" / "weights.pt")  # another run's weights
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1
    assert "weights.pt is not the file that training wrote" in err and "--force" in err


def _add_class(data) -> None:
    for split in ("train", "test"):
        d = data / split / "zebra"
        d.mkdir()
        for i in range(4):
            Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(d / f"{i}.png")


def _replace_an_image(data) -> None:
    """Other data at the same path, with the same classes and sizes: only its content tells."""
    victim = sorted((data / "test" / "cat").iterdir())[0]
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(victim)


@pytest.mark.parametrize("change", [_add_class, _replace_an_image])
def test_changed_data_stops_the_run_and_every_reader(run, capsys, change):
    root, args = run
    change(root / "data")
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1
    assert "is not what it was trained on (its content changed)" in err
    data = ["--data", str(root / "data")]  # the quantized models name the first copy's path
    for command in (["verify", *data], ["export", "--out", str(root / "exp"), *data], ["quantize"]):
        status, _, err = rerun(
            [command[0], "--run", str(root / "run"), "--scheme", "pot-channel", *command[1:]], capsys
        )
        assert status == 2 and err.count("\n") == 1, command
        assert "data" in err and ("content changed" in err or "classes" in err), err
    assert not (root / "exp").exists()


def test_an_edited_model_file_stops_the_run_and_quantize(run, capsys):
    root, args = run
    model = root / "user_resnet.py"
    model.write_text(model.read_text() + "\n# edited after training\n")
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "user_resnet.py changed since" in err
    for command in ("quantize", "verify", "accel"):
        status, _, err = rerun([command, "--run", str(root / "run"), "--scheme", "pot-channel"], capsys)
        assert status == 2 and "user_resnet.py" in err and "edited since" in err, command


def test_a_config_naming_another_model_stops_the_run(run, capsys):
    root, args = run
    config = root / "run" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model": "seed"}))
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "config.json names model 'seed'" in err
    status, _, err = rerun(["accel", "--run", str(root / "run"), "--scheme", "pot-channel"], capsys)
    assert status == 2 and "names another" in err


def test_a_deleted_quantized_model_is_made_again(run, capsys):
    root, args = run
    (root / "run" / "quant_pot-channel.pt").unlink()
    status, out, _ = rerun(args, capsys)
    assert status == 0
    assert "quantize ... again: quant_pot-channel.pt is missing" in out
    assert (root / "run" / "quant_pot-channel.pt").exists()
    status, out, _ = rerun(["export", "--run", str(root / "run"), "--out", str(root / "exp")], capsys)
    assert status == 0


def test_a_model_quantized_with_other_options_is_made_again(run, capsys):
    from potq.files import file_digest

    root, args = run
    assert main(["quantize", "--run", str(root / "run"), "--scheme", "pot-channel", "--calib", "20"]) == 0
    status, out, _ = rerun(args, capsys)
    assert status == 0 and "quantize ... again: quant_pot-channel.json was made with --calib 20, not 30" in out
    assert json.loads((root / "run" / "quant_pot-channel.json").read_text())["calib_images"] == 30
    record = json.loads((root / "run" / "verify_pot-channel.json").read_text())
    assert record["inputs"]["quantized model"] == file_digest(root / "run" / "quant_pot-channel.pt")


def test_results_of_another_quantized_model_are_made_again(run, capsys):
    root, args = run
    path = root / "run" / "verify_pot-channel.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "inputs": {"quantized model": "0" * 64}}))
    energy = root / "run" / "energy.json"
    energy.write_text(json.dumps({k: v for k, v in json.loads(energy.read_text()).items() if k != "inputs"}))
    status, out, _ = rerun(args, capsys)
    assert status == 0
    assert "verify ... again: the quantized model changed since it was made" in out
    assert "energy ... again: it records no inputs (an older potq wrote it)" in out
    assert "accel: already done" in out and "quantize: already done" in out


def test_compare_refuses_a_replaced_quantized_model(run, capsys):
    root, _ = run
    shutil.copy(root / "run" / "quant_pot-tensor.pt", root / "run" / "quant_pot-channel.pt")
    status, _, err = rerun(["compare", "--run", str(root / "run")], capsys)
    assert status == 2 and err.count("\n") == 1 and "quant_pot-channel.pt is not the file" in err


def test_a_run_json_that_is_not_an_object_is_one_line(run, capsys):
    root, args = run
    (root / "run" / "run.json").write_text("[1, 2]\n")
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "run.json is not a run record" in err


def test_data_fingerprint_is_content_not_path(learnable_data, tmp_path):
    from potq.data import load_dataset

    a = load_dataset(str(learnable_data))
    b = load_dataset(str(shutil.copytree(learnable_data, tmp_path / "elsewhere")))
    assert a.digest == b.digest
    _replace_an_image(tmp_path / "elsewhere")
    assert load_dataset(str(tmp_path / "elsewhere")).digest != a.digest


def test_a_run_of_potq_0_3_is_brought_up_to_date_not_refused(run, capsys):
    """Records without fingerprints (potq 0.3's): the training is taken as it is, the quantized models and the
    results read from them are made again, saying why."""
    root, args = run
    folder = root / "run"
    older = (
        ("config.json", ("data_digest", "model_digest")),
        ("metrics.json", ("weights_sha256", "config_sha256", "record_sha256")),
    )
    for name, keys in older:
        record = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({k: v for k, v in record.items() if k not in keys}))
    for path in folder.glob("quant_*.json"):
        record = json.loads(path.read_text())
        newer = ("inputs", "quant_sha256", "record_sha256")
        path.write_text(json.dumps({k: v for k, v in record.items() if k not in newer}))
    status, out, err = rerun(args, capsys)
    assert status == 0 and "train: already done" in out, err
    assert "quantize ... again: it records no inputs (an older potq wrote it)" in out
    assert "quant_sha256" in json.loads((folder / "quant_pot-tensor.json").read_text())


# ---- issue 32, item 1: every answer fingerprints what it read, when it read it -----------------------


def test_a_model_quantized_again_during_verify_is_not_paired_with_its_results(run, capsys, monkeypatch):
    """`potq quantize --run R &` then `potq verify --run R`: the verify record names the model it compared, not
    the one that replaced it meanwhile, so `potq run` verifies the new model again (on potq 0.4 the record
    carried the new model's SHA-256 with the old model's results, and `potq run` called verify done)."""
    from potq.files import file_digest
    from potq.jobs import verify

    root, args = run
    folder = root / "run"
    read = file_digest(folder / "quant_pot-channel.pt")
    compare_models = verify.compare_models

    def quantized_again_meanwhile(*a, **k):  # the concurrent writer, between verify's read and its save
        assert main(["quantize", "--run", str(folder), "--scheme", "pot-channel", "--calib", "20"]) == 0
        return compare_models(*a, **k)

    monkeypatch.setattr(verify, "compare_models", quantized_again_meanwhile)
    assert main(["verify", "--run", str(folder), "--scheme", "pot-channel"]) == 0
    monkeypatch.undo()
    record = json.loads((folder / "verify_pot-channel.json").read_text())
    assert file_digest(folder / "quant_pot-channel.pt") != read
    assert record["inputs"]["quantized model"] == read
    status, out, _ = rerun(args, capsys)
    assert status == 0 and "verify ... again: the quantized model changed since it was made" in out


def test_images_replaced_behind_a_symlinked_class_folder_are_other_data(run, capsys):
    """Class folders that are symbolic links: the link pointed at other images, or an image replaced behind it,
    is other data (on potq 0.4 the cache key did not look through the link: every step said `already done`)."""
    root, args = run
    link = root / "data" / "test" / "cat"
    real, changed = root / "real", root / "changed"
    shutil.move(link, real)
    shutil.copytree(real, changed)
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(sorted(changed.iterdir())[0])

    def point_at(target) -> tuple[int, str, str]:
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=True)
        return rerun(args, capsys)

    status, out, _ = point_at(real)
    assert status == 0 and "train: already done" in out  # the same content through a link: the same data
    status, _, err = point_at(changed)
    assert status == 2 and err.count("\n") == 1 and "its content changed" in err, err
    status, out, _ = point_at(real)
    assert status == 0 and "train: already done" in out
    _replace_an_image(root / "data")  # behind the link
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "its content changed" in err, err


def test_a_cache_entry_changed_in_place_is_not_used(learnable_data, tmp_path, capsys):
    """A cached test_x.npy overwritten in place with arrays of the same size: the cache entry's content is
    checked when it is used, the data decoded again (on potq 0.4 the run trained on the changed images)."""
    import numpy as np

    from potq.data import load_dataset

    data = shutil.copytree(learnable_data, tmp_path / "data")
    cache = tmp_path / "cache"
    digest = load_dataset(str(data), cache).digest
    (entry,) = [p for p in cache.iterdir() if (p / "test_x.npy").exists()]
    test_x = np.load(entry / "test_x.npy")
    size = (entry / "test_x.npy").stat().st_size
    np.save(entry / "test_x.npy", 255 - test_x)
    assert (entry / "test_x.npy").stat().st_size == size
    capsys.readouterr()
    again = load_dataset(str(data), cache)
    assert again.digest == digest and np.array_equal(again.test_x, test_x)
    assert "fails its check" in capsys.readouterr().err
    assert load_dataset(str(data), cache).digest == digest  # the entry written again: a hit, no warning
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: {**c, "mean": [m + 0.1 for m in c["mean"]], "std": [s * 2 for s in c["std"]]},
        lambda c: {**c, "val_size": c["val_size"] + 1},
        lambda c: {**c, "classes": list(reversed(c["classes"]))},
    ],
    ids=["mean-std", "val_size", "class-order"],
)
def test_an_edited_config_is_refused_by_the_run_and_quantize(run, capsys, edit):
    """config.json's fields that change a result, edited after training: refused in one line, as the README
    says (on potq 0.4 every step said `already done`, and quantize used the edited normalization silently)."""
    root, args = run
    config = root / "run" / "config.json"
    config.write_text(json.dumps(edit(json.loads(config.read_text()))))
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "config.json was edited after training" in err, err
    quantize = ["quantize", "--run", str(root / "run"), "--scheme", "pot-channel", "--data", str(root / "data")]
    status, _, err = rerun(quantize, capsys)
    assert status == 2 and err.count("\n") == 1 and "config.json was edited after training" in err, err


def test_a_helper_module_of_the_users_model_is_part_of_its_fingerprint(learnable_data, tmp_path, capsys, monkeypatch):
    """`--model pkg.net:make` whose pkg/layers.py changes (ReLU to ReLU6) after training: a changed model, refused
    (on potq 0.4 only pkg/net.py was fingerprinted, and every step said `already done`)."""
    from potq.models import source_digest, source_file, source_modules

    pkg = tmp_path / "src" / "potq_h32pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text("from torch import nn\n\ndef act():\n    return nn.ReLU()\n")
    (pkg / "net.py").write_text(
        "from torch import nn\nfrom .layers import act\n\n"
        "def make(shape, classes):\n"
        "    return nn.Sequential(nn.Conv2d(shape[0], 4, 3, padding=1), act(), nn.MaxPool2d(8), nn.Flatten(),\n"
        "                         nn.Linear(4 * (shape[1] // 8) * (shape[2] // 8), classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    spec = "potq_h32pkg.net:make"
    assert set(source_modules(source_file(spec), "potq_h32pkg.net")) == {"", "potq_h32pkg", "potq_h32pkg.layers"}
    run = tmp_path / "run"
    data = ["--data", str(learnable_data)]
    train = ["train", "--model", spec, *data, "--out", str(run), "--epochs", "1", "--val-size", "60"]
    assert main(train) == 0
    before = source_digest(spec)
    (pkg / "layers.py").write_text("from torch import nn\n\ndef act():\n    return nn.ReLU6()\n")
    assert source_digest(spec) != before
    status, _, err = rerun(["quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "20"], capsys)
    assert status == 2 and err.count("\n") == 1 and "a module of yours that it imports" in err, err
    again = ["run", "--model", spec, *data, "--out", str(run), "--epochs", "1", "--val-size", "60", "--calib", "20"]
    status, _, err = rerun(again, capsys)
    assert status == 2 and err.count("\n") == 1 and "net.py changed since" in err, err


def _edit_record(path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))


def test_a_hand_edited_figure_is_never_shown_as_potqs(run, capsys):
    """A record's accuracy edited by hand (0.99): the report and compare refuse it in one line, `potq run` makes
    a derived record again and refuses an edited training record (on potq 0.4 the report printed 0.99)."""
    from potq.errors import UserError
    from potq.report import build_markdown

    root, args = run
    folder = root / "run"
    _edit_record(folder / "quant_pot-channel.json", test_accuracy=0.99)
    with pytest.raises(UserError, match="quant_pot-channel.json: edited after potq wrote it"):
        build_markdown(folder)
    status, _, err = rerun(["compare", "--run", str(folder)], capsys)
    assert status == 2 and err.count("\n") == 1 and "edited after potq wrote it" in err
    _edit_record(folder / "verify_pot-channel.json", golden_accuracy=0.99)
    status, out, err = rerun(args, capsys)
    assert status == 0, err
    assert "quantize ... again: quant_pot-channel.json was edited after potq wrote it" in out
    assert json.loads((folder / "quant_pot-channel.json").read_text())["test_accuracy"] != 0.99
    assert "0.9900" not in (folder / "report.md").read_text()
    _edit_record(folder / "metrics.json", test_accuracy=0.99)
    status, _, err = rerun(args, capsys)
    assert status == 2 and err.count("\n") == 1 and "metrics.json was edited after training wrote it" in err


def test_a_step_whose_output_files_are_missing_is_not_done(run, capsys):
    """Deleted accel_*.png, energy.png or a file of the export: that step is done again (on potq 0.4 it was
    `already done` and the report pointed at missing figures)."""
    root, args = run
    folder = root / "run"
    for name in ("accel_roofline.png", "energy.png", "compare.png", "export/model.h"):
        (folder / name).unlink()
    status, out, _ = rerun(args, capsys)
    assert status == 0
    assert "accel ... again: accel_roofline.png is missing" in out
    assert "energy ... again: energy.png is missing" in out
    assert "quantize ... again: compare.png is missing" in out
    assert "export ... again: export/model.h is missing" in out
    for name in ("accel_roofline.png", "energy.png", "compare.png", "export/model.h"):
        assert (folder / name).exists()


def test_a_forced_run_keeps_an_edited_export_file(run, capsys):
    """`potq run --force` with export/model.h edited by the user: refused in one line, the edit kept (on potq 0.4
    the edit was gone, exit 0)."""
    root, args = run
    header = root / "run" / "export" / "model.h"
    header.write_text(header.read_text() + "// mine\n")
    status, _, err = rerun([*args, "--force"], capsys)
    assert status == 2 and err.count("\n") == 1 and "model.h was changed since potq wrote it" in err, err
    assert header.read_text().endswith("// mine\n") and (root / "run" / "weights.pt").exists()
