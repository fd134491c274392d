"""The `potq` command. Each subcommand parses its arguments and calls one module's function.

User mistakes raise UserError; main() prints them as one line on stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from potq.allocator import retain_freed_memory
from potq.errors import StepFailed, UserError, one_line


class _Defaults(argparse.HelpFormatter):
    """--help shows every option's default (where it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Defaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, as for every other user mistake
        command = self.prog.removeprefix("potq").strip()
        raise UserError(f"{command}: {message}" if command else message)


def cmd_summary(a: argparse.Namespace) -> None:
    from potq.models import build_model, parse_shape
    from potq.summary import format_summary, summarize

    shape = parse_shape(a.input)
    s = summarize(build_model(a.model, shape, a.classes), shape)
    print(json.dumps(s.to_dict(), indent=2) if a.json else format_summary(s))


def cmd_train(a: argparse.Namespace) -> None:
    from potq.train import CHECKPOINT, TrainConfig, train

    data = a.data if a.data == "cifar10" else str(Path(a.data).resolve())
    from potq.models import model_spec

    cfg = TrainConfig(
        model=model_spec(a.model),
        data=data,
        recipe=a.recipe,
        epochs=a.epochs,
        seed=a.seed,
        train_limit=a.train_limit,
        val_size=a.val_size,
        batch_size=a.batch_size,
        lr=a.lr,
        precision=a.precision,
    )
    resume = None
    if a.resume is not None:
        resume = Path(a.resume) if a.resume else a.out / CHECKPOINT
    from potq.files import folder_lock

    with folder_lock(a.out, "--out"):
        metrics = train(cfg, a.out, a.cache, resume)
    if metrics:
        print(
            f"test accuracy {metrics['test_accuracy']:.4f}  test loss {metrics['test_loss']:.4f}  "
            f"model size {metrics['model_size_mb']:.2f} MB  -> {a.out}"
        )


def check_run_model(a: argparse.Namespace) -> None:
    """--model on a command that reads a run: the run records its model; a different one is a mistake."""
    if getattr(a, "model", None) is None:
        return
    from potq.models import model_spec

    config = Path(a.run) / "config.json"
    try:
        saved = json.loads(config.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return  # the command itself reports a missing or broken run
    if saved != model_spec(a.model):
        raise UserError(f"--model {a.model}: the run {a.run} holds model {saved}; leave --model out")


def cmd_quantize(a: argparse.Namespace) -> None:
    check_run_model(a)
    from potq.files import folder_lock
    from potq.quant.pipeline import quantize_run
    from potq.quant.scheme import QuantSettings

    settings = QuantSettings(a.scheme, a.exponent, a.rounding, a.max_shift)
    with folder_lock(a.run, "--run"):
        r = quantize_run(a.run, settings, a.calib, a.qat, a.qat_lr, a.data, a.cache)
    print(
        f"{r['label']}: test accuracy {r['test_accuracy']:.4f} (FP32 {r['fp32_test_accuracy']:.4f}, "
        f"drop {r['accuracy_drop']:+.2f} points)  size {r['model_size_mb']:.6f} MB  -> {a.run}/quant_{r['label']}.json"
    )


def cmd_compare(a: argparse.Namespace) -> None:
    from potq.quant.pipeline import compare

    print(compare(a.run))


def cmd_verify(a: argparse.Namespace) -> None:
    check_run_model(a)
    if a.rtl or a.ppu or a.pe:
        return _verify_rtl(a)
    if a.onnx or a.c:
        return _verify_consumers(a)
    from potq.verify import verify_run

    r = verify_run(a.run, a.scheme, a.data, a.cache)
    print("| Node | Op | Worst-case accumulator | Bits | int32 headroom (bits) | Exact GEMM |")
    print("|---|---|---:|---:|---:|---|")
    for b in r["accumulators"]:
        print(
            f"| {b['layer']} | {b['op']} | {b['worst_case_accumulator']:,} | {b['bits']} | "
            f"{b['int32_headroom_bits']} | {b['gemm']} |"
        )
    print(
        f"{r['label']}: {r['mismatches']} mismatching values of {r['compared_values']:,} "
        f"({r['images']} images, every value of all {r['nodes']} nodes); golden accuracy {r['golden_accuracy']:.4f}, "
        f"simulated {r['simulated_accuracy']:.4f}"
    )
    if r["mismatches"]:
        raise StepFailed(f"verify: the golden and simulated models differ in {r['mismatches']} values")


def _verify_consumers(a: argparse.Namespace) -> None:
    from potq.deploy.check import check_run

    r = check_run(a.run, a.scheme, a.onnx, a.c, a.data, a.cache, a.c_vectors)
    bad = []
    if a.onnx:
        o = r["onnx"]
        print(
            f"onnxruntime: {o['mismatches']:,} mismatching values of {o['compared_values']:,} "
            f"({o['mismatch_rate']:.2e}; {o['images']} images, logits and every quantized value), "
            f"{o['logit_mismatches']:,} mismatching logits, class agreement {o['class_agreement']:.4f}, "
            f"onnxruntime accuracy {o['onnx_accuracy']:.4f} (rounding {o['rounding']})"
        )
        for k in o["mismatch_kinds"]:
            print(f"  {k['value']}: {k['mismatches']:,} values: {'; '.join(k['causes'])}")
        if o["unexplained"]:
            bad.append(f"onnxruntime differs in {o['unexplained']} values that no known cause explains")
    if a.c:
        c = r["c"]
        print(
            f"C99 runtime ({c['compiler']} {c['flags']}): {c['logit_mismatches']} mismatching logits in "
            f"{c['vectors']} test images, {c['class_mismatches']} differing classes, "
            f"{c['images_per_second']:.1f} images/s"
        )
        if c["logit_mismatches"] or c["class_mismatches"]:
            bad.append(f"the C runtime differs from the golden model in {c['logit_mismatches']} logits")
    print(f"-> {a.run}/deploy_{a.scheme}.json")
    if bad:
        raise StepFailed("verify: " + "; ".join(bad))


def _verify_rtl(a: argparse.Namespace) -> None:
    from potq.deploy.rtl_check import check_rtl_run, rtl_lines

    if not a.rtl:
        raise UserError("--ppu and --pe replace a module of the RTL: give them with --rtl")
    if a.onnx or a.c:
        raise UserError("--rtl runs alone: check --onnx and --c in another call")
    r = check_rtl_run(a.run, a.scheme, a.array, a.ppu, a.pe, a.rtl_vectors, a.data, a.cache)
    print("\n".join(rtl_lines(r)))
    print(f"-> {a.run}/deploy_{a.scheme}.json")
    if r["mismatches"]:
        raise StepFailed(f"verify: the RTL differs from the golden model in {r['mismatches']:,} values")


def cmd_export(a: argparse.Namespace) -> None:
    check_run_model(a)
    from potq.deploy.formats import parse_formats
    from potq.export import export_run

    formats = parse_formats(a.format)
    r = export_run(a.run, a.scheme, a.out, a.vectors, a.data, a.cache, formats)
    print(
        f"exported {r['nodes']} nodes, {r['tensors']} tensors and {r['vectors']} test vectors "
        f"({', '.join(r['formats'])}) -> {r['out']}"
    )


def cmd_energy(a: argparse.Namespace) -> None:
    from potq import energy
    from potq.models import build_model, parse_shape

    table = energy.load_table(a.table)
    if a.linear:
        zps = [a.act_zero_point] if a.act_zero_point is not None else [128, 0]
        results = {}
        for zp in zps:
            example = energy.linear_example(a.linear[0], a.linear[1], zp, table)
            print(f"Linear {a.linear[0]} -> {a.linear[1]}, activation zero point {zp}:")
            print("\n".join("  " + term for term in example["terms"]))
            results[f"zero_point_{zp}"] = example["pj"]
        if a.json:
            print(json.dumps(results, indent=2))
        return
    if a.run:  # the quantized graph itself, with its real zero points and shifts
        from potq.quant.pipeline import load_quantized

        costs = energy.graph_costs(load_quantized(a.run, a.scheme)[0], a.act_zero_point)
    else:
        shape = parse_shape(a.input)
        costs = energy.network_costs(build_model(a.model, shape, a.classes), shape, a.act_zero_point)
    r = energy.report(costs, table, a.memory)
    print(json.dumps(r, indent=2) if a.json else energy.format_report(r))
    if a.out:
        energy.plot_report(r, a.out)


def cmd_run(a: argparse.Namespace) -> None:
    from potq.workflow import RunOptions, run_all

    opts = RunOptions(
        data=a.data,
        out=a.out,
        model=a.model,
        epochs=a.epochs,
        recipe=a.recipe,
        precision=a.precision,
        qat=a.qat,
        qat_scheme=a.qat_scheme,
        qat_lr=a.qat_lr,
        train_limit=a.train_limit,
        val_size=a.val_size,
        seed=a.seed,
        calib=a.calib,
        vectors=a.vectors,
        memory=a.memory,
        force=a.force,
        cache=a.cache,
    )
    run_all(opts)


def _quantized_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder")
    p.add_argument("--model", help="optional: the run records its model; if given, it must be the same")
    p.add_argument("--scheme", default="pot-channel", help="the quantized model's label, e.g. pot-channel-qat")
    p.add_argument("--data", help="dataset path, if it moved since training")
    p.add_argument("--cache", type=Path, help="cache folder for downloads and decoded data (default: $POTQ_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    model_help = "a zoo model (seed, resnet20, ...: the README lists them) or your own: file.py:factory"
    # torch-free modules only: --help and argument errors answer before torch loads
    from potq.deploy.formats import FORMAT_CHOICES
    from potq.quant.rules import EXPONENT_RULES, POT_SCHEMES, ROUNDING, SCHEMES
    from potq.recipes import PRECISIONS, RECIPES

    precision_help = (
        f"training arithmetic, one of {', '.join(PRECISIONS)} (default: the recipe's; fast: auto, which is bf16 "
        "autocast on a CPU with AMX or a GPU with bf16); weights and evaluation stay float32"
    )

    p = _Parser(prog="potq", description="Compact CNNs from design to integer hardware.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run", help="the whole path: summary, training, quantization, golden check, energy, export and report"
    )
    r.add_argument("--data", default="cifar10", help="cifar10, or a path to an archive or folder")
    r.add_argument("--out", type=Path, required=True, help="run folder (a second call resumes it)")
    r.add_argument("--model", default="seed", help=model_help)
    r.add_argument("--epochs", type=int, help="default: the recipe's (50 for seed)")
    r.add_argument("--precision", help=precision_help)
    r.add_argument("--recipe", default="seed", help=f"one of {', '.join(RECIPES)}")
    r.add_argument("--qat", type=int, default=0, metavar="EPOCHS", help="also fine-tune with QAT")
    r.add_argument("--qat-scheme", default="pot-channel", choices=POT_SCHEMES, help="scheme to fine-tune")
    r.add_argument("--qat-lr", type=float, help="QAT peak learning rate (default 5e-4)")
    r.add_argument("--train-limit", type=int, help="train on the first N training images only")
    r.add_argument("--val-size", type=int, default=5000, help="validation images held out of the training set")
    r.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization and the shuffles")
    r.add_argument("--calib", type=int, default=1000, help="calibration images from the training split")
    r.add_argument("--vectors", type=int, default=10, help="test images exported with every value's integers")
    r.add_argument("--memory", default="dram", help="memory level for the energy model")
    r.add_argument("--force", action="store_true", help="redo every step")
    r.add_argument("--cache", type=Path, help="cache folder for downloads and decoded data (default: $POTQ_CACHE)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("summary", help="layer table, parameters and sizes of a zoo model")
    s.add_argument("--model", default="seed", help=model_help)
    s.add_argument("--input", default="3,32,32", help="input shape C,H,W")
    s.add_argument("--classes", type=int, default=10, help="number of classes (outputs)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=cmd_summary)

    t = sub.add_parser("train", help="train a zoo model and write history, curves, metrics and weights")
    t.add_argument("--model", default="seed", help=model_help)
    t.add_argument("--data", default="cifar10", help="cifar10, or a path to an archive or folder")
    t.add_argument("--out", type=Path, required=True, help="run folder")
    t.add_argument("--recipe", default="seed", help=f"one of {', '.join(RECIPES)}")
    t.add_argument("--epochs", type=int, help="default: the recipe's (50 for seed)")
    t.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    t.add_argument("--precision", help=precision_help)
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization and the shuffles")
    t.add_argument("--train-limit", type=int, help="train on the first N training images only")
    t.add_argument("--val-size", type=int, default=5000, help="validation images held out of the training set")
    t.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue from OUT/checkpoint.pt, or from the checkpoint given",
    )
    t.add_argument("--cache", type=Path, help="cache folder for downloads and decoded data")
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("quantize", help="INT8 quantization of a trained run (PTQ, or QAT with --qat)")
    q.add_argument("--run", type=Path, required=True, help="run folder written by potq train")
    q.add_argument("--model", help="optional: the run records its model; if given, it must be the same")
    q.add_argument("--scheme", default="pot-channel", choices=list(SCHEMES), help="quantization scheme")
    q.add_argument("--calib", type=int, default=1000, help="calibration images from the training split")
    q.add_argument("--qat", type=int, default=0, metavar="EPOCHS", help="quantization-aware fine-tuning epochs")
    q.add_argument("--qat-lr", type=float, help="QAT peak learning rate (default 5e-4)")
    q.add_argument("--exponent", default="ceil", choices=EXPONENT_RULES, help="power-of-two exponent rule")
    q.add_argument("--rounding", default="half-up", choices=ROUNDING, help="rounding rule of every shift")
    q.add_argument("--max-shift", type=int, help="longest right shift the hardware allows")
    q.add_argument("--data", help="dataset path, if it moved since training")
    q.add_argument("--cache", type=Path, help="cache folder for downloads and decoded data (default: $POTQ_CACHE)")
    q.set_defaults(func=cmd_quantize)

    v = sub.add_parser("verify", help="integer golden model against the simulated model, bit for bit")
    _quantized_model_args(v)
    v.add_argument(
        "--onnx", action="store_true", help="instead: the ONNX export in onnxruntime against the golden model"
    )
    v.add_argument("--c", action="store_true", help="instead: the C runtime, compiled here, against the golden model")
    v.add_argument(
        "--c-vectors",
        type=int,
        default=200,
        help="test images the C check runs, drawn across the classes as export draws its vectors (default: 200)",
    )
    v.add_argument("--rtl", action="store_true", help="instead: potq's RTL under Verilator against the golden model")
    v.add_argument("--array", default="16x16", help="--rtl: the systolic array's rows x columns (default: 16x16)")
    v.add_argument("--ppu", type=Path, help="--rtl: your potq_ppu module (a .sv file) in place of potq's")
    v.add_argument("--pe", type=Path, help="--rtl: your potq_pe module (a .sv file) in place of potq's")
    v.add_argument("--rtl-vectors", type=int, default=2, help="--rtl: test images to simulate (default: 2)")
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="integer weights, shifts, C header, hex files and test vectors")
    _quantized_model_args(e)
    e.add_argument("--out", type=Path, required=True, help="export folder (replaced whole)")
    e.add_argument("--vectors", type=int, default=10, help="test images with every layer's integer output")
    e.add_argument(
        "--format",
        default="hw",
        help=f"one of {', '.join(FORMAT_CHOICES)} or a comma-separated list (default: hw, hex files and vectors; "
        "rtl: potq's SystemVerilog, its Verilator testbench and memory images)",
    )
    e.set_defaults(func=cmd_export)

    en = sub.add_parser("energy", help="op counts and energy per layer, FP32 against INT8")
    en.add_argument("--model", default="seed", help=model_help)
    en.add_argument("--run", type=Path, help="cost this run's quantized model (see --scheme) instead of --model")
    en.add_argument("--scheme", default="pot-channel", help="with --run: the quantized model's label")
    en.add_argument("--input", default="3,32,32", help="input shape C,H,W")
    en.add_argument("--classes", type=int, default=10, help="number of classes (outputs)")
    en.add_argument("--linear", type=int, nargs=2, metavar=("IN", "OUT"), help="one Linear layer instead")
    en.add_argument(
        "--act-zero-point",
        type=int,
        choices=[0, 128],
        help="128: the reference convention everywhere; default: potq's (0 after ReLU)",
    )
    en.add_argument("--table", type=Path, help="energy table JSON (default: 45 nm, Horowitz 2014)")
    en.add_argument("--memory", default="dram", help="memory level for weights and activations")
    en.add_argument("--out", type=Path, help="per-layer bar chart (PNG)")
    en.add_argument("--json", action="store_true", help="print JSON instead of tables")
    en.set_defaults(func=cmd_energy)

    c = sub.add_parser("compare", help="table and chart of every quantized model of a run")
    c.add_argument("--run", type=Path, required=True, help="run folder")
    c.set_defaults(func=cmd_compare)
    return p


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl-C: one line, nothing half-written


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    retain_freed_memory()  # see potq.allocator: tens of MB per batch, reused rather than page-faulted
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except UserError as e:
        print(f"potq: error: {one_line(e)}", file=sys.stderr)
        return 2
    except StepFailed as e:
        print(f"potq: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a path the user gave can't be written or read: still one line
        print(f"potq: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("potq: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
