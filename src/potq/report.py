"""report.md and report.html from a run folder: the reference lab report's sections, and more.

Every number comes from the folder's own artifacts (summary.json, history.csv, metrics.json,
quant_*.json, verify_*.json, energy.json, steps.json); the text around them is computed from the
numbers, never boilerplate.
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass
from pathlib import Path

import markdown

from potq.deploy.export import MODEL_JSON
from potq.energy import MODELS, fmt
from potq.files import read_json, read_record, save_text
from potq.ir.rules import Rounding
from potq.jobs.costs import front, precision_words
from potq.jobs.quantize import change
from potq.quant.rules import SCHEMES, QuantSettings
from potq.recipes import RECIPES
from potq.runs.paths import (
    ACCEL_ENERGY_PNG,
    ACCEL_JSON,
    ACCEL_ROOFLINE_PNG,
    COMPARE_PNG,
    CONFIG,
    CURVES,
    ENERGY_JSON,
    ENERGY_PNG,
    EXPORT_DIR,
    HISTORY,
    METRICS,
    PLAN,
    PRECISION_JSON,
    PRECISION_PNG,
    QUANT_GLOB,
    REPORT_HTML,
    REPORT_MD,
    SEARCH_GLOB,
    STEPS,
    SUMMARY,
    THIRD_PARTY_LOG,
    VERIFY_GLOB,
    deploy_json,
    label_of,
)
from potq.summary import LayerRow, Summary, format_summary

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222;
       line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
.scroll { overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; }
th { background: #f0f0f0; }
td { text-align: right; } td:first-child { text-align: left; }
img { max-width: 100%; }
code { background: #f5f5f5; padding: 0 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
@media print { body { max-width: none; margin: 0; } table, img { page-break-inside: avoid; }
               .scroll { overflow: visible; } }
"""


def _read(path: Path) -> dict | None:
    """A record, or None where there is none yet. A record that is there is read whole: an empty or cut one
    is one line naming the field it lacks (potq.files.Record), never a section quietly left out; one edited
    after potq wrote it is one line too (potq.files.read_record), never a figure shown as potq's."""
    return read_record(path) if path.exists() else None


def overfitting(history: list[dict]) -> str:
    """Where validation loss bottoms out and how far train and validation drift apart."""
    if len(history) < 2:
        return "One epoch only: no trend to analyse."
    val = [h["val_loss"] for h in history]
    best = min(range(len(val)), key=val.__getitem__)
    last = history[-1]
    gap_acc = 100 * (last["train_acc"] - last["val_acc"])
    gap_loss = last["val_loss"] - last["train_loss"]
    lines = [
        f"- Validation loss is lowest at epoch {history[best]['epoch']} ({val[best]:.4f}); "
        f"at the last epoch ({last['epoch']}) it is {val[-1]:.4f}"
        + (f", {100 * (val[-1] / val[best] - 1):.1f}% above its minimum." if val[-1] > val[best] else ", its minimum."),
        f"- Training loss falls from {history[0]['train_loss']:.4f} to {last['train_loss']:.4f}; "
        f"the validation-minus-training loss gap ends at {gap_loss:+.4f}.",
        f"- Training accuracy ends at {100 * last['train_acc']:.2f}%, validation at {100 * last['val_acc']:.2f}%: "
        f"a gap of {gap_acc:.2f} points.",
    ]
    best_acc = max(range(len(history)), key=lambda i: history[i]["val_acc"])
    lines.append(
        f"- Validation accuracy peaks at epoch {history[best_acc]['epoch']} "
        f"({100 * history[best_acc]['val_acc']:.2f}%)."
    )
    if gap_acc > 5 and val[-1] > 1.05 * val[best]:
        verdict = (
            "**Overfitting**: the model keeps fitting the training set after the validation loss stopped "
            "improving; more augmentation, weight decay or fewer epochs would help."
        )
    elif gap_acc > 5:
        verdict = (
            "**Mild overfitting**: a clear train/validation gap, but the validation loss did not turn "
            "upwards: the cosine schedule ends near its best point."
        )
    else:
        verdict = "**No clear overfitting**: training and validation stay close."
    return "\n".join(lines + ["", verdict])


def _history(run: Path) -> list[dict]:
    with open(run / HISTORY) as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _summary_md(s: dict) -> str:
    rows = [LayerRow(**r) for r in s["layers"]]
    return format_summary(
        Summary(rows, s["total_params"], s["trainable_params"], s["input_mb"], s["forward_backward_mb"], s["params_mb"])
    )


def _layer_exponents(q: dict) -> str:
    lines = [
        "| Node | Op | Input exp. (zp) | Weight exp. | Output exp. (zp) | Right shift | Output |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in q["layers"]:
        w = r["weight_exponent"] or []
        w_text = f"{min(w)}..{max(w)}" if w and min(w) != max(w) else (str(w[0]) if w else "-")
        shift = "-" if r["shift_range"] is None else str(r["shift_range"])
        if r.get("align") and any(r["align"]):
            shift += f" (align {'/'.join(str(a) for a in r['align'])})"
        inp = "-" if r["input_exponent"] is None else f"{r['input_exponent']} ({r['input_zero_point']})"
        out = "-" if r["output_exponent"] is None else f"{r['output_exponent']} ({r['output_zero_point']})"
        lines.append(f"| {r['name']} | {r['type']} | {inp} | {w_text} | {out} | {shift} | {r['output']} |")
    return "\n".join(lines)


@dataclass
class Records:
    """Everything in a run folder that the report reads, read once."""

    run: Path
    summary: dict | None
    metrics: dict | None
    config: dict
    steps: dict
    quants: dict[str, dict]  # by label
    verifies: dict[str, dict]
    energy: dict | None

    @classmethod
    def read(cls, run: Path) -> Records:
        return cls(
            run,
            _read(run / SUMMARY),
            _read(run / METRICS),
            _read(run / CONFIG) or {},
            _read(run / STEPS) or {},
            {label_of(p): read_record(p) for p in sorted(run.glob(QUANT_GLOB))},
            {label_of(p): read_record(p) for p in sorted(run.glob(VERIFY_GLOB))},
            _read(run / ENERGY_JSON),
        )

    @property
    def pot(self) -> dict[str, dict]:
        """The quantized models with power-of-two scales."""
        return {k: v for k, v in self.quants.items() if (s := SCHEMES.get(v["scheme"])) is not None and s.pot}

    @property
    def best(self) -> str | None:
        """The most accurate power-of-two model at 8-bit int weights and activations throughout."""
        pot = {k: v for k, v in self.pot.items() if precision_words(v) == ("8/8", "int")}
        return max(pot, key=lambda k: pot[k]["test_accuracy"]) if pot else None


def build_markdown(run: Path) -> str:
    r = Records.read(run)
    sections = (
        _title,
        _headline,
        _steps_table,
        _architecture,
        _training,
        _training_config,
        _quantization,
        _precision,
        _energy,
    )
    out = [line for section in sections for line in section(r)]
    out += _export_section(run)
    out += _accelerator(run)
    return "\n".join(out)


def _title(r: Records) -> list[str]:
    jpeg = "jpeg" in str(r.config.get("data", "")).lower()
    data_note = " (measured on the JPEG copy of CIFAR-10)" if jpeg else ""
    out = [
        f"# potq report: `{r.config.get('model', '?')}` on {Path(str(r.config.get('data', '?'))).name}{data_note}",
        "",
    ]
    m = r.metrics
    if m is not None and (r.config.get("train_limit") or m["epochs"] < RECIPES["seed"].epochs):
        out += [
            f"> **Quick look**: {m['epochs']} epoch(s) on {m['train_images']:,} training images, not the "
            f"reference recipe's {RECIPES['seed'].epochs} epochs on the whole training set: its accuracies show "
            "that the path works, not what the model can reach.",
            "",
        ]
    return out + _plan_note(r.run)


def _plan_note(run: Path) -> list[str]:
    """A run sized to a time budget (`potq run --budget`): what it chose, from plan.json."""
    plan = _read(run / PLAN)
    if plan is None:
        return []
    tp, why = plan["throughput"], plan["reasons"]
    return [
        f"> **Sized to a budget of {plan['budget_s']:.0f} s** on this machine ({tp['train']:.0f} training and "
        f"{tp['evaluate']:.0f} evaluation images/s measured; plan.json): {why['train']}; {why['test_limit']}; "
        f"schemes {', '.join(plan['schemes'])}.",
        "",
    ]


def _headline(r: Records) -> list[str]:
    m, energy, best = r.metrics, r.energy, r.best
    if m is None:
        return []
    head = [
        "| | Value |",
        "|---|---:|",
        f"| FP32 test accuracy | {100 * m['test_accuracy']:.2f}% |",
        f"| FP32 model size | {m['model_size_mb']:.2f} MB |",
    ]
    if best:
        q = r.pot[best]
        n = q.get("test_images", m.get("test_images"))
        subset = f" (on {n:,} test images)" if n != m.get("test_images") else ""  # potq run --budget
        same = f" (FP32 on the same {n:,} test images)" if subset else ""
        head += [
            f"| Best INT8 power-of-two ({best}) test accuracy{subset} | {100 * q['test_accuracy']:.2f}% |",
            f"| Change against FP32{same} | {change(q['accuracy_drop'])} points |",
            f"| INT8 model size | {q['model_size_mb']:.6f} MB |",
        ]
    if energy is not None:
        ratios = energy["ratios"]
        model = energy.get("scheme", "INT8 power-of-two")  # the headline model it costed (--mixed: not 8-bit)
        head.append(f"| Compute energy FP32 / {model} | {ratios['compute_fp32_over_int8_pot']:.1f}x |")
        head.append(
            f"| Total energy with memory ({energy['memory_level']}) | {ratios['total_fp32_over_int8_pot']:.1f}x |"
        )
    for name, v in r.verifies.items():
        head.append(f"| Golden model ({name}) | {v['mismatches']} mismatches in {v['compared_values']:,} values |")
    return head + [""]


def _steps_table(r: Records) -> list[str]:
    steps = r.steps
    if r.metrics is not None and "train" not in steps:  # trained before `potq run` took over the folder
        steps = {"summary": steps.get("summary", {"seconds": 0.0}), "train": {"seconds": r.metrics["seconds"]}, **steps}
    if not steps:
        return []
    return [
        "| Step | Wall time |",
        "|---|---:|",
        *(f"| {name} | {s['seconds']:.1f} s |" for name, s in steps.items()),
        "",
    ]


def _architecture(r: Records) -> list[str]:
    return ["## 1. Model architecture", "", _summary_md(r.summary) if r.summary is not None else "(no summary yet)", ""]


def _training(r: Records) -> list[str]:
    m = r.metrics
    if m is None:
        return ["## 2. Training", "", "(not trained yet)", ""]
    return [
        "## 2. Training",
        "",
        *([f"![Loss and accuracy curves]({CURVES})", ""] if (r.run / CURVES).exists() else []),
        "| Metric | Value |",
        "|---|---:|",
        f"| Test loss | {m['test_loss']:.4f} |",
        f"| Test accuracy | {m['test_accuracy']:.4f} |",
        f"| Model size (saved FP32 weights) | {m['model_size_mb']:.2f} MB |",
        "",
        "### Overfitting",
        "",
        overfitting(_history(r.run)),
        "",
    ]


def _training_config(r: Records) -> list[str]:
    m = r.metrics
    if m is None:
        return ["## 3. Training configuration", ""]
    rc = m["recipe"]
    augs = (
        f"random crop (padding {rc['crop_pad']})" if rc["crop_pad"] else "",
        "horizontal flip" if rc["flip"] else "",
    )
    aug = ", ".join(a for a in augs if a) or "none"
    loss = "CrossEntropyLoss()" + (f" with label smoothing {rc['label_smoothing']}" if rc["label_smoothing"] else "")
    return [
        "## 3. Training configuration",
        "",
        "| Hyperparameter | Value |",
        "|---|---|",
        f"| Loss function | `{loss}` |",
        f"| Optimizer | `SGD(lr={rc['lr']}, momentum={rc['momentum']}, weight_decay={rc['weight_decay']}"
        f"{', nesterov=True' if rc['nesterov'] else ''})` |",
        f"| Scheduler | {schedule_text(rc)} |",
        f"| Training arithmetic | {m.get('training_arithmetic', 'fp32')} (weights and evaluation float32) |",
        f"| Weight decay / momentum | {rc['weight_decay']} / {rc['momentum']} |",
        f"| Epochs | {rc['epochs']} |",
        f"| Batch size | {rc['batch_size']} |",
        f"| Augmentation | {aug} |",
        f"| Seed | {r.config.get('seed')} |",
        f"| Data | {r.config.get('data')}: {m['train_images']:,} training, {m['val_images']:,} "
        f"validation, {m['test_images']:,} test images |",
        f"| Training time | {m['seconds'] / 60:.1f} min |",
        f"| Machine | {m['machine']} ({m['world_size']} process(es), {m['device']}) |",
        "",
    ]


QUANTIZATION_TEXT = [
    "Weights are int8, symmetric in [-127, 127] with zero point 0; activations are uint8. Every scale is a "
    "power of two, s = 2^e, so requantizing an int32 accumulator (unit 2^(e_in + e_w)) to the next layer's "
    "scale 2^e_out is a right shift by e_out - e_in - e_w with rounding, then a clamp; ReLU is the clamp's "
    "lower bound and BatchNorm is folded into the convolution. The bias is int32 at scale s_in * s_w.",
    "",
    "- `pot-seed` is the reference report's rule: zero point 128 everywhere, e = round(log2(2 max|x| / q_max)).",
    "- `pot-tensor` / `pot-channel` use zero point 0 after ReLU (double resolution, no zero-point "
    "subtraction) and 128 for the signed input; the exponent is e = ceil(log2(max|x| / q_max)) by default, "
    "which never clips (`--exponent round` and `--exponent mse`, least squared error over ceil and the two "
    "finer exponents, are the alternatives).",
    "- `float-*` are the baselines with ordinary float scales (a multiplier per output in hardware).",
    "",
]


def _quantization(r: Records) -> list[str]:
    out = ["## 4. Power-of-two quantization", "", *QUANTIZATION_TEXT]
    if r.quants and r.metrics is not None:  # the table made from the records, as compare.md was
        from potq.jobs.quantize import compare_table

        table = compare_table(r.metrics, list(r.quants.values()))
        out += ["### Scheme comparison", "", table, "", "![Scheme comparison](compare.png)", ""]
    if r.best:
        q = r.pot[r.best]
        out += [
            f"### Exponents and shifts of `{r.best}` (input exponent {q['input_exponent']}, zero point "
            f"{q['input_zero_point']}, rounding {q['rounding']})",
            "",
            _layer_exponents(q),
            "",
        ]
    return out + _golden_table(r.verifies)


def _precision(r: Records) -> list[str]:
    """Every quantized model's precision, accuracy, size and modeled energy (precision.json, which `potq run`'s
    energy step and `potq compare` write; an entry of a model quantized again since is left out)."""
    saved = _read(r.run / PRECISION_JSON) or {}
    priced = {
        k: p for k, p in saved.items() if k in r.quants and p.get("quant_sha256") == r.quants[k].get("quant_sha256")
    }
    if not priced or any(not isinstance(p.get("cycles"), int) for p in priced.values()):  # priced before 0.5
        return []
    arch = next(iter(priced.values()))["arch"]
    on_front = {cost: set(front(priced, cost)) for cost in ("energy_pj", "cycles")}
    out = [
        "### Precision: accuracy against size, energy and latency",
        "",
        "Every power-of-two quantized model of this run at its bits and weight format (docs/graph-format.md): its "
        "packed weights and int32 biases, its compute energy (45 nm table, its own formats), its energy and "
        f"latency per image on {arch} (the accelerator model, every level's bytes at the values' bits), whether it "
        "is on the front of accuracy against either (no other model as cheap and as accurate), and what the "
        "golden model found (verify).",
        "",
        "| Model | Bits (W/A) | Weights | Test accuracy | Packed weights (kB) | Compute (uJ) | With data movement (uJ) "
        "| Latency (cycles) | DRAM bytes | Front (energy, latency) | Golden mismatches |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for label, p in priced.items():
        marks = ", ".join(("yes" if label in on_front[c] else "no") for c in ("energy_pj", "cycles"))
        golden = f"{r.verifies[label]['mismatches']:,}" if label in r.verifies else "-"
        out.append(
            f"| {label} | {' | '.join(precision_words(p))} | {p['test_accuracy']:.4f} | "
            f"{1e3 * p['packed_weights_mb']:.1f} | {p['compute_pj'] / 1e6:.3f} | {p['energy_pj'] / 1e6:.3f} | "
            f"{p['cycles']:,} | {p['dram_bytes']:,} | {marks} | {golden} |"
        )
    out.append("")
    if (r.run / PRECISION_PNG).exists():
        out += [f"![Accuracy against energy and latency]({PRECISION_PNG})", ""]
    return out + _searches(r, priced)


def _searches(r: Records, priced: dict[str, dict]) -> list[str]:
    """Each mixed-precision search of the run (precision_*.json) and the model quantized from its choice: its
    budget, the fraction of the all-INT8 model's cost it reached, and that model's accuracy and energy against
    the 8-bit pot-channel model's."""
    made = {tuple(map(tuple, q.get("precision") or ())): k for k, q in r.quants.items()}
    rows = []
    base = priced.get(QuantSettings.scheme)
    for path in sorted(r.run.glob(SEARCH_GLOB)):
        s = read_json(path)
        entries = tuple(sorted((n, e["w_bits"], e["w_code"], e["a_bits"]) for n, e in s.get("nodes", {}).items()))
        label = made.get(entries)
        if label is None or label not in priced:
            continue
        p, asked = priced[label], s.get("budget_asked") or s["budget"]
        budget = f"{asked:g}" + (f" (its cheapest: {s['budget']:.3f})" if s["budget"] > asked else "")
        vs = (
            f"{100 * (p['test_accuracy'] - base['test_accuracy']):+.2f} | {p['energy_pj'] / base['energy_pj']:.3f}"
            if base
            else "- | -"
        )
        rows.append(
            f"| {s['method']} | {s['objective']} | {budget} | {s['fraction']:.3f} | {s['solver_seconds']:.3f} | "
            f"{label} | {p['test_accuracy']:.4f} | {vs} |"
        )
    if not rows:
        return []
    return [
        "### Mixed precision: the searches",
        "",
        "Each search (`potq mixed`; `potq run --mixed`: potq's and HAWQ-V3's at one budget, on the same weights) "
        "with its budget and the fraction of the all-INT8 model's cost it reached (its objective, priced exactly), "
        f"and the model quantized from its choice against `{QuantSettings.scheme}` (8-bit): accuracy change in "
        "points and energy with data movement as a fraction.",
        "",
        "| Method | Objective | Budget | Reached | Solver (s) | Model | Test accuracy | Change (points) | Energy |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
        *rows,
        "",
    ]


def _golden_table(verifies: dict[str, dict]) -> list[str]:
    if not verifies:
        return []
    out = [
        "### Integer golden model",
        "",
        "| Model | Images | Values compared | Mismatches | Golden accuracy | Simulated accuracy | "
        "Least int32 headroom |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in verifies.items():
        headroom = min(a["int32_headroom_bits"] for a in v["accumulators"])
        out.append(
            f"| {name} | {v['images']:,} | {v['compared_values']:,} | {v['mismatches']} | "
            f"{v['golden_accuracy']:.4f} | {v['simulated_accuracy']:.4f} | {headroom} bits |"
        )
    return out + [""]


def _energy(r: Records) -> list[str]:
    energy = r.energy
    if energy is None:
        return ["## 5. Energy", ""]
    out = ["## 5. Energy", "", f"Energy table: {energy['table']}.", "", "### Worked example: Linear 128 -> 10", ""]
    for zp, ex in energy["linear_example"].items():
        out += [f"Activation zero point {zp}:", ""] + [f"- {t}" for t in ex["terms"]] + [""]
    ex128 = energy["linear_example"]["128"]["pj"]
    return out + [
        "| | Before quantization (FP32) | After quantization (INT8 power-of-two) |",
        "|---|---:|---:|",
        f"| Energy consumption (pJ) | {fmt(ex128['fp32'])} | {fmt(ex128['int8-pot'])} |",
        "",
        f"### Whole network, per image (memory: {energy['memory_level']})",
        "",
        energy["markdown"],
        "",
        "![Energy per layer](energy.png)",
        "",
        f"Columns: {', '.join(MODELS.values())}. Costed on the integer graph of `{energy.get('scheme', '?')}` "
        "with its own zero points and shifts; BatchNorm is folded into the convolutions (its parameters "
        "cost nothing at inference), ReLU is the clamp and max pooling is comparisons, not counted, as in "
        "the reference report; memory reads every weight and input and writes every output once.",
        "",
    ]


def _export_section(run: Path) -> list[str]:
    """Where the hardware export is and what it holds."""
    model_json = run / EXPORT_DIR / MODEL_JSON
    if not model_json.exists():
        return []
    m = read_json(model_json)
    ops = sorted({n["op"] for n in m.get("nodes", [])})
    src = m.get("quantized_model", {})
    return [
        "## 6. Export",
        "",
        f"`export/` holds the quantized model `{src.get('label', m.get('scheme'))}` (scheme {m.get('scheme')}, "
        f"exponent rule {src.get('exponent')}, rounding {m.get('rounding')}, {src.get('calib_images')} calibration "
        f"images, weights SHA-256 {str(src.get('weights_sha256'))[:12]}...) as potq's integer graph "
        f"(format {m.get('format')} version "
        f"{m.get('version')}, documented in docs/graph-format.md): `model.json` ({len(m.get('nodes', []))} nodes: "
        f"{', '.join(ops)}; rounding {m.get('rounding')}), `weights.npz` and `hex/` ($readmemh; two's complement, "
        f"the input table unsigned) with {len(m.get('tensor_files', {}))} tensors, `model.h` (C arrays and zero "
        "points), and "
        f"{m.get('vectors', {}).get('count', 0)} test vectors with every value's integers (`vectors.npz`, "
        "`vectors/`), made by the golden model.",
        "",
        *_deployment(run, m),
    ]


def _deployment(run: Path, m: dict) -> list[str]:
    """Which formats were exported and what each consumer's check found."""
    from potq.deploy.c_runtime import BUILD
    from potq.jobs.deploy import deploy_summary

    formats = m.get("formats", ["hw"])
    out = ["### Deployment", "", f"Formats exported: {', '.join(formats)}.", ""]
    path = deploy_json(run, m.get("quantized_model", {}).get("label", m.get("scheme")))
    if path.exists():
        d = read_record(path)
        out += [f"- {line}" for line in deploy_summary(d)] + [""]
        onnx = d.get("onnx", {})
        if onnx.get("mismatches") and onnx.get("rounding") != Rounding.HALF_EVEN.label:
            out += [
                "onnxruntime rounds half to even: for a model it runs bit for bit, quantize with "
                f"`potq quantize --run RUN --scheme {m.get('scheme')} --rounding half-even` and export that.",
                "",
            ]
    if "c" in formats:
        out += [f"Build and check the C runtime in `export/`: `{BUILD} && ./potq_main`.", ""]
    if (run / THIRD_PARTY_LOG).exists():
        out += [f"What onnxruntime and TVM printed themselves during their checks is in `{THIRD_PARTY_LOG}`.", ""]
    return out


ACCEL_TEXT = (
    "The headline integer graph on the accelerator model (`potq accel`, docs/accel.md): per node the cycles "
    "of the course lab's serial model (compute + DRAM + global buffer + post-processing), the PE array's "
    "utilization, whether its compute or its DRAM cycles are the longer (one DRAM bandwidth for both, and for "
    "the roofline), and the energy of every level "
    "(MAC array, post-processing unit, scratchpads, global buffer, DRAM, leakage; the architecture's unit). "
    "Row-stationary: each conv block's best mapping by latency, a max pool fused after its conv; the fused "
    "pool is listed with no cost of its own."
)


def _accel_table(r: dict) -> list[str]:
    from potq.accel.model import LEVELS

    head = "| Node | Op | MACs | Cycles | Util | Bound | " + " | ".join(LEVELS) + " | Total |"
    out = [head, "|---|---|" + "---:|" * (4 + len(LEVELS)) + "---:|"]
    for lay in r["layers"]:
        bound = f"fused {lay['mapping']}" if lay["dataflow"] == "fused" else lay["bound"]
        en = " | ".join(fmt(lay["energy"][k]) for k in LEVELS)
        out.append(
            f"| {lay['node']} | {lay['op']} | {lay['macs']:,} | {lay['cycles']['latency']:,} | "
            f"{lay['utilization']:.1%} | {bound} | {en} | {fmt(lay['energy']['total'])} |"
        )
    t = r["total"]
    en = " | ".join(fmt(t["energy"][k]) for k in LEVELS)
    out.append(
        f"| **Total** | | {t['macs']:,} | {t['cycles']['latency']:,} | | {r['bound']} | {en} | "
        f"{fmt(t['energy']['total'])} |"
    )
    return out


def _accelerator(run: Path) -> list[str]:
    """## 7: the accel step's results (accel.json) and its two figures."""
    acc = _read(run / ACCEL_JSON)
    if acc is None:
        return []
    out = ["## 7. Accelerator", "", ACCEL_TEXT, "", f"Graph: `{acc['scheme']}`.", ""]
    for r in acc["reports"]:
        t = r["total"]
        share = ", ".join(f"{k} {v:.1%}" for k, v in r["energy_share"].items())
        out += [
            f"### {r['arch']}, dataflow {r['dataflow']} (energy in {r['energy_unit']})",
            "",
            *_accel_table(r),
            "",
            f"Network: {t['cycles']['latency']:,} cycles ({t['seconds'] * 1e3:.3f} ms at the architecture's "
            f"clock), {t['macs']:,} MACs, {sum(t['bytes']['dram'].values()):,} DRAM bytes "
            f"({r['intensity']:.2f} MACs/B, balance point {r['balance_point']:g}; {t['cycles']['compute']:,} compute "
            f"against {t['cycles']['dram']:,} DRAM cycles: {r['bound']}-bound). "
            f"Share of energy by level: {share}.",
            "",
        ]
    return out + _timings(acc) + [
        f"![Roofline]({ACCEL_ROOFLINE_PNG})",
        "",
        f"![Energy by level]({ACCEL_ENERGY_PNG})",
        "",
    ]


def _timings(acc: dict) -> list[str]:
    """The network's cycles under each reading of time (the accel step's `timings`; none before potq 0.5)."""
    timings = acc.get("timings")
    if not timings:
        return []
    rows = [f"| {name} | {t['latency']:,} | {t['stall']:,} |" for name, t in timings.items()]
    return [
        "### Time: serial, overlapped, and potq's RTL",
        "",
        "The whole network's cycles per image: each architecture above as the lab reads it (`none`: compute, "
        "DRAM, global buffer and post-processing one after another) and with its levels double-buffered (the "
        "slowest level plus one tile of each other; stall: cycles the array waits), and `potq-rtl`, potq's own "
        "RTL as an architecture (16x16: the cycles `potq verify --rtl --array 16x16` counts under Verilator).",
        "",
        "| Architecture (dataflow), overlap | Cycles | Stall |",
        "|---|---:|---:|",
        *rows,
        "",
    ]


def _embed_images(html: str, run: Path) -> str:
    for name in (CURVES, COMPARE_PNG, PRECISION_PNG, ENERGY_PNG, ACCEL_ROOFLINE_PNG, ACCEL_ENERGY_PNG):
        path = run / name
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode()
            html = html.replace(f'src="{name}"', f'src="data:image/png;base64,{data}"')
    return html


def to_html(md: str) -> str:
    """Markdown -> HTML with raw HTML and links switched off: paths, model and class names come from
    outside potq, and the report must never run what they carry."""
    converter = markdown.Markdown(extensions=["tables"])
    converter.preprocessors.deregister("html_block")
    for pattern in ("html", "link", "reference", "autolink", "automail", "short_reference"):
        if pattern in converter.inlinePatterns:
            converter.inlinePatterns.deregister(pattern)
    return converter.convert(md)


def scrolling_tables(body: str) -> str:
    """Every table in a box that scrolls sideways: a wide one (the accelerator's 14 columns) stays whole and
    readable instead of being cut at the page's right edge."""
    return body.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")


def write_report(run: Path) -> None:
    md = build_markdown(run)
    save_text(md, run / REPORT_MD)
    body = scrolling_tables(to_html(md))
    title = html.escape(md.splitlines()[0].lstrip("# ").replace("`", ""))
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>\n{_embed_images(body, run)}\n</body></html>\n"
    )
    save_text(page, run / REPORT_HTML)


def schedule_text(r: dict) -> str:
    """The learning-rate schedule of a recipe (potq.recipes.Recipe as a dict), as the trainer runs it."""
    if r.get("schedule", "cosine") == "linear":
        return (
            f"linear warm-up over the first {100 * r['warmup']:g}% of the steps from {r['warmup_start']:g} x lr, "
            "then linear decay to 0, per step"
            + (f"; EMA of weights (decay {r['ema_decay']} per step)" if r.get("ema_decay") else "")
        )
    return f"`CosineAnnealingLR(T_max={r['epochs']}, eta_min={r['eta_min']})`, per epoch"
