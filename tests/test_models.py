import pytest
import torch

from potq.cli import main
from potq.errors import UserError
from potq.models import ZOO, build_model
from potq.summary import summarize
from tests.conftest import write_image_folder

REFERENCE_ROWS = [
    ("Conv2d", [-1, 32, 32, 32], 896),
    ("BatchNorm2d", [-1, 32, 32, 32], 64),
    ("ReLU", [-1, 32, 32, 32], 0),
    ("MaxPool2d", [-1, 32, 16, 16], 0),
    ("Conv2d", [-1, 64, 16, 16], 18496),
    ("BatchNorm2d", [-1, 64, 16, 16], 128),
    ("ReLU", [-1, 64, 16, 16], 0),
    ("MaxPool2d", [-1, 64, 8, 8], 0),
    ("Conv2d", [-1, 128, 8, 8], 73856),
    ("BatchNorm2d", [-1, 128, 8, 8], 256),
    ("ReLU", [-1, 128, 8, 8], 0),
    ("Conv2d", [-1, 128, 8, 8], 147584),
    ("BatchNorm2d", [-1, 128, 8, 8], 256),
    ("ReLU", [-1, 128, 8, 8], 0),
    ("Conv2d", [-1, 128, 8, 8], 147584),
    ("BatchNorm2d", [-1, 128, 8, 8], 256),
    ("ReLU", [-1, 128, 8, 8], 0),
    ("MaxPool2d", [-1, 128, 4, 4], 0),
    ("Linear", [-1, 128], 262272),
    ("ReLU", [-1, 128], 0),
    ("Linear", [-1, 64], 8256),
    ("ReLU", [-1, 64], 0),
    ("Linear", [-1, 10], 650),
]


def test_seed_summary_matches_reference_report():
    s = summarize(build_model("seed"), (3, 32, 32))
    assert [(r.name, r.output_shape, r.params) for r in s.rows] == REFERENCE_ROWS
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (660554, 660554, 0)
    sizes = [f"{v:.2f}" for v in (s.input_mb, s.forward_backward_mb, s.params_mb, s.total_mb)]
    assert sizes == ["0.01", "1.80", "2.52", "4.33"]


def test_summary_command_prints_reference_table(capsys):
    assert main(["summary", "--model", "seed"]) == 0
    out = capsys.readouterr().out
    assert "| Linear | [-1, 128] | 262,272 |" in out
    assert "| Estimated Total Size | 4.33 MB |" in out


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_runs_on_cifar_and_fashion_mnist_shapes(name):
    for shape, classes in (((3, 32, 32), 10), ((1, 28, 28), 7)):
        model = build_model(name, shape, classes).eval()
        assert model(torch.zeros(2, *shape)).shape == (2, classes)


def test_input_and_classes_change_the_model(capsys):
    assert main(["summary", "--model", "seed", "--input", "1,28,28", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "| Conv2d | [-1, 32, 28, 28] | 320 |" in out  # 1*9*32 + 32
    assert "| Linear | [-1, 5] | 325 |" in out
    assert "| Linear | [-1, 128] | 147,584 |" in out  # 128*3*3*128 + 128


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "nope"],
        ["--input", "3,32"],
        ["--input", "0,32,32"],
        ["--input", "3,100000,100000"],
        ["--classes", "1"],
        ["--classes", "100000000000"],
        # seed's flatten grows with the input: 4.3 billion parameters, counted on the meta device, never built
        ["--input", "3,4096,4096"],
        ["--input", "3,1024,1024"],
    ],
)
def test_summary_bad_input_is_one_line_exit_2(args, capsys):
    assert main(["summary", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("potq: error:")


def test_unknown_model_raises_user_error():
    with pytest.raises(UserError, match="not a zoo model"):
        build_model("resnet1000")


def test_help_and_argument_errors_answer_before_torch_loads():
    import subprocess
    import sys

    code = (
        "import sys\nfrom potq.cli import main\ntry:\n    main(['quantize', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert main(['run']) == 2\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False") and "(default: pot-channel)" in out.stdout


@pytest.mark.parametrize(
    "source, message",
    [
        ("import sys\nsys.exit(0)\n", "importing {path} called sys.exit(0)"),
        ("import sys\nsys.exit('msg')\n", "importing {path} called sys.exit('msg')"),
        ("raise RuntimeError('broken')\n", "importing {path} failed: RuntimeError: broken"),
        ("import sys\ndef build(shape, classes):\n    sys.exit(0)\n", "the factory called sys.exit(0)"),
        ("def build(shape, classes):\n    raise GeneratorExit('odd')\n", "the factory failed: GeneratorExit: odd"),
    ],
)
@pytest.mark.parametrize("command", ["summary", "train"])
def test_a_model_file_that_exits_or_raises_is_one_line_exit_2(tmp_path, source, message, command, capsys):
    path = tmp_path / "mine.py"
    path.write_text(source)
    out = tmp_path / "run"
    args = ["--model", f"{path}:build"]
    if command == "train":
        args += [
            "--data",
            str(write_image_folder(tmp_path / "imgs", per_class=2)),
            "--out",
            str(out),
            "--val-size",
            "1",
        ]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("potq: error:") and err.count("\n") == 1 and message.format(path=path) in err
    assert not out.exists()


def test_a_keyboard_interrupt_in_a_model_file_is_not_swallowed(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        build_model(f"{path}:build")
