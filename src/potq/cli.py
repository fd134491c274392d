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
from potq.ir.rules import SIGNED_ZERO_POINT
from potq.jobs import C_VECTORS, RTL_VECTORS, TVM_IMAGES
from potq.runs.paths import THIRD_PARTY_LOG, deploy_json, quant_paths


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


def folder_path(text: str) -> Path:
    """A folder option (--cache): an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return Path(text)


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

    a.model, a.data = model_spec(a.model), data
    cfg = TrainConfig.from_options(a)
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
    from potq.runs.paths import CONFIG

    config = Path(a.run) / CONFIG
    try:
        saved = json.loads(config.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return  # the command itself reports a missing or broken run
    if saved != model_spec(a.model):
        raise UserError(f"--model {a.model}: the run {a.run} holds model {saved}; leave --model out")


def cmd_quantize(a: argparse.Namespace) -> None:
    check_run_model(a)
    from potq.files import folder_lock
    from potq.jobs.quantize import quantize_run
    from potq.quant.precision import read_precision
    from potq.quant.scheme import QuantSettings

    precision = read_precision(a.precision) if a.precision else ()
    settings = QuantSettings.parse(
        a.scheme, a.exponent, a.rounding, a.max_shift, a.bits, a.weights, a.bits_all, precision
    )
    with folder_lock(a.run, "--run"):
        r = quantize_run(a.run, settings, a.calib, a.qat, a.qat_lr, a.data, a.cache)
    print(
        f"{r['label']}: test accuracy {r['test_accuracy']:.4f} (FP32 {r['fp32_test_accuracy']:.4f}, "
        f"drop {r['accuracy_drop']:+.2f} points)  size {r['model_size_mb']:.6f} MB  "
        f"-> {quant_paths(a.run, r['label'])[1]}"
    )


def cmd_mixed(a: argparse.Namespace) -> None:
    check_run_model(a)
    from potq.files import folder_lock
    from potq.jobs.mixed import Search, mixed_lines, mixed_run
    from potq.quant.rules import QuantSettings, parse_act_menu, parse_codes, parse_menu

    settings = QuantSettings.parse(a.scheme, bits_all=a.bits_all)
    menu = parse_menu(a.menu) if a.menu is not None else None
    codes = parse_codes(a.codes) if a.codes is not None else None
    act_menu = parse_act_menu(a.act_menu) if a.act_menu is not None else None
    with folder_lock(a.run, "--run"):
        search = Search(settings, a.objective, a.budget, a.arch, a.dataflow, menu, codes, a.method, act_menu)
        r = mixed_run(a.run, search, a.calib, a.data, a.cache)
    print("\n".join(mixed_lines(r)))


def cmd_compare(a: argparse.Namespace) -> None:
    from potq.jobs.costs import compare_and_price

    print(compare_and_price(a.run))


def cmd_verify(a: argparse.Namespace) -> None:
    from potq.deploy.rtl import PE_KINDS

    check_run_model(a)
    if a.rtl or a.ppu or a.pe or a.pe_kind != PE_KINDS[0]:
        return _verify_rtl(a)
    if a.onnx or a.c or a.tvm:
        return _verify_consumers(a)
    from potq.jobs.verify import verify_run

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
    from potq.jobs.deploy import check_run
    from potq.machine import cpu_text

    r = check_run(a.run, a.scheme, a.onnx, a.c, a.data, a.cache, a.c_vectors, None, a.onnx_weights, a.tvm, a.tvm_images)
    bad = []
    if a.onnx:
        o = r["onnx"]
        print(
            f"onnxruntime: {o['mismatches']:,} mismatching values of {o['compared_values']:,} "
            f"({o['mismatch_rate']:.2e}; {o['images']} images, logits and every quantized value), "
            f"{o['logit_mismatches']:,} mismatching logits, class agreement {o['class_agreement']:.4f}, "
            f"onnxruntime accuracy {o['accuracy']:.4f} (rounding {o['rounding']})"
        )
        for k in o["mismatch_kinds"]:
            print(f"  {k['value']}: {k['mismatches']:,} values: {'; '.join(k['causes'])}")
        sat = o["avx2_saturating_dot_products"]
        print(
            f"  {o['weights']} weights on an x86-64 CPU without VNNI: "
            + (", ".join(f"{k} {v:,}" for k, v in sat.items()) + " saturating dot products" if sat else "exact")
            + f" (potq.deploy.saturation); this CPU: {cpu_text(o['cpu'])}"
        )
        if o["unexplained"]:
            bad.append(f"onnxruntime differs in {o['unexplained']} values that no known cause explains")
    if a.tvm:
        t = r["tvm"]
        print(
            f"TVM {t['tvm_version']} ({t['target']}): {t['mismatches']:,} mismatching values of "
            f"{t['compared_values']:,} ({t['images']} images, logits and every quantized value), "
            f"{t['logit_mismatches']:,} mismatching logits, class agreement {t['class_agreement']:.4f} "
            f"(rounding {t['rounding']}; built in {t['build_seconds']:.1f} s)"
        )
        for k in t["mismatch_kinds"]:
            print(f"  {k['value']}: {k['mismatches']:,} values: {'; '.join(k['causes'])}")
        if t["unexplained"]:
            bad.append(f"TVM differs in {t['unexplained']} values that no known cause explains")
    if a.c:
        c = r["c"]
        print(
            f"C99 runtime ({c['compiler']} {c['flags']}): {c['logit_mismatches']} mismatching logits in "
            f"{c['vectors']} test images, {c['class_mismatches']} differing classes, "
            f"{c['images_per_second']:.1f} images/s"
        )
        if c["logit_mismatches"] or c["class_mismatches"]:
            bad.append(f"the C runtime differs from the golden model in {c['logit_mismatches']} logits")
    log = Path(a.run) / THIRD_PARTY_LOG
    libraries = f" (what onnxruntime and TVM printed themselves: {log})" if (a.onnx or a.tvm) and log.exists() else ""
    print(f"-> {deploy_json(a.run, a.scheme)}{libraries}")
    if bad:
        raise StepFailed("verify: " + "; ".join(bad))


def _verify_rtl(a: argparse.Namespace) -> None:
    from potq.jobs.deploy import check_rtl_run, rtl_lines

    if not a.rtl:
        raise UserError("--ppu, --pe and --pe-kind choose the RTL's modules: give them with --rtl")
    if a.onnx or a.c:
        raise UserError("--rtl runs alone: check --onnx and --c in another call")
    r = check_rtl_run(a.run, a.scheme, a.array, a.ppu, a.pe, a.rtl_vectors, a.data, a.cache, a.pe_kind)
    print("\n".join(rtl_lines(r)))
    print(f"-> {deploy_json(a.run, a.scheme)}")
    bad = r.get("all_mismatches", r["mismatches"])  # the vectors', the edge sweep's and the stress test's
    if bad:
        raise StepFailed(f"verify: the RTL differs from the golden model in {bad:,} values")


def cmd_export(a: argparse.Namespace) -> None:
    check_run_model(a)
    from potq.deploy.formats import parse_formats
    from potq.jobs.export import export_run

    formats = parse_formats(a.format)
    r = export_run(
        a.run, a.scheme, a.out, a.vectors, a.data, a.cache, formats, a.onnx_weights, a.pe_kind, force=a.force
    )
    print(
        f"exported {r['nodes']} nodes, {r['tensors']} tensors and {r['vectors']} test vectors "
        f"({', '.join(r['formats'])}) -> {r['out']}"
    )


def cmd_energy(a: argparse.Namespace) -> None:
    from potq import energy

    table = energy.load_table(a.table)
    if a.linear:
        zps = [a.act_zero_point] if a.act_zero_point is not None else [SIGNED_ZERO_POINT, 0]
        results = {}
        for zp in zps:
            example = energy.linear_example(a.linear[0], a.linear[1], zp, table)
            print(f"Linear {a.linear[0]} -> {a.linear[1]}, activation zero point {zp}:")
            print("\n".join("  " + term for term in example["terms"]))
            results[f"zero_point_{zp}"] = example["pj"]
        if a.json:
            print(json.dumps(results, indent=2))
        return
    costs = energy.graph_costs(*_costed_graph(a))
    r = energy.report(costs, table, a.memory)
    print(json.dumps(r, indent=2) if a.json else energy.format_report(r))
    if a.out:
        energy.plot_report(r, a.out)


def _costed_graph(a: argparse.Namespace):
    """The graph `potq energy` and `potq accel` cost and its zero points (None: the graph's own): the run's
    quantized graph, or the model's captured float graph at 8 bits with potq's zero-point policy."""
    zero_point = getattr(a, "act_zero_point", None)  # `potq energy` asks; `potq accel` takes potq's policy
    if a.run:
        from potq.jobs.costs import run_graph

        return run_graph(a.run, a.scheme, zero_point)
    from potq.jobs.costs import model_graph
    from potq.models import build_model, parse_shape

    shape = parse_shape(a.input)
    return model_graph(build_model(a.model, shape, a.classes), shape, zero_point)


def _dse_sizes(a: argparse.Namespace) -> tuple[list[tuple[int, int]] | None, list[int] | None]:
    """--dse-arrays RxC,... and --dse-glb KiB,...: checked against potq.accel.limits, or None for each base's
    own defaults."""
    from potq.accel.limits import MAX_GLB_BYTES, MAX_PE_SIDE

    arrays = glbs = None
    try:
        if a.dse_arrays:
            arrays = [(int(r), int(c)) for r, c in (x.lower().split("x") for x in a.dse_arrays.split(","))]
        if a.dse_glb:
            kib = [float(k) for k in a.dse_glb.split(",")]
    except ValueError:
        raise UserError(
            "--dse-arrays wants ROWSxCOLS,... (e.g. 6x8,12x16) and --dse-glb KiB,... (e.g. 16,64)"
        ) from None
    if any(not 1 <= x <= MAX_PE_SIDE for rc in arrays or [] for x in rc):
        raise UserError(f"--dse-arrays: every side must be 1 to {MAX_PE_SIDE} PEs, got {a.dse_arrays[:60]}")
    if a.dse_glb:  # float() takes inf, nan and 1e300: checked before they become an int
        if not all(1 <= k * 1024 <= MAX_GLB_BYTES for k in kib):  # false for nan too
            raise UserError(
                f"--dse-glb: every size must be from 1 B to {MAX_GLB_BYTES >> 10} KiB, got {a.dse_glb[:60]}"
            )
        glbs = [int(k * 1024) for k in kib]
    return arrays, glbs


def _accel_dse(a: argparse.Namespace, arch, graph, zero_points, sizes: tuple) -> list:
    """The design-space sweep of --dse: --arch and the --dse-with bases, each over PE arrays (default: its
    own halved, as is, doubled) x global buffers (default: its own / 4, as is, x 2) x its dataflows."""
    from potq.accel.arch import load_arch
    from potq.accel.dse import check_plan, dse
    from potq.accel.limits import MAX_GLB_BYTES, MAX_PE_SIDE
    from potq.accel.model import with_overlap

    more = (with_overlap(load_arch(n), a.overlap) for n in (a.dse_with.split(",") if a.dse_with else []))
    bases = [arch, *more]
    arrays, glbs = sizes  # _dse_sizes(a)
    plan = []
    for b in bases:  # the defaults within the limits an architecture file has
        own = [(b.pe_rows // 2, b.pe_cols // 2), (b.pe_rows, b.pe_cols), (2 * b.pe_rows, 2 * b.pe_cols)]
        sizes = arrays or [rc for rc in own if 1 <= min(rc) and max(rc) <= MAX_PE_SIDE]
        buffers = glbs or [g for g in (b.glb_bytes // 4, b.glb_bytes, 2 * b.glb_bytes) if 1 <= g <= MAX_GLB_BYTES]
        plan.append((b, sizes, buffers))
    check_plan(graph, plan, a.batch)  # the whole sweep, every base: refused before any point runs
    return [p for b, sizes, buffers in plan for p in dse(graph, [b], sizes, buffers, a.objective, a.batch, zero_points)]


def _check_accel_outputs(a: argparse.Namespace) -> None:
    from potq.accel.limits import check_batch

    check_batch(a.batch)
    if a.scalesim_out:
        from potq.accel.peers import check_scalesim_out

        check_scalesim_out(a.scalesim_out)  # before any work, as an export's --out
    for flag, path in (("--csv", a.csv), ("--mappings-csv", a.mappings_csv), ("--dse-out", a.dse_out)):
        if path and not path.parent.is_dir():
            raise UserError(f"{flag} {path}: no folder {path.parent}")
    if a.dse_out and not a.dse:
        raise UserError(f"--dse-out {a.dse_out}: needs --dse")
    if a.dse_out and a.dse_out.suffix.lower() != ".png":
        raise UserError(f"--dse-out {a.dse_out}: must be a .png file")


def cmd_accel(a: argparse.Namespace) -> None:
    """The accelerator model (potq.accel; docs/accel.md): every input is checked and every result computed
    before anything is written."""
    from potq.accel.arch import load_arch
    from potq.accel.model import accel_report, format_table, to_csv, with_overlap
    from potq.files import save_text

    arch = load_arch(a.arch)
    _check_accel_outputs(a)
    sizes = _dse_sizes(a) if a.dse else (None, None)  # checked before the model is built
    if a.mappings_csv and (a.dataflow or arch.dataflows[0]) != "rs":
        df = a.dataflow or arch.dataflows[0]
        raise UserError(f"--mappings-csv: lists row-stationary (rs) mappings; the dataflow here is {df}")
    graph, zero_points = _costed_graph(a)
    r = accel_report(
        graph,
        arch,
        a.dataflow,
        batch=a.batch,
        compat=a.scalesim_compat,
        objective=a.objective,
        zero_points=zero_points,
        overlap=a.overlap,
    )
    arch = with_overlap(arch, a.overlap)  # the sweep's bases overlap as the report does
    points, dse_text = [], ""
    if a.dse:
        from potq.accel.dse import format_dse, format_pareto

        points = _accel_dse(a, arch, graph, zero_points, sizes)
        dse_text = format_dse(points) + "\n" + format_pareto(points)  # refuses mixed energy units: before writing
        if a.dse_out and not any(p.fits for p in points):
            raise UserError(f"--dse-out {a.dse_out}: no design point fits, nothing to plot ({points[0].reason})")
    files = {}
    if a.scalesim_out:
        from potq.accel.peers import scalesim_files, write_scalesim

        files = scalesim_files(graph, arch, Path(a.run).name if a.run else Path(a.model.split(":")[0]).stem)
    if a.mappings_csv:  # the report ran the same blocks: every one has a mapping, so this writes whole
        from potq.accel.search import conv_blocks, mappings_csv

        blocks = conv_blocks(graph, a.batch)
        mappings_csv(a.mappings_csv, [w for w, _ in blocks], arch, a.objective, [k for _, k in blocks])
    if a.csv:
        save_text(to_csv(r), a.csv)
    if files:
        write_scalesim(files, a.scalesim_out)
    if a.dse_out:
        from potq.accel.dse import plot_dse

        plot_dse(points, a.dse_out, Path(a.run).name if a.run else a.model)
    if a.json:
        from dataclasses import asdict

        print(json.dumps({**r, **({"dse": [asdict(p) for p in points]} if a.dse else {})}, indent=2))
    else:
        print(format_table(r) + ("\n\n" + dse_text if dse_text else ""))


def cmd_run(a: argparse.Namespace) -> None:
    from potq.budget import QUICK_MODEL, QUICK_RECIPE
    from potq.recipes import TrainConfig
    from potq.workflow import RunOptions, run_all

    budget = _run_budget(a)
    given = {k: getattr(a, k) for k in ("val_size", "calib", "vectors") if getattr(a, k) is not None}
    opts = RunOptions(
        data=a.data,
        out=a.out,
        model=a.model or (QUICK_MODEL if budget else TrainConfig.model),
        epochs=a.epochs,
        recipe=a.recipe or (QUICK_RECIPE if budget else TrainConfig.recipe),
        precision=a.precision,
        qat=a.qat,
        qat_scheme=a.qat_scheme,
        qat_lr=a.qat_lr,
        train_limit=a.train_limit,
        seed=a.seed,
        memory=a.memory,
        force=a.force,
        cache=a.cache,
        test_limit=a.test_limit,
        budget=budget,
        mixed=a.mixed,
        **given,
        **({"schemes": tuple(a.schemes)} if a.schemes else {}),
    )
    run_all(opts)


# the options a budget sizes itself: given as well, they are one line and exit 2
BUDGET_SIZED = ("epochs", "train_limit", "val_size", "calib", "vectors", "test_limit", "schemes", "qat")


def _run_budget(a: argparse.Namespace) -> str | None:
    """--quick (--budget 3m) or --budget DURATION, checked before anything loads; None without either."""
    from potq.budget import QUICK_BUDGET, parse_duration

    if a.quick and a.budget is not None:
        raise UserError(f"--quick is --budget {QUICK_BUDGET}: give one of them")
    budget = QUICK_BUDGET if a.quick else a.budget
    if budget is None:
        return None
    flag = "--quick" if a.quick else "--budget"
    parse_duration(budget)
    if a.mixed is not None:
        raise UserError(f"--mixed: {flag} does not size the mixed-precision search yet; leave one of them out")
    for name in BUDGET_SIZED:
        if getattr(a, name) is not None and (name != "qat" or a.qat):
            raise UserError(f"--{name.replace('_', '-')}: {flag} sizes the run itself; leave one of them out")
    return budget


MODEL_HELP = "a zoo model (seed, resnet20, ...: the README lists them) or your own: file.py:factory"
CACHE_HELP = "cache folder for downloads and decoded data"
CACHE_ENV_HELP = CACHE_HELP + " (default: $POTQ_CACHE)"


def _add(p: argparse.ArgumentParser, options: dict[str, dict], *flags: str, **override) -> None:
    """Add the named shared options, in this order; keywords in override replace a single option's own."""
    for flag in flags:
        p.add_argument(flag, **{**options[flag], **override})


def _training_options() -> dict[str, dict]:
    """The training options `train` and `run` share: flag -> add_argument's keywords (defaults: TrainConfig's)."""
    from potq.recipes import PRECISIONS, RECIPES, TrainConfig

    precision_help = (
        f"training arithmetic, one of {', '.join(PRECISIONS)} (default: the recipe's; fast: auto, which is bf16 "
        "autocast on a CPU with AMX or a GPU with bf16); weights and evaluation stay float32"
    )
    return {
        "--data": dict(default=TrainConfig.data, help="cifar10, or a path to an archive or folder"),
        "--model": dict(default=TrainConfig.model, help=MODEL_HELP),
        "--recipe": dict(default=TrainConfig.recipe, help=f"one of {', '.join(RECIPES)}"),
        "--epochs": dict(type=int, help="default: the recipe's (50 for seed)"),
        "--precision": dict(help=precision_help),
        "--seed": dict(
            type=int, default=TrainConfig.seed, help="seed of the split, the initialization and the shuffles"
        ),
        "--train-limit": dict(type=int, help="train on the first N training images only"),
        "--val-size": dict(
            type=int, default=TrainConfig.val_size, help="validation images held out of the training set"
        ),
    }


def _quantization_options() -> dict[str, dict]:
    """The quantization options `quantize` and `run` share: flag -> add_argument's keywords (defaults: RunOptions')."""
    from potq.workflow import RunOptions

    return {
        "--qat": dict(type=int, default=RunOptions.qat, metavar="EPOCHS"),
        "--qat-lr": dict(type=float, help="QAT peak learning rate (default 5e-4)"),
        "--calib": dict(type=int, default=RunOptions.calib, help="calibration images from the training split"),
    }


def _quantized_model_args(p: argparse.ArgumentParser) -> None:
    from potq.quant.rules import QuantSettings

    p.add_argument("--run", type=Path, required=True, help="run folder")
    p.add_argument("--model", help="optional: the run records its model; if given, it must be the same")
    p.add_argument("--scheme", default=QuantSettings.scheme, help="the quantized model's label, e.g. pot-channel-qat")
    p.add_argument("--data", help="dataset path, if it moved since training")
    p.add_argument("--cache", type=folder_path, help=CACHE_ENV_HELP)


def _model_input_args(p: argparse.ArgumentParser) -> None:
    """--input and --classes: the shape a zoo model is built for."""
    p.add_argument("--input", default="3,32,32", help="input shape C,H,W")
    p.add_argument("--classes", type=int, default=10, help="number of classes (outputs)")


def _onnx_weights_arg(p: argparse.ArgumentParser) -> None:
    from potq.deploy.formats import WEIGHT_FORMS

    p.add_argument(
        "--onnx-weights",
        default=WEIGHT_FORMS[0],
        choices=WEIGHT_FORMS,
        help="model.onnx's weight type: uint8 (zero point 128, exact in onnxruntime on every CPU; default) or "
        "int8 (zero point 0: onnxruntime's int16 pair sums saturate on x86-64 without VNNI)",
    )


def _run_parser(sub) -> None:
    from potq.budget import QUICK_BUDGET, QUICK_MODEL, QUICK_RECIPE
    from potq.quant.rules import POT_SCHEMES, QuantSettings
    from potq.recipes import TrainConfig
    from potq.workflow import PTQ_SCHEMES, RunOptions

    r = sub.add_parser(
        "run",
        help="the whole path: summary, training, quantization, golden check, energy, accelerator, export and report",
    )
    train, quant = _training_options(), _quantization_options()
    _add(r, train, "--data")
    r.add_argument("--out", type=Path, required=True, help="run folder (a second call resumes it)")
    r.add_argument(
        "--quick",
        action="store_true",
        help=f"a quick look: --budget {QUICK_BUDGET}",
    )
    r.add_argument(
        "--budget",
        metavar="DURATION",
        help="e.g. 3m, 90s, 10m: measure this machine's training and evaluation speed in the first seconds and "
        "size the epochs, training images, calibration, test images, schemes and checks to finish within it "
        f"(model {QUICK_MODEL} and recipe {QUICK_RECIPE} unless given; the choices are printed and saved in "
        "plan.json; the options it sizes are refused beside it)",
    )
    _add(
        r,
        train,
        "--model",
        default=None,
        help=f"{train['--model']['help']} (default: {TrainConfig.model}; {QUICK_MODEL} with --quick or --budget)",
    )
    _add(r, train, "--epochs", "--precision")
    _add(
        r,
        train,
        "--recipe",
        default=None,
        help=f"{train['--recipe']['help']} (default: {TrainConfig.recipe}; {QUICK_RECIPE} with --quick or --budget)",
    )
    _add(r, quant, "--qat", help="also fine-tune with QAT")
    r.add_argument("--qat-scheme", default=RunOptions.qat_scheme, choices=POT_SCHEMES, help="scheme to fine-tune")
    _add(r, quant, "--qat-lr")
    r.add_argument(
        "--mixed",
        type=float,
        metavar="FRACTION",
        help="also choose each node's weight bits and format and activation bits under this fraction of the all-INT8 "
        "model's energy with data movement (potq mixed), beside HAWQ-V3's baseline at the same budget; both are "
        "quantized (QAT as --qat) and checked, and potq's becomes the model that energy, accel, export and deploy "
        "take",
    )
    _add(r, train, "--train-limit")
    _add(r, train, "--val-size", default=None, help=f"validation images held out (default: {TrainConfig.val_size})")
    _add(r, train, "--seed")
    _add(r, quant, "--calib", default=None, help=f"calibration images (default: {RunOptions.calib})")
    r.add_argument(
        "--vectors", type=int, help=f"test images exported with every value's integers (default: {RunOptions.vectors})"
    )
    r.add_argument(
        "--test-limit",
        type=int,
        metavar="N",
        help="the steps after training evaluate N test images drawn across the classes (default: all)",
    )
    r.add_argument(
        "--schemes",
        nargs="+",
        choices=PTQ_SCHEMES,
        metavar="SCHEME",
        help=f"the PTQ schemes, among {', '.join(PTQ_SCHEMES)} (default: all; with {QuantSettings.scheme})",
    )
    r.add_argument("--memory", default=RunOptions.memory, help="memory level for the energy model")
    r.add_argument("--force", action="store_true", help="redo every step")
    r.add_argument("--cache", type=folder_path, help=CACHE_ENV_HELP)
    r.set_defaults(func=cmd_run)


def _summary_parser(sub) -> None:
    from potq.recipes import TrainConfig

    s = sub.add_parser(
        "summary", help="layer table, parameters and sizes of a model: a zoo model or your own (file.py:factory)"
    )
    s.add_argument("--model", default=TrainConfig.model, help=MODEL_HELP)
    _model_input_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=cmd_summary)


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train a model (a zoo model or your own) and write history, curves, metrics and weights"
    )
    train = _training_options()
    _add(t, train, "--model", "--data")
    t.add_argument("--out", type=Path, required=True, help="run folder")
    _add(t, train, "--recipe", "--epochs")
    t.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    _add(t, train, "--precision", "--seed", "--train-limit", "--val-size")
    t.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue from OUT/checkpoint.pt, or from the checkpoint given",
    )
    t.add_argument("--cache", type=folder_path, help=CACHE_HELP)
    t.set_defaults(func=cmd_train)


def _quantize_parser(sub) -> None:
    from potq.ir.codes import WEIGHT_BITS, WEIGHT_CODE_NOTES, WeightCode
    from potq.quant.rules import EXPONENT_RULES, ROUNDING, SCHEMES, QuantSettings

    q = sub.add_parser(
        "quantize", help="power-of-two quantization of a trained run, INT8 or 2-8 bits (PTQ, or QAT with --qat)"
    )
    quant = _quantization_options()
    q.add_argument("--run", type=Path, required=True, help="run folder written by potq train")
    q.add_argument("--model", help="optional: the run records its model; if given, it must be the same")
    q.add_argument("--scheme", default=QuantSettings.scheme, choices=list(SCHEMES), help="quantization scheme")
    _add(q, quant, "--calib")
    _add(q, quant, "--qat", help="quantization-aware fine-tuning epochs")
    _add(q, quant, "--qat-lr")
    q.add_argument(
        "--exponent", default=QuantSettings.exponent, choices=EXPONENT_RULES, help="power-of-two exponent rule"
    )
    q.add_argument(
        "--rounding", default=QuantSettings.rounding.label, choices=ROUNDING, help="rounding rule of every shift"
    )
    q.add_argument("--max-shift", type=int, help="longest right shift the hardware allows")
    q.add_argument(
        "--bits",
        default=f"{QuantSettings.w_bits}/{QuantSettings.a_bits}",
        help="W/A: the weights' and the activations' bits, 2-8 each (e.g. 4/4); the first and the last layer "
        "stay 8-bit unless --bits-all",
    )
    q.add_argument(
        "--weights",
        default=QuantSettings.weights.value,
        choices=[c.value for c in WeightCode],
        help="the weights' format: "
        + "; ".join(
            f"{c.value}, {WEIGHT_BITS[c].start}-{WEIGHT_BITS[c].stop - 1} bits: {WEIGHT_CODE_NOTES[c]}"
            for c in WeightCode
        )
        + " (docs/graph-format.md gives each value set)",
    )
    q.add_argument("--bits-all", action="store_true", help="--bits for the first and the last layer too")
    q.add_argument(
        "--precision", type=Path, help="a JSON file of per-node bits and weight formats (what `potq mixed` writes)"
    )
    q.add_argument("--data", help="dataset path, if it moved since training")
    q.add_argument("--cache", type=folder_path, help=CACHE_ENV_HELP)
    q.set_defaults(func=cmd_quantize)


def _mixed_parser(sub) -> None:
    from potq.accel.arch import COST_ARCH, COST_DATAFLOW
    from potq.ir.codes import WEIGHT_BITS
    from potq.quant.rules import (
        MIXED_ACT_MENU,
        MIXED_CALIB,
        MIXED_CODES,
        MIXED_MENU,
        MIXED_METHODS,
        MIXED_OBJECTIVE,
        MIXED_OBJECTIVES,
        POT_SCHEMES,
        QuantSettings,
    )

    m = sub.add_parser(
        "mixed",
        help="each layer's weight bits and format under an energy, latency or size budget (an exact ILP); "
        "writes precision_<label>.json for quantize --precision",
    )
    m.add_argument("--run", type=Path, required=True, help="run folder written by potq train")
    m.add_argument("--model", help="optional: the run records its model; if given, it must be the same")
    m.add_argument("--scheme", default=QuantSettings.scheme, choices=POT_SCHEMES, help="quantization scheme")
    own = "; ".join(f"{k}: {v}" for k, v in MIXED_OBJECTIVE.items())
    widths = ", ".join(f"{c.value} {r.start}-{r.stop - 1} bits" for c, r in WEIGHT_BITS.items())
    m.add_argument(
        "--objective",
        choices=MIXED_OBJECTIVES,
        help="the cost budgeted, per image: energy with data movement or latency (cycles) on --arch, compute "
        f"energy, size (packed weight bytes) or bit operations (default: the method's, {own})",
    )
    m.add_argument(
        "--budget", type=float, required=True, help="the cost allowed, a fraction of the all-INT8 model's, e.g. 0.5"
    )
    m.add_argument("--arch", default=COST_ARCH, help="the accelerator that prices energy and latency (preset or JSON)")
    m.add_argument("--dataflow", help=f"default: {COST_DATAFLOW} where --arch runs it, else the architecture's first")
    m.add_argument(
        "--menu", help=f"weight bits to choose from, 2-8 (default: {','.join(map(str, MIXED_MENU))})", metavar="BITS"
    )
    m.add_argument(
        "--codes",
        metavar="CODES",
        help=f"weight codes to choose from (default: {','.join(c.value for c in MIXED_CODES)}); each width of the "
        f"menu takes those it can hold ({widths})",
    )
    m.add_argument(
        "--act-menu",
        metavar="BITS",
        help=f"activation bits to choose from for each searched node's input, 2-8 with 8 among them (default: "
        f"{','.join(map(str, MIXED_ACT_MENU))}; 8 alone: weights only)",
    )
    m.add_argument(
        "--method",
        choices=MIXED_METHODS,
        default=MIXED_METHODS[0],
        help="potq: each choice's measured effect on the logits; hawq: HAWQ-V3's baseline, 4- and 8-bit int weights, "
        "Hessian trace x ||W_q - W||^2",
    )
    m.add_argument("--bits-all", action="store_true", help="search the first and the last layer too (else 8-bit int)")
    m.add_argument(
        "--calib", type=int, default=MIXED_CALIB, help="calibration images: the statistics and each choice's effect"
    )
    m.add_argument("--data", help="dataset path, if it moved since training")
    m.add_argument("--cache", type=folder_path, help=CACHE_ENV_HELP)
    m.set_defaults(func=cmd_mixed)


def _verify_parser(sub) -> None:

    v = sub.add_parser("verify", help="integer golden model against the simulated model, bit for bit")
    _quantized_model_args(v)
    v.add_argument(
        "--onnx", action="store_true", help="instead: the ONNX export in onnxruntime against the golden model"
    )
    v.add_argument("--c", action="store_true", help="instead: the C runtime, compiled here, against the golden model")
    v.add_argument(
        "--tvm", action="store_true", help="instead: model.onnx in TVM (llvm) against the golden model (potq[tvm])"
    )
    v.add_argument(
        "--tvm-images", type=int, default=TVM_IMAGES, help="test images the TVM check runs, drawn as for --c-vectors"
    )
    v.add_argument(
        "--c-vectors",
        type=int,
        default=C_VECTORS,
        help="test images the C check runs, drawn across the classes as export draws its vectors",
    )
    _onnx_weights_arg(v)
    v.add_argument("--rtl", action="store_true", help="instead: potq's RTL under Verilator against the golden model")
    v.add_argument("--array", default="16x16", help="--rtl: the systolic array's rows x columns (default: 16x16)")
    v.add_argument("--ppu", type=Path, help="--rtl: your potq_ppu module (a .sv file) in place of potq's")
    v.add_argument(
        "--pe",
        type=Path,
        help="--rtl: your PE module (a .sv file) in place of potq's: potq_pe (--pe-kind mac) or potq_pe_shift (shift)",
    )
    _pe_kind_arg(v, "--rtl")
    v.add_argument("--rtl-vectors", type=int, default=RTL_VECTORS, help="--rtl: test images to simulate")
    v.set_defaults(func=cmd_verify)


def _pe_kind_arg(p, applies: str) -> None:
    from potq.deploy.rtl import PE_KINDS

    p.add_argument(
        "--pe-kind",
        choices=PE_KINDS,
        default=PE_KINDS[0],
        help=f"{applies}: the array's PE: mac (a multiplier fed int8 weight values; default) or shift (the shift-add "
        "PE of one pot/apot format, fed the weights' storage codes: every conv and linear node must share that "
        "format, as quantize --bits-all --weights pot|apot makes)",
    )


def _export_parser(sub) -> None:
    from potq.deploy.formats import FORMAT_CHOICES
    from potq.workflow import RunOptions

    e = sub.add_parser("export", help="integer weights, shifts, C header, hex files and test vectors")
    _quantized_model_args(e)
    e.add_argument("--out", type=Path, required=True, help="export folder (replaced whole)")
    e.add_argument(
        "--vectors", type=int, default=RunOptions.vectors, help="test images with every layer's integer output"
    )
    e.add_argument(
        "--format",
        default="hw",
        help=f"one of {', '.join(FORMAT_CHOICES)} or a comma-separated list (default: hw, hex files and vectors; "
        "rtl: potq's SystemVerilog, its Verilator testbench and memory images)",
    )
    _onnx_weights_arg(e)
    _pe_kind_arg(e, "--format rtl")
    e.add_argument(
        "--force",
        action="store_true",
        help="replace --out even where a file potq wrote there was changed since (never a folder potq did not write)",
    )
    e.set_defaults(func=cmd_export)


def _energy_parser(sub) -> None:
    from potq.quant.rules import QuantSettings
    from potq.recipes import TrainConfig
    from potq.workflow import RunOptions

    en = sub.add_parser("energy", help="op counts and energy per layer, FP32 against INT8")
    en.add_argument("--model", default=TrainConfig.model, help=MODEL_HELP)
    en.add_argument("--run", type=Path, help="cost this run's quantized model (see --scheme) instead of --model")
    en.add_argument("--scheme", default=QuantSettings.scheme, help="with --run: the quantized model's label")
    _model_input_args(en)
    en.add_argument("--linear", type=int, nargs=2, metavar=("IN", "OUT"), help="one Linear layer instead")
    en.add_argument(
        "--act-zero-point",
        type=int,
        choices=[0, SIGNED_ZERO_POINT],
        help="128: the reference convention everywhere; default: potq's (0 after ReLU)",
    )
    en.add_argument("--table", type=Path, help="energy table JSON (default: 45 nm, Horowitz 2014)")
    en.add_argument("--memory", default=RunOptions.memory, help="memory level for weights and activations")
    en.add_argument("--out", type=Path, help="per-layer bar chart (PNG)")
    en.add_argument("--json", action="store_true", help="print JSON instead of tables")
    en.set_defaults(func=cmd_energy)


def _accel_parser(sub) -> None:
    from potq.accel.arch import DEFAULT_ARCH, OVERLAPS, PRESETS  # torch-free
    from potq.quant.rules import QuantSettings
    from potq.recipes import TrainConfig

    ac = sub.add_parser("accel", help="cycles, memory traffic and energy per layer on an accelerator (docs/accel.md)")
    ac.add_argument("--model", default=TrainConfig.model, help=MODEL_HELP + " (its captured graph, at 8 bits)")
    ac.add_argument("--run", type=Path, help="model this run's quantized graph (see --scheme) instead of --model")
    ac.add_argument("--scheme", default=QuantSettings.scheme, help="with --run: the quantized model's label")
    _model_input_args(ac)
    ac.add_argument(
        "--arch", default=DEFAULT_ARCH, help=f"a preset ({', '.join(PRESETS)}) or a JSON file (docs/accel.md)"
    )
    ac.add_argument("--dataflow", help="rs, ws, os or is (default: the architecture's first)")
    ac.add_argument(
        "--objective",
        choices=("latency", "energy", "edp"),
        default="latency",
        help="rs: the best mapping of each layer by this (search.py's tie-break)",
    )
    ac.add_argument("--batch", type=int, default=1, help="images per inference (N)")
    ac.add_argument("--scalesim-compat", action="store_true", help="SCALE-Sim 3.0.0's output-size rule for the cycles")
    ac.add_argument(
        "--overlap",
        choices=OVERLAPS,
        help="none: the levels' serial sum (the lab's); double-buffered: each node's slowest level plus one tile "
        "of the others (default: the architecture's `overlap`, none on every preset)",
    )
    ac.add_argument("--csv", type=Path, help="write the per-layer results as CSV")
    ac.add_argument("--scalesim-out", type=Path, help="write a SCALE-Sim topology, layout and configs into this folder")
    ac.add_argument("--mappings-csv", type=Path, help="rs: every legal mapping of every conv block (the lab's columns)")
    _dse_args(ac)
    ac.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ac.set_defaults(func=cmd_accel)


def _dse_args(p: argparse.ArgumentParser) -> None:
    """accel's design-space sweep (--dse and its sizes)."""
    p.add_argument(
        "--dse", action="store_true", help="sweep PE array, global buffer and dataflow; print the Pareto front"
    )
    p.add_argument("--dse-with", help="--dse: further base architectures, comma-separated (e.g. systolic-16)")
    p.add_argument("--dse-arrays", help="--dse: PE arrays ROWSxCOLS,... (default: each base's halved, own, doubled)")
    p.add_argument("--dse-glb", help="--dse: global buffers in KiB, comma-separated (default: each base's /4, own, x2)")
    p.add_argument("--dse-out", type=Path, help="--dse: latency-vs-energy plot (PNG)")


def _compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="table and chart of every quantized model of a run")
    c.add_argument("--run", type=Path, required=True, help="run folder")
    c.set_defaults(func=cmd_compare)


SUBCOMMANDS = (
    _run_parser,
    _summary_parser,
    _train_parser,
    _quantize_parser,
    _mixed_parser,
    _verify_parser,
    _export_parser,
    _energy_parser,
    _accel_parser,
    _compare_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """Each part imports only torch-free modules: --help and argument errors answer before torch loads. The
    defaults are read from the settings dataclasses (TrainConfig, QuantSettings, RunOptions), never retyped."""
    p = _Parser(prog="potq", description="Compact CNNs from design to integer hardware.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add_subcommand in SUBCOMMANDS:  # in this order in --help
        add_subcommand(sub)
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
