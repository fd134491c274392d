"""Do the exports' consumers compute the golden model's integers? onnxruntime on the test set, and the C
runtime compiled with the system's C compiler on the exported test vectors.

onnxruntime: every quantized intermediate (each is an output of the checked model) and the logits
(float, divided by their power-of-two scale: exact) against the golden model, image by image, and the
agreement of the predicted class. Each value that differs gets its causes: onnxruntime rounds half to
even (a model quantized with another rule differs at every tie), float32 holds integers exactly only
below 2^24 (a node whose worst-case accumulator reaches it may round its sum), or an input that already
differed. A mismatch with none of these causes is reported as unexplained.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from potq.deploy.formats import FORMATS
from potq.deploy.onnx_qdq import EXTRA, INPUT, OUTPUT, to_onnx
from potq.errors import UserError
from potq.golden import IntegerModel
from potq.ir.graph import REQUANT_OPS, Graph, OpType
from potq.ir.rules import FLOAT32_EXACT, Rounding

C_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


def _session(graph: Graph, threads: int = 0):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"the ONNX check needs onnxruntime: pip install 'potq[{EXTRA}]'") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    model = to_onnx(graph, intermediates=True)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _causes(graph: Graph, golden: IntegerModel, value: str, bad_values: set[str]) -> list[str]:
    n = graph.producer(value)
    causes = [f"input {v} already differs" for v in n.inputs if v in bad_values]
    # every shift rounds by the model's rule; the input's table does not differ (the graph holds it)
    shifts = n.op in REQUANT_OPS and n.op is not OpType.INPUT and graph.q[value].bits == 8
    if shifts and graph.rounding is not Rounding.HALF_EVEN:
        causes.append(f"onnxruntime rounds half to even, this model {graph.rounding.label}")
    bound = golden.bounds.get(n.name)
    if bound is not None and bound >= FLOAT32_EXACT:
        causes.append(f"worst-case accumulator {bound:,} reaches 2^24, beyond float32's exact integers")
    return causes


def check_onnx(graph: Graph, images: np.ndarray, labels: np.ndarray, batch: int = 500, threads: int = 0) -> dict:
    """onnxruntime against the golden model on uint8 images (N, C, H, W); threads 0: onnxruntime's default."""
    golden = IntegerModel(graph)
    sess = _session(graph, threads)
    names = [o.name for o in sess.get_outputs()]
    scale = 2.0 ** graph.q[graph.output].exponent
    mismatches: dict[str, int] = {}
    values = same_class = correct = 0
    t_onnx = t_golden = 0.0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        t0 = time.perf_counter()
        outs = dict(zip(names, sess.run(None, {INPUT: x}), strict=True))
        t1 = time.perf_counter()
        record: dict[str, torch.Tensor] = {}
        logits = golden.run(torch.from_numpy(x), record).numpy()
        t_golden += time.perf_counter() - t1
        t_onnx += t1 - t0
        got = {OUTPUT: outs[OUTPUT] / scale, **{v: outs[v] for v in names if v != OUTPUT}}
        want = {OUTPUT: logits, **{v: record[v].numpy() for v in names if v != OUTPUT}}
        for v in got:
            bad = int((got[v] != want[v]).sum())
            if bad:
                mismatches[v] = mismatches.get(v, 0) + bad
            values += got[v].size
        same_class += int((outs[OUTPUT].argmax(1) == logits.argmax(1)).sum())
        correct += int((outs[OUTPUT].argmax(1) == labels[i : i + batch]).sum())
    bad_values = set(mismatches)
    kinds = []
    for v, count in mismatches.items():
        causes = _causes(graph, golden, graph.output if v == OUTPUT else v, bad_values)
        kinds.append({"value": v, "mismatches": count, "causes": causes or ["unexplained"]})
    return {
        "consumer": "onnxruntime",
        "images": len(images),
        "compared_values": values,
        "mismatches": sum(mismatches.values()),
        "mismatch_rate": sum(mismatches.values()) / max(1, values),
        "logit_mismatches": mismatches.get(OUTPUT, 0),
        "class_agreement": same_class / max(1, len(images)),
        "onnx_accuracy": correct / max(1, len(images)),
        "mismatch_kinds": kinds,
        "unexplained": sum(k["mismatches"] for k in kinds if k["causes"] == ["unexplained"]),
        "rounding": graph.rounding.label,
        "onnx_seconds": t_onnx,
        "golden_seconds": t_golden,
    }


def find_compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def compiler() -> str:
    cc = find_compiler()
    if cc is None:
        raise UserError("the C check needs a C compiler (cc, gcc or clang) on PATH")
    return cc


def build_c(folder: Path, sanitize: bool = False) -> Path:
    """Compile an export folder's C runtime with the strict flags; the binary's path."""
    exe = folder / ("potq_main_asan" if sanitize else "potq_main")
    cmd = [compiler(), *C_FLAGS, *(SANITIZE if sanitize else ()), "-o", str(exe), "potq_model.c", "main.c"]
    r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the C runtime failed to compile in {folder}:\n{r.stderr[-4000:]}")
    return exe


def run_c(exe: Path, repeats: int = 1) -> dict:
    """Run main.c's vector check; its counts and speed."""
    r = subprocess.run([str(exe), str(repeats)], capture_output=True, text=True)
    m = re.search(
        r"vectors (\d+) mismatching_logits (\d+) differing_classes (\d+) images_per_second ([\d.]+)", r.stdout
    )
    if m is None:
        raise RuntimeError(f"{exe} printed no result (exit {r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
    vectors, bad, classes, speed = m.groups()
    return {
        "vectors": int(vectors),
        "logit_mismatches": int(bad),
        "class_mismatches": int(classes),
        "images_per_second": float(speed),
        "exit_status": r.returncode,
    }


def check_c(graph: Graph, images: np.ndarray, sanitize: bool = False, repeats: int = 1) -> dict:
    """Export the C runtime for `images` into a temporary folder (as `potq export --format c` does),
    compile it strictly, run it."""
    from potq.export import write_export

    with tempfile.TemporaryDirectory(prefix="potq-c-") as tmp:
        folder = Path(tmp) / "c"
        classes = [str(i) for i in range(graph.shapes[graph.output][0])]
        write_export(graph, folder, images, np.zeros(len(images), dtype=np.int64), classes, formats=("c",))
        result = run_c(build_c(folder, sanitize), repeats)
    return {"consumer": "C99 runtime", "compiler": compiler(), "flags": " ".join(C_FLAGS), **result}


def check_run(
    run: Path,
    name: str,
    onnx: bool,
    c: bool,
    data: str | None = None,
    cache=None,
    c_vectors: int = 200,
    skipped: dict[str, str] | None = None,
) -> dict:
    """The consumers' checks of a run's quantized model (`potq verify --onnx/--c`, `potq run`'s deploy
    step), saved as deploy_<label>.json for the report's Deployment section; `skipped`: the checks this
    machine can't run, and why."""
    from potq.data import load_dataset
    from potq.files import read_json, save_json
    from potq.runs.paths import deploy_json
    from potq.runs.quantize import load_quantized

    if c_vectors < 1:
        raise UserError(f"--c-vectors must be at least 1, got {c_vectors}")
    run = Path(run)
    path = deploy_json(run, name)
    result = read_json(path) if path.exists() else {"label": name}
    if onnx or c:
        graph, cfg = load_quantized(run, name)
        if c:
            compiler()  # before the long ONNX check: is there a compiler at all?
        if onnx:
            _session(graph)
        ds = load_dataset(data or cfg.data, cache, cfg.classes)
        images, labels = np.array(ds.test_x), np.array(ds.test_y)
        if onnx:
            result["onnx"] = check_onnx(graph, images, labels)
        if c:  # the class-spread test images that `potq export` draws as its vectors
            from potq.export import vector_indices

            picked = vector_indices(labels, min(c_vectors, len(labels)))
            result["c"] = {**check_c(graph, images[picked]), "test_indices": picked.tolist()}
    if skipped is not None:
        result["skipped"] = skipped
    save_json(result, path)
    return result


def _have_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_formats() -> tuple[str, ...]:
    """What `potq run` exports: every format whose library is installed."""
    return tuple(f for f in FORMATS if f != "onnx" or _have_onnx())


def deploy_checks(run: Path, name: str, cache=None) -> dict:
    """`potq run`'s deploy step: every consumer check this machine can run; what it can't, it says why."""
    have_onnx, have_cc = _have_onnx(), find_compiler() is not None
    skipped = {}
    if not have_onnx:
        skipped["onnx"] = f"onnx and onnxruntime are not installed (pip install 'potq[{EXTRA}]')"
    if not have_cc:
        skipped["c"] = "no C compiler (cc, gcc or clang) on PATH"
    return check_run(run, name, have_onnx, have_cc, None, cache, skipped=skipped)


def deploy_summary(r: dict) -> list[str]:
    """One line per consumer: what its check found (the report's Deployment section too)."""
    lines = []
    if "onnx" in r:
        o = r["onnx"]
        lines.append(
            f"ONNX (onnxruntime, QDQ opset 13): {o['mismatches']:,} of {o['compared_values']:,} values differ from "
            f"the golden model ({o['mismatch_rate']:.2%}; logits {o['logit_mismatches']:,}), class agreement "
            f"{o['class_agreement']:.4f}, accuracy {o['onnx_accuracy']:.4f} on {o['images']:,} test images; "
            f"rounding {o['rounding']}" + ("" if not o["mismatches"] else f"; causes: {_causes_text(o)}")
        )
    if "c" in r:
        c = r["c"]
        lines.append(
            f"C99 runtime ({c['flags']}): {c['logit_mismatches']} mismatching logits and {c['class_mismatches']} "
            f"differing classes in {c['vectors']} test images; {c['images_per_second']:.1f} images/s"
        )
    lines += [f"{k}: not checked: {why}" for k, why in r.get("skipped", {}).items()]
    return lines


def _causes_text(o: dict) -> str:
    causes: set[str] = set()
    for k in o["mismatch_kinds"]:
        causes.update(c for c in k["causes"] if not c.startswith("input "))
    return "; ".join(sorted(causes)) or "inherited"
