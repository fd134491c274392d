"""`potq run`: data to report in one command, step by step, resuming what a folder already holds.

Each step writes its own artifacts into the run folder and is skipped when they are there (unless
--force); training resumes from its last checkpoint. steps.json records what ran and how long.
No torch at import: the CLI reads `RunOptions`' defaults for --help (potq.files, which imports torch, is
imported where used).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from potq.errors import StepFailed, UserError
from potq.ir.rules import SIGNED_ZERO_POINT
from potq.jobs import EXPORT_VECTORS
from potq.quant.rules import CALIB_IMAGES, MIXED_METHODS, SCHEMES, QuantSettings
from potq.recipes import TrainConfig
from potq.runs.paths import (
    ACCEL_ENERGY_PNG,
    ACCEL_JSON,
    ACCEL_ROOFLINE_PNG,
    COMPARE_MD,
    COMPARE_PNG,
    CONFIG,
    ENERGY_JSON,
    ENERGY_PNG,
    EXPORT_DIR,
    METRICS,
    PER_MODEL_GLOBS,
    POTQ_FILES,
    PRECISION_PNG,
    RUN_OPTIONS,
    STEPS,
    SUMMARY,
    deploy_json,
    precision_json,
    quant_paths,
    verify_json,
)

if TYPE_CHECKING:  # potq.data imports torch, which --help must not wait for
    from potq.data import Dataset

PTQ_SCHEMES = tuple(SCHEMES)  # `potq run` quantizes in every scheme
# the accelerators the `accel` step models the headline graph on: (architecture preset, dataflow)
ACCEL_RUNS = (("eyeriss", "rs"), ("systolic-16", "os"))
ACCEL_RTL = ("potq-rtl", "os")  # potq's own RTL as an architecture: its cycles are the RTL's
OVERLAP = "double-buffered"  # the report's second reading of each ACCEL_RUNS architecture's time
# --mixed F: potq's search and the HAWQ-V3-style baseline, each under F of the all-INT8 model's energy with data
# movement (potq.jobs.mixed: COST_ARCH, the architecture every model of a run is priced on), on the same weights
RUN_MIXED_OBJECTIVE = "energy"


@dataclass
class RunOptions:
    data: str
    out: Path
    model: str = TrainConfig.model
    epochs: int | None = None
    recipe: str = TrainConfig.recipe
    precision: str | None = None  # None: the recipe's
    qat: int = 0
    qat_scheme: str = QuantSettings.scheme
    qat_lr: float | None = None
    train_limit: int | None = None
    val_size: int = TrainConfig.val_size
    seed: int = TrainConfig.seed
    calib: int = CALIB_IMAGES
    vectors: int = EXPORT_VECTORS
    memory: str = "dram"
    force: bool = False
    cache: Path | None = None
    schemes: tuple[str, ...] = field(default=PTQ_SCHEMES)
    test_limit: int | None = None  # the steps after training evaluate N test images (across the classes)
    budget: str | None = None  # "3m": size the run to this time on this machine (potq.budget)
    plan: dict | None = None  # what the budget chose (potq.budget.Plan.to_dict), filled in by run_all
    mixed: float | None = None  # search each node's precision under this fraction of INT8's energy (potq mixed)

    @property
    def qat_label(self) -> str:
        return QuantSettings(self.qat_scheme).label(qat=True)

    @property
    def headline(self) -> str:
        """The quantized model that the report, energy, accel, export and deploy lead with: potq's mixed model
        with --mixed (once its search has run), else the QAT model with --qat, else the default scheme's."""
        if self.mixed is not None:
            return mixed_label(self, MIXED_METHODS[0]) or QuantSettings.scheme
        return self.qat_label if self.qat else QuantSettings.scheme


def mixed_search(o: RunOptions, method: str):
    """--mixed's question to `potq mixed` for one method (potq.jobs.mixed.Search; the scheme: --qat-scheme)."""
    from potq.jobs.mixed import Search

    baseline = method != MIXED_METHODS[0]  # searched at its cheapest where the budget is below it
    return Search(
        QuantSettings(o.qat_scheme), RUN_MIXED_OBJECTIVE, o.mixed, method=method, raise_to_cheapest=baseline
    ).check()


def mixed_settings(o: RunOptions, method: str) -> QuantSettings | None:
    """The settings of one method's chosen precision, None before its search has written precision_<label>.json."""
    from potq.quant.precision import read_precision

    path = precision_json(o.out, mixed_search(o, method).label())
    return QuantSettings(o.qat_scheme, precision=read_precision(path)) if path.exists() else None


def mixed_label(o: RunOptions, method: str) -> str | None:
    """The label of the model quantized at one method's chosen precision (QAT'd as --qat), None before its
    search has run."""
    settings = mixed_settings(o, method)
    return settings.label(qat=bool(o.qat)) if settings else None


@dataclass
class Now:
    """What is there now, for the steps' checks (potq.runs.provenance): the run's data, loaded once by run_all;
    its fingerprint is hashed on first use (Dataset.digest, about 0.2 s for CIFAR-10)."""

    dataset: Dataset

    @property
    def data(self) -> str:
        return self.dataset.digest


def _summary_step(o: RunOptions, now: Now) -> None:
    from potq.files import save_record
    from potq.ir.capture import capture
    from potq.models import build_model
    from potq.runs.provenance import summary_inputs
    from potq.summary import format_summary, summarize

    ds = now.dataset
    model = build_model(o.model, ds.shape, len(ds.classes))
    # before hours of training: can potq capture this model's graph at all?
    capture(model, ds.shape, [0.0] * ds.shape[0], [1.0] * ds.shape[0])
    s = summarize(model, ds.shape)
    print(format_summary(s))
    inputs = summary_inputs(o.model, now.data)
    record = {**s.to_dict(), "model": o.model, "input_shape": list(ds.shape), "inputs": inputs}
    save_record(record, o.out / SUMMARY)


def _train_step(o: RunOptions) -> None:
    from potq.train import CHECKPOINT
    from potq.train import train as run_training

    out = o.out
    resume = out / CHECKPOINT if (out / CHECKPOINT).exists() else None
    m = run_training(TrainConfig.from_options(o), out, o.cache, resume)
    print(f"test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}")


def _quantize_step(o: RunOptions, now: Now) -> None:
    from potq.jobs.quantize import compare, quantize_run

    out = o.out
    stats: dict = {}  # the calibration statistics, collected once for every scheme
    for scheme in o.schemes:
        if _quant_stale(o, now, scheme):
            r = quantize_run(
                out, QuantSettings(scheme), o.calib, cache=o.cache, stats_cache=stats, test_limit=o.test_limit
            )
            print(f"{scheme}: test accuracy {r['test_accuracy']:.4f} (drop {r['accuracy_drop']:+.2f} points)")
    if o.qat and _quant_stale(o, now, o.qat_label):
        r = quantize_run(
            out, QuantSettings(o.qat_scheme), o.calib, o.qat, o.qat_lr, cache=o.cache, test_limit=o.test_limit
        )
        print(f"{o.qat_label}: test accuracy {r['test_accuracy']:.4f} (drop {r['accuracy_drop']:+.2f} points)")
    print(compare(out))


def _mixed_step(o: RunOptions, now: Now) -> None:
    """Each method's search (again where its file is not of today's weights and data), then its chosen precision
    quantized as the run's other models (QAT as --qat): `potq mixed` and `potq quantize --precision` in one."""
    from potq.jobs.mixed import mixed_lines, mixed_run
    from potq.jobs.quantize import quantize_run

    for method in MIXED_METHODS:
        if _search_stale(o, now, method):
            print("\n".join(mixed_lines(mixed_run(o.out, mixed_search(o, method), cache=o.cache))))
        settings = mixed_settings(o, method)
        label = settings.label(qat=bool(o.qat))
        if _quant_stale(o, now, label):
            r = quantize_run(o.out, settings, o.calib, o.qat, o.qat_lr, cache=o.cache, test_limit=o.test_limit)
            print(f"{label}: test accuracy {r['test_accuracy']:.4f} (drop {r['accuracy_drop']:+.2f} points)")


def _search_stale(o: RunOptions, now: Now, method: str) -> str | None:
    """Why a method's precision file must be searched (again): missing, or not of today's weights and data."""
    from potq.runs.provenance import derived_change, quantized_inputs

    return derived_change(precision_json(o.out, mixed_search(o, method).label()), quantized_inputs(o.out, now.data))


def _mixed_labels(o: RunOptions) -> list[str | None]:
    return [mixed_label(o, m) for m in MIXED_METHODS] if o.mixed is not None else []


def _quant_stale(o: RunOptions, now: Now, label: str | None) -> str | None:
    """Why quant_<label> must be made (again): see potq.runs.provenance.quantized_change."""
    from potq.runs.provenance import quantized_change

    if label is None:  # a mixed model whose search has not run
        return "its precision is not searched yet"
    options = {"--calib": ("calib_images", o.calib), "--rounding": ("rounding", QuantSettings.rounding.label)}
    if o.qat and (label == o.qat_label or label in _mixed_labels(o)):
        options["--qat"] = ("qat_epochs", o.qat)
    return quantized_change(o.out, label, now.data, options)


def _verify_stale(o: RunOptions, now: Now, label: str) -> str | None:
    """Why verify_<label>.json must be made (again): missing, or not of today's quantized model and data."""
    from potq.runs.provenance import derived_change, derived_inputs

    return derived_change(verify_json(o.out, label), derived_inputs(o.out, label, now.data))


def _verify_step(o: RunOptions, now: Now) -> None:
    from potq.jobs.verify import verify_run

    for name in _pot_labels(o):
        if not _verify_stale(o, now, name):
            continue
        r = verify_run(o.out, name, None, o.cache, test_limit=o.test_limit)
        print(
            f"{name}: {r['mismatches']} mismatching values of {r['compared_values']:,}; "
            f"golden accuracy {r['golden_accuracy']:.4f}"
        )
        if r["mismatches"]:
            raise StepFailed(f"verify: golden and simulated {name} differ in {r['mismatches']} values")


def _energy_step(o: RunOptions) -> None:
    from potq import energy as en
    from potq.files import save_record
    from potq.runs.provenance import derived_inputs
    from potq.runs.quantized import read_quantized

    table = en.load_table()
    graph, _, quant_sha256 = read_quantized(o.out, o.headline)
    r = en.report(en.graph_costs(graph), table, o.memory)
    r["scheme"] = o.headline
    r["inputs"] = derived_inputs(o.out, o.headline, quant_sha256=quant_sha256)
    r["linear_example"] = {str(zp): en.linear_example(128, 10, zp, table) for zp in (SIGNED_ZERO_POINT, 0)}
    r["markdown"] = en.format_report(r)
    en.plot_report(r, o.out / ENERGY_PNG)
    save_record(r, o.out / ENERGY_JSON)
    print(r["markdown"])
    from potq.jobs.costs import price_run

    price_run(o.out)  # every quantized model at its own precision: the report's Precision section


def _accel_step(o: RunOptions) -> None:
    from potq.accel.arch import load_arch
    from potq.accel.model import accel_report, format_table
    from potq.accel.plots import plot_energy_levels, plot_roofline
    from potq.files import save_record
    from potq.runs.provenance import derived_inputs
    from potq.runs.quantized import read_quantized

    out = o.out
    graph, _, quant_sha256 = read_quantized(out, o.headline)
    reports = [accel_report(graph, load_arch(arch), df) for arch, df in ACCEL_RUNS]
    plot_roofline(reports, out / ACCEL_ROOFLINE_PNG)
    plot_energy_levels(reports, out / ACCEL_ENERGY_PNG)
    inputs = derived_inputs(out, o.headline, quant_sha256=quant_sha256)
    record = {"scheme": o.headline, "reports": reports, "inputs": inputs, "timings": _accel_timings(graph, reports)}
    save_record(record, out / ACCEL_JSON)  # last: the step's done mark
    for r in reports:
        print(format_table(r) + "\n")


def _accel_timings(graph, reports: list[dict]) -> dict[str, dict[str, int]]:
    """The whole network's cycles under each reading of time (issue 30): each ACCEL_RUNS architecture's serial sum
    of its levels (the lab's: `reports`, made as the presets say) and with its levels double-buffered (the slowest
    level plus one tile of the others, and the array's stall), and potq's own RTL (ACCEL_RTL: the cycles
    `verify --rtl` counts)."""
    from dataclasses import replace

    from potq.accel.arch import load_arch
    from potq.accel.model import accel_report

    def cycles(r: dict) -> dict[str, int]:
        return {k: r["total"]["cycles"][k] for k in ("latency", "stall")}

    out = {}
    for (arch, df), serial in zip(ACCEL_RUNS, reports, strict=True):
        out[f"{arch} ({df}), {load_arch(arch).overlap}"] = cycles(serial)
        out[f"{arch} ({df}), {OVERLAP}"] = cycles(accel_report(graph, replace(load_arch(arch), overlap=OVERLAP), df))
    out[f"{ACCEL_RTL[0]} ({ACCEL_RTL[1]})"] = cycles(accel_report(graph, load_arch(ACCEL_RTL[0]), ACCEL_RTL[1]))
    return out


def _export_step(o: RunOptions) -> None:
    from potq.deploy.consumers import available_formats
    from potq.jobs.export import export_run

    r = export_run(o.out, o.headline, o.out / EXPORT_DIR, o.vectors, None, o.cache, available_formats())
    print(f"exported {r['nodes']} nodes and {r['vectors']} test vectors ({', '.join(r['formats'])}) -> {r['out']}")


def _deploy_step(o: RunOptions) -> None:
    from potq.jobs.deploy import deploy_checks, deploy_summary

    counts = {k: o.plan[k] for k in ("c_vectors", "tvm_images")} if o.plan else {}
    for line in deploy_summary(deploy_checks(o.out, o.headline, o.cache, o.test_limit, **counts)):
        print(line)


def _report_step(o: RunOptions) -> None:
    from potq.report import write_report

    write_report(o.out)
    print(f"report -> {o.out / 'report.md'}, {o.out / 'report.html'}")


@dataclass
class Step:
    name: str
    present: Callable[[], bool]  # are its artifacts there?
    stale: Callable[[], str | None]  # then, why they are not what is there now would make (None: they are)
    do: Callable[[], None]


def _steps(o: RunOptions, now: Now) -> list[Step]:
    """Every step, in order: a step is done when its artifacts are there and made from what is there now
    (potq.runs.provenance); else it runs, or runs again."""
    from potq.deploy.export import EXPORT_KIND, MODEL_JSON
    from potq.files import missing_written
    from potq.jobs.costs import priced_change
    from potq.runs.provenance import derived_change, derived_inputs, summary_inputs

    out = o.out

    def head() -> str:  # the headline is known once the mixed step has searched
        return o.headline

    missing = partial(_missing, out)
    return [
        Step(
            "summary",
            (out / SUMMARY).exists,
            lambda: derived_change(out / SUMMARY, summary_inputs(o.model, now.data)),
            partial(_summary_step, o, now),
        ),
        Step("train", (out / METRICS).exists, partial(_training_stale, o, now), partial(_train_step, o)),
        Step(
            "quantize",
            lambda: all(quant_paths(out, s)[1].exists() for s in _all_labels(o)),
            lambda: _first(_quant_stale(o, now, s) for s in _all_labels(o)) or missing(COMPARE_MD, COMPARE_PNG),
            partial(_quantize_step, o, now),
        ),
        *_mixed_steps(o, now),
        Step(
            "verify",
            lambda: all(verify_json(out, s).exists() for s in _pot_labels(o)),  # --mixed's, once searched
            lambda: _first(_verify_stale(o, now, s) for s in _pot_labels(o)),
            partial(_verify_step, o, now),
        ),
        Step(
            "energy",
            (out / ENERGY_JSON).exists,
            lambda: (
                derived_change(out / ENERGY_JSON, derived_inputs(out, head()))
                or priced_change(out)
                or missing(ENERGY_PNG, PRECISION_PNG)
            ),
            partial(_energy_step, o),
        ),
        Step(
            "accel",
            (out / ACCEL_JSON).exists,
            lambda: (
                derived_change(out / ACCEL_JSON, derived_inputs(out, head()))
                or missing(ACCEL_ROOFLINE_PNG, ACCEL_ENERGY_PNG)
            ),
            partial(_accel_step, o),
        ),
        Step(
            "export",
            (out / EXPORT_DIR / MODEL_JSON).exists,
            lambda: (
                derived_change(
                    out / EXPORT_DIR / MODEL_JSON, derived_inputs(out, head(), now.data), ("quantized_model",)
                )
                or missing_written(out / EXPORT_DIR, EXPORT_KIND)
            ),
            partial(_export_step, o),
        ),
        Step(
            "deploy",
            lambda: deploy_json(out, head()).exists(),
            lambda: derived_change(deploy_json(out, head()), derived_inputs(out, head(), now.data)),
            partial(_deploy_step, o),
        ),
        Step("report", lambda: False, lambda: None, partial(_report_step, o)),
    ]


def _mixed_steps(o: RunOptions, now: Now) -> list[Step]:
    """--mixed: the search and the chosen models, after the other quantized models, before the golden check."""
    if o.mixed is None:
        return []

    def present() -> bool:
        return all(label and quant_paths(o.out, label)[1].exists() for label in _mixed_labels(o))

    def stale() -> str | None:
        return _first(_search_stale(o, now, m) for m in MIXED_METHODS) or _first(
            _quant_stale(o, now, label) for label in _mixed_labels(o)
        )

    return [Step("mixed", present, stale, partial(_mixed_step, o, now))]


def _first(reasons) -> str | None:
    return next((r for r in reasons if r), None)


def _missing(out: Path, *names: str) -> str | None:
    """A step whose output files are not all there is not done (its record alone does not make it so)."""
    return next((f"{name} is missing" for name in names if not (out / name).exists()), None)


def _training_stale(o: RunOptions, now: Now) -> None:
    """A finished training made from other inputs than those there now is the user's work: never redone
    silently, refused with one line naming what changed."""
    from potq.runs.provenance import training_change

    reason = training_change(o.out, o.model, now.data)
    if reason:
        raise UserError(f"--out {o.out}: {reason}; use --force to train again there, or another --out")


def _all_labels(o: RunOptions) -> list[str]:
    """The quantize step's models (the mixed step's are its own)."""
    return list(o.schemes) + ([o.qat_label] if o.qat else [])


def _pot_labels(o: RunOptions) -> list[str]:
    """The power-of-two models: the golden model checks these (QAT fine-tunes one, --mixed searches over one:
    check_options); a mixed model whose search has not run yet is left out."""
    return [s for s in _all_labels(o) if s == o.qat_label or SCHEMES[s].pot] + [
        label for label in _mixed_labels(o) if label
    ]


def check_options(o: RunOptions) -> None:
    from potq.train import check_config

    check_config(TrainConfig.from_options(o))
    if o.qat < 0:
        raise UserError(f"--qat must be >= 0, got {o.qat}")
    if o.qat_scheme not in SCHEMES or not SCHEMES[o.qat_scheme].pot:
        raise UserError(f"--qat-scheme must be a power-of-two scheme, got {o.qat_scheme!r}")
    if o.calib < 1 or o.vectors < 1:
        raise UserError("--calib and --vectors must be at least 1")
    if o.test_limit is not None and o.test_limit < 1:
        raise UserError(f"--test-limit must be at least 1, got {o.test_limit}")
    unknown = [s for s in o.schemes if s not in SCHEMES]
    if unknown or not o.schemes:
        raise UserError(f"--schemes: {', '.join(unknown) or 'none given'}; choose from {', '.join(PTQ_SCHEMES)}")
    if not o.qat and o.mixed is None and o.headline not in o.schemes:
        raise UserError(f"--schemes must include {o.headline}: the energy, export and deploy steps use it")
    if o.mixed is not None:
        mixed_search(o, MIXED_METHODS[0])  # the budget and the scheme, checked before the first step
    if o.qat_lr is not None and not o.qat_lr > 0:
        raise UserError(f"--qat-lr must be positive, got {o.qat_lr}")
    from potq.energy import load_table

    levels = load_table().memory
    if o.memory not in levels:
        raise UserError(f"--memory {o.memory!r} is not in the energy table; choose from {', '.join(levels)}")
    if o.data != "cifar10" and not Path(o.data).exists():
        raise UserError(f"--data {o.data}: no such file or directory")
    if not o.force:
        check_same_question(o)


def check_sizes(o: RunOptions, train_images: int, test_images: int) -> None:
    """The options of later steps that the data bounds, checked before the first step rather than an hour
    into the run: the validation split, the calibration images, the test vectors."""
    if not 0 <= o.val_size < train_images:
        raise UserError(
            f"--val-size must be in [0, {train_images - 1}] for these {train_images} images, got {o.val_size}"
        )
    trained_on = min(train_images - o.val_size, o.train_limit or train_images)
    if o.calib > trained_on:
        raise UserError(f"--calib {o.calib} is more than the {trained_on} training images of this run")
    if o.vectors > test_images:
        raise UserError(f"--vectors {o.vectors} is more than the {test_images} test images")


# every option that determines a step's result: a folder answers only the question it was made for
RESULT_OPTIONS = (
    "model",
    "data",
    "epochs",
    "recipe",
    "train_limit",
    "val_size",
    "seed",
    "calib",
    "qat",
    "qat_scheme",
    "qat_lr",
    "vectors",
    "memory",
    "schemes",
    "test_limit",
    "mixed",
)


def result_options(o: RunOptions) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(o, k)) for k in RESULT_OPTIONS)}


def check_same_question(o: RunOptions) -> None:
    """A folder made with other options is not resumed: stop with one line naming the first that differs."""
    from potq.files import read_json

    path = o.out / RUN_OPTIONS
    try:
        saved = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        raise UserError(f"--out {o.out}: {RUN_OPTIONS} is not readable; use --force or another --out") from None
    if saved is not None and not isinstance(saved, dict):
        raise UserError(f"--out {o.out}: {RUN_OPTIONS} is not a run record (edited?); use --force or another --out")
    if saved is None:  # a folder of potq 0.1, or of `potq train`: its model at least must match
        config = o.out / CONFIG
        saved = {"model": read_json(config).get("model")} if config.exists() else {}
    current = result_options(o)
    for key, value in saved.items():
        if key in current and current[key] != value:
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"--out {o.out} holds a run made with {flag} {value!r}, not {current[key]!r}; "
                "use --force to redo it there, or another --out"
            )


def clear(out: Path) -> None:
    """--force: remove what earlier runs of potq wrote (and nothing else); an export folder that holds
    files potq did not write stops it before anything is removed."""
    from potq.deploy.export import EXPORT_KIND
    from potq.files import check_output_dir

    if (out / EXPORT_DIR).exists():
        check_output_dir(out / EXPORT_DIR, EXPORT_KIND)
    for name in POTQ_FILES:
        (out / name).unlink(missing_ok=True)
    for pattern in PER_MODEL_GLOBS:
        for p in out.glob(pattern):
            p.unlink()
    if (out / EXPORT_DIR).exists():
        shutil.rmtree(out / EXPORT_DIR)


def run_all(o: RunOptions) -> dict:
    from potq.models import model_spec

    o.model = model_spec(o.model)
    if o.data != "cifar10":
        o.data = str(Path(o.data).resolve())
    if o.budget is not None:  # measure this machine, size the run (or take the plan a first call saved)
        from potq.budget import size_run

        size_run(o)
    check_options(o)
    from potq.data import load_dataset

    ds = load_dataset(o.data, o.cache)  # the summary step's load, a cache hit from here on
    check_sizes(o, len(ds.train_x), len(ds.test_x))
    created = not o.out.exists()
    o.out.mkdir(parents=True, exist_ok=True)
    from potq.files import folder_lock

    try:
        with folder_lock(o.out, "--out"):
            if o.force:
                clear(o.out)
            if o.plan is not None:
                from potq.budget import save_plan

                save_plan(o.plan, o.out)
            return _run_steps(o, Now(ds))
    except BaseException:
        # a first run stopped before its first step finished leaves no folder behind
        if created and {p.name for p in o.out.iterdir()} <= {RUN_OPTIONS}:
            shutil.rmtree(o.out, ignore_errors=True)
        raise


def _run_steps(o: RunOptions, now: Now) -> dict:
    from potq.files import read_json, save_json

    save_json(result_options(o), o.out / RUN_OPTIONS)
    steps_path = o.out / STEPS
    times = read_json(steps_path) if steps_path.exists() else {}
    steps = _steps(o, now)
    for k, step in enumerate(steps, 1):
        present = step.present()
        stale = step.stale() if present else None
        if present and not stale:
            print(f"[{k}/{len(steps)}] {step.name}: already done")
            continue
        print(f"[{k}/{len(steps)}] {step.name} ..." + (f" again: {stale}" if stale else ""), flush=True)
        t0 = time.perf_counter()
        try:
            step.do()
        except UserError as e:
            raise UserError(f"step {step.name} failed: {e}") from None
        except StepFailed:
            raise
        except OSError as e:  # a full disk, a file the user's system refuses: one line naming it, exit 2
            where = f"{e.filename}: " if e.filename else ""
            raise UserError(f"step {step.name} failed: {where}{e.strerror or e}") from None
        except Exception as e:  # a bug or a broken environment: still one line, naming the step
            raise StepFailed(f"step {step.name} failed: {type(e).__name__}: {e}") from e
        times[step.name] = {"seconds": time.perf_counter() - t0, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        save_json(times, steps_path)
    return times
