"""A run sized to a time budget: `potq run --quick` (3 minutes) and `potq run --budget DURATION`.

What it claims: `parse_duration` reads a budget ("3m", "90s", "1m30s", "0.5h") or says in one line what is
wrong; `measure` times a few training steps and evaluation batches of the run's own model, recipe and
arithmetic on this machine (its first seconds); `plan` turns those throughputs and the budget into the
run's sizes (epochs, training subset, calibration images, the test images the steps after training
evaluate, the schemes, the exported vectors, the deploy checks' image counts), each with its reason, and
the seconds it expects each step to take. `plan` is pure: tests/test_budget.py drives it with synthetic
throughputs. The cost model's constants are per-image costs relative to one FP32 evaluation image,
measured by benchmarks/budget_costs.py on the "AMD EPYC" of benchmarks/RESULTS.md (section 19), where each
quick look's planned against measured seconds per step are the evidence of how well they hold.
No torch at import (the CLI imports this module for --help).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from potq.jobs import EXPORT_VECTORS
from potq.quant.rules import SCHEMES

QUICK_BUDGET = "3m"  # `potq run --quick`
QUICK_RECIPE = "fast"  # what --quick and --budget train with unless --recipe is given
# and the model unless --model is given: `seed` at half width trains 2-3x more images per second; under
# the fast recipe it reached 0.5878 FP32 (JPEG copy) after 3 epochs of 15,000 images, 0.6416 after 3 of
# 20,000 (QUICK_PASSES image passes; RESULTS.md section 19): the plan trains first until it buys these
QUICK_MODEL = "seed-slim"
QUICK_PASSES = 60_000
# the steps after training always cover the headline scheme (the report, energy, export and deploy read it);
# the others, in this order, where the whole test set still fits: the float-scale peer first (what the
# power-of-two constraint costs), then the per-tensor and the reference lab's schemes
ESSENTIAL_SCHEMES = ("pot-channel",)
MORE_SCHEMES = ("float-channel", "pot-tensor", "float-tensor", "pot-seed")

# ---- the cost model: seconds per image in units of one FP32 evaluation image (1 / evaluate images/s) ----
# measured on `seed` and `seed-slim` (benchmarks/budget_costs.py, RESULTS.md section 19; a shared machine
# gives each within about 2x): the simulated model per test image, by its scales (float
# scales run an unfolded path), and the FP32 model again on the same subset (fp32_metrics)
SIMULATED_COST = {"pot": 1.5, "float": 4.0}
FP32_COST = 1.0
# calibration: the float graph's forward pass gathering every activation's statistics (once per run)
CALIB_COST = 9.0
# verify: golden and simulated models, every value recorded and compared, per power-of-two scheme
VERIFY_COST = 3.5
# deploy: onnxruntime and the golden model on the same test images
ONNX_COST = 4.0
# what no size changes, in FP32 evaluation images' time (a loaded machine is slower at all of it), from the
# steps' seconds against the measured evaluation speed (RESULTS.md section 19): the summary, energy,
# accelerator, export and report steps (capture, plots, files), and the deploy step's builds (onnxruntime's
# session, TVM, the C compiler, Verilator's cached build and its one image)
FIXED_SECONDS, FIXED_EVAL_IMAGES = 3.0, 6000
BUILD_EVAL_IMAGES = 18_000
# the consumers that run tens of images per second (C runtime, one thread; TVM's untuned build): their
# builds cost more than these images
C_VECTORS, TVM_IMAGES = 50, 20
# the training step evaluates these validation images after every epoch, and the whole test set at its end
VAL_IMAGES = 1000

# the sizes' bounds
SAFETY = 0.9  # plan for 90% of the budget: a shared machine's throughput drifts after it is measured
# a whole epoch (data path, augmentation, validation) ran at 0.6-0.8x the measured training speed on the
# shared AMD EPYC (RESULTS.md section 19): the plan counts on this share of it
SUSTAINED = 0.8
MIN_EPOCHS, MAX_EPOCHS = 2, 10  # at most the fast recipe's full run
MIN_TRAIN = 5000  # fewer distinct images overfit within a few epochs
SUBSET_EPOCHS = 3  # below this many passes over the whole training split, train 3 epochs on a subset
MIN_TEST, MIN_CALIB, MAX_CALIB = 500, 128, 1000
POST_SHARE = 0.35  # at most this share of the time left after the fixed part goes to the steps after training
CALIB_SHARE = 0.15  # of that, at most this to calibration
VECTORS = EXPORT_VECTORS  # exported test vectors (every value's integers: cheap, a few MB)


@dataclass(frozen=True)
class Throughput:
    """Images per second on this machine: training (forward, backward, update: the recipe's batch and
    arithmetic) and FP32 evaluation; `seconds`: spent before the plan, from the process's start (Python,
    torch) to the end of measuring."""

    train: float
    evaluate: float
    seconds: float = 0.0


@dataclass
class Plan:
    """The sizes chosen, the seconds each step is expected to take, and why."""

    budget_s: float
    throughput: Throughput
    epochs: int
    train_limit: int
    val_size: int
    calib: int
    test_limit: int | None  # None: the whole test set
    schemes: tuple[str, ...]
    vectors: int
    c_vectors: int
    tvm_images: int
    predicted_s: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "schemes": list(self.schemes)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**{**d, "schemes": tuple(d["schemes"]), "throughput": Throughput(**d["throughput"])})

    def lines(self) -> list[str]:
        """What it chose and why, one line each, as `potq run` prints them."""
        t = self.throughput
        head = (
            f"budget {self.budget_s:.0f} s: measured {t.train:.0f} training and {t.evaluate:.0f} evaluation "
            f"images/s in {t.seconds:.1f} s; planned {sum(self.predicted_s.values()):.0f} s "
            f"({', '.join(f'{k} {v:.0f}' for k, v in self.predicted_s.items())})"
        )
        return [head] + [f"  {k}: {v}" for k, v in self.reasons.items()]


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smh])+|\d+(?:\.\d+)?")


def parse_duration(text: str, flag: str = "--budget") -> float:
    """'3m', '90s', '1m30s', '0.5h', or plain seconds ('180') -> seconds (> 0, at most a week); anything else
    is one line naming the flag (potq.errors.UserError)."""
    from potq.errors import UserError

    s = str(text).strip().lower()
    if not _DURATION.fullmatch(s):
        raise UserError(f"{flag} {text!r}: not a duration; write e.g. 3m, 90s, 1m30s or 0.5h")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh]?)", s)
    seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if not seconds > 0:
        raise UserError(f"{flag} {text!r}: the budget must be more than 0 seconds")
    if seconds > 7 * 24 * 3600:
        raise UserError(f"{flag} {text!r}: more than a week; give --epochs instead")
    return seconds


def plan(tp: Throughput, budget_s: float, train_total: int, test_total: int, deploy: set[str]) -> Plan:
    """The run's sizes for `budget_s` seconds on a machine with throughputs `tp`. `train_total`, `test_total`:
    the data's training and test images; `deploy`: the consumers this machine checks ({"onnx", "c", "tvm"}).
    Training comes first: until it buys QUICK_PASSES image passes, the steps after training get their
    smallest sizes; past that they get up to POST_SHARE of the time, and training the rest."""
    val = min(VAL_IMAGES, train_total // 10)
    fixed = FIXED_SECONDS + FIXED_EVAL_IMAGES / tp.evaluate + BUILD_EVAL_IMAGES / tp.evaluate
    left = max(0.0, SAFETY * budget_s - tp.seconds - fixed)
    need = QUICK_PASSES / (SUSTAINED * tp.train) + (SUBSET_EPOCHS * val + test_total) / tp.evaluate
    smallest = sum(_post_training(tp, 0.0, test_total, deploy)["predicted"].values())
    post = _post_training(tp, max(smallest, min(POST_SHARE * left, left - need)), test_total, deploy)
    train_s = left - sum(post["predicted"].values())
    epochs, limit, train_reason = _training(tp, train_s, train_total - val, val, test_total)
    _within_data(post, tp, limit, test_total)
    train_pred = epochs * (limit / (SUSTAINED * tp.train) + val / tp.evaluate) + test_total / tp.evaluate
    predicted = {"measure": tp.seconds, "train": train_pred, **post.pop("predicted")}
    predicted["deploy"] += BUILD_EVAL_IMAGES / tp.evaluate
    predicted["other steps"] = FIXED_SECONDS + FIXED_EVAL_IMAGES / tp.evaluate
    reasons = {
        "budget": f"{SAFETY:.0%} of {budget_s:.0f} s planned (throughput drifts on a shared machine); "
        f"{fixed:.0f} s for what no size changes (summary, energy, accelerator, export, report, deploy's builds)",
        "train": train_reason,
        "val_size": f"{val:,} validation images: each epoch evaluates them",
        **post.pop("reasons"),
    }
    return Plan(budget_s, tp, epochs, limit, val, predicted_s=predicted, reasons=reasons, **post)


def _training(tp: Throughput, seconds: float, available: int, val: int, test: int) -> tuple[int, int, str]:
    """(epochs, training images, reason): as many image passes as the seconds buy after the validation
    and the final test evaluation; over the whole training split when they make SUBSET_EPOCHS epochs or
    more (up to MAX_EPOCHS), else SUBSET_EPOCHS epochs over a subset (at least MIN_TRAIN images)."""
    evals = (SUBSET_EPOCHS * val + test) / tp.evaluate
    passes = max(0.0, seconds - evals) * SUSTAINED * tp.train
    if passes >= SUBSET_EPOCHS * available:
        epochs, limit = min(MAX_EPOCHS, int(passes // available)), available
    else:
        epochs = SUBSET_EPOCHS
        limit = min(available, max(MIN_TRAIN, int(passes / epochs) // 500 * 500))
    reason = (
        f"{epochs} epochs of {limit:,} images: {max(0.0, seconds):.0f} s at {SUSTAINED * tp.train:.0f} images/s "
        f"(sustained) buy about {passes:,.0f} image passes after {evals:.0f} s of evaluation"
    )
    if epochs * limit > passes * 1.05:
        reason += f" (the smallest plan, {epochs} x {limit:,}, is more: expect the budget to be exceeded)"
    return epochs, limit, reason


def _post_training(tp: Throughput, seconds: float, test_total: int, deploy: set[str]) -> dict:
    """The steps after training within `seconds`: calibration, then the headline scheme on as many test
    images as fit (at least MIN_TEST), and more schemes while the whole test set still fits."""
    e = 1.0 / tp.evaluate  # seconds per FP32 evaluation image
    calib = int(min(MAX_CALIB, max(MIN_CALIB, CALIB_SHARE * seconds / (CALIB_COST * e))) // 32 * 32)
    calib = max(MIN_CALIB, min(calib, MAX_CALIB))
    room = seconds - calib * CALIB_COST * e
    schemes = ESSENTIAL_SCHEMES
    for extra in MORE_SCHEMES:
        if room < test_total * _per_test_image(schemes + (extra,), deploy) * e:
            break
        schemes += (extra,)
    fits = int(room / (_per_test_image(schemes, deploy) * e)) if room > 0 else 0
    test = min(test_total, max(MIN_TEST, fits // 100 * 100))
    pots = sum(1 for s in schemes if SCHEMES[s].pot)
    simulated = sum(SIMULATED_COST["pot" if SCHEMES[s].pot else "float"] + FP32_COST for s in schemes)
    predicted = {
        "quantize": (calib * CALIB_COST + test * simulated) * e,
        "verify": test * pots * VERIFY_COST * e,
        "deploy": test * ONNX_COST * ("onnx" in deploy) * e,
    }
    why = "the whole test set fits" if test == test_total else f"what fits in {max(0.0, room):.0f} s"
    others = "; the others where the whole test set fits" if len(schemes) == len(ESSENTIAL_SCHEMES) else ", and "
    others += "" if len(schemes) == len(ESSENTIAL_SCHEMES) else "what else fits with the whole test set"
    reasons = {
        "schemes": f"{', '.join(schemes)}: the headline {ESSENTIAL_SCHEMES[0]}{others}",
        "test_limit": f"{test:,} test images for quantize, verify and onnxruntime: {why}",
        "calib": f"{calib} calibration images: at most {CALIB_SHARE:.0%} of the {seconds:.0f} s after training",
        "deploy": f"C runtime on {C_VECTORS} images, TVM on {TVM_IMAGES} (where installed), RTL on 1: their "
        "builds cost more than these images",
    }
    return dict(
        calib=calib,
        test_limit=None if test == test_total else test,
        schemes=schemes,
        vectors=VECTORS,
        c_vectors=C_VECTORS,
        tvm_images=TVM_IMAGES,
        predicted=predicted,
        reasons=reasons,
    )


def _within_data(post: dict, tp: Throughput, trained: int, test_total: int) -> None:
    """Every count within the data it draws from: the calibration images within the `trained` training images,
    the exported vectors and the C and TVM checks' images within the test images the run evaluates (a folder of
    a few dozen images plans no more than it has); the calibration's predicted seconds and the reasons follow."""
    test = post["test_limit"] or test_total
    if post["calib"] > trained:
        post["predicted"]["quantize"] -= (post["calib"] - trained) * CALIB_COST / tp.evaluate
        post["calib"] = trained
        post["reasons"]["calib"] = f"{trained} calibration images: every training image of this run"
    for key in ("vectors", "c_vectors", "tvm_images"):
        post[key] = min(post[key], test)
    post["reasons"]["deploy"] = (
        f"C runtime on {post['c_vectors']} images, TVM on {post['tvm_images']} (where installed), RTL on 1: "
        + ("their builds cost more than these images" if post["c_vectors"] < test else "every test image")
    )


def _per_test_image(schemes: tuple[str, ...], deploy: set[str]) -> float:
    """Cost of one more test image for the steps after training, in FP32 evaluation images."""
    pots = sum(1 for s in schemes if SCHEMES[s].pot)
    simulated = sum(SIMULATED_COST["pot" if SCHEMES[s].pot else "float"] + FP32_COST for s in schemes)
    return simulated + pots * VERIFY_COST + ONNX_COST * ("onnx" in deploy)


def measure(model_name: str, shape: tuple[int, ...], classes: int, recipe, min_seconds: float = 2.0) -> Throughput:
    """Training and evaluation images/s of `model_name` on this machine: optimizer steps at the recipe's
    batch size and arithmetic (one untimed warm-up step, then at least 2 and until `min_seconds` have
    passed, at most 6), and potq's own evaluation (potq.train.evaluate) on batches of 250 (one untimed),
    channels-last as potq trains and evaluates. The pixels are random: the speed does not depend on them."""
    import torch
    from torch import nn

    from potq.ir.tensor import nhwc
    from potq.models import build_model
    from potq.train import autocast_bf16
    from potq.train import evaluate as potq_evaluate

    t_start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(model_name, tuple(shape), classes).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    bf16 = autocast_bf16(recipe.precision, torch.device("cpu"))
    x, y = torch.randn(recipe.batch_size, *shape), torch.randint(0, classes, (recipe.batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(nhwc(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train = len(x) / _timed(step, min_seconds)
    xe = torch.randint(0, 256, (250, *shape), dtype=torch.uint8)
    ye = torch.randint(0, classes, (250,))
    stats = [0.5] * shape[0], [0.25] * shape[0]
    per_batch = _timed(lambda: potq_evaluate(model, xe, ye, *stats, batch=len(xe)), min_seconds / 2)
    evaluate = len(xe) / per_batch
    return Throughput(train, evaluate, max(process_seconds(), time.perf_counter() - t_start))


def process_seconds() -> float:
    """Wall seconds since this process started (Linux's /proc; 0 elsewhere): Python and torch starting
    count against a budget too."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _timed(fn, min_seconds: float, least: int = 2, most: int = 6) -> float:
    """Seconds per call of fn: one untimed warm-up call, then `least` to `most` timed calls."""
    fn()
    t0, n = time.perf_counter(), 0
    while n < least or (n < most and time.perf_counter() - t0 < min_seconds):
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def deploy_consumers() -> set[str]:
    """The consumer checks this machine can run (as the deploy step finds them)."""
    from potq.deploy.consumers import available_formats, find_compiler, require_tvm
    from potq.errors import UserError

    found = {"onnx"} if "onnx" in available_formats() else set()
    if find_compiler() is not None:
        found.add("c")
    if found & {"onnx"}:
        try:
            require_tvm()
            found.add("tvm")
        except UserError:
            pass
    return found


def size_run(o) -> Plan:
    """`potq run --budget`: measure this machine (or, resuming a folder without --force, take the plan its
    first call saved), size the run's options `o` (potq.workflow.RunOptions) to the budget and say so."""
    from potq.data import load_dataset
    from potq.errors import UserError
    from potq.files import read_json
    from potq.recipes import TrainConfig
    from potq.runs.paths import PLAN

    budget_s = parse_duration(o.budget)
    saved = o.out / PLAN
    p = None
    if not o.force and saved.exists():
        try:
            p = Plan.from_dict(read_json(saved))
        except (TypeError, KeyError, ValueError, AttributeError):
            raise UserError(f"--out {o.out}: {PLAN} is not a plan potq wrote; use --force or another --out") from None
        if p.budget_s != budget_s:
            p = None
    if p is None:
        ds = load_dataset(o.data, o.cache)
        tp = measure(o.model, ds.shape, len(ds.classes), TrainConfig.from_options(o).recipe_values())
        p = plan(tp, budget_s, len(ds.train_x), len(ds.test_x), deploy_consumers())
        if o.model == QUICK_MODEL and p.epochs * p.train_limit < QUICK_PASSES:
            p.reasons["train"] += (
                f"; fewer than the {QUICK_PASSES:,} passes that gave {QUICK_MODEL} 64% FP32 on CIFAR-10 "
                "(JPEG copy): expect less"
            )
        print("\n".join(p.lines()), flush=True)
    else:
        print(f"budget {budget_s:.0f} s: the plan {saved} holds (its first call measured this machine)")
    o.epochs, o.train_limit, o.val_size, o.calib, o.vectors = p.epochs, p.train_limit, p.val_size, p.calib, p.vectors
    o.test_limit, o.schemes = p.test_limit, p.schemes
    o.plan = p.to_dict()
    return p


def save_plan(plan_dict: dict, out) -> None:
    """plan.json, and the measuring's seconds as the first entry of steps.json (the steps' sum is the wall time)."""
    from potq.files import read_json, save_json
    from potq.runs.paths import PLAN, STEPS

    if (out / PLAN).exists():
        return
    save_json(plan_dict, out / PLAN)
    steps = read_json(out / STEPS) if (out / STEPS).exists() else {}
    entry = {"seconds": plan_dict["throughput"]["seconds"], "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    save_json({"plan": entry, **{k: v for k, v in steps.items() if k != "plan"}}, out / STEPS)
