"""Do the exports' consumers compute the golden model's integers? onnxruntime on the test set, TVM (the
Relax ONNX frontend, built for llvm) on test images drawn across the classes, and the C runtime compiled
with the system's C compiler on the exported test vectors.

onnxruntime: every quantized intermediate (each is an output of the checked model) and the logits
(float, divided by their power-of-two scale: exact) against the golden model, image by image, and the
agreement of the predicted class. Each value that differs gets its causes: onnxruntime rounds half to
even (a model quantized with another rule differs at every tie), float32 holds integers exactly only
below 2^24 (a node whose worst-case accumulator reaches it may round its sum), or an input that already
differed, or (int8 weights) int16 pair sums that saturate on x86-64 without VNNI, as
potq.deploy.saturation predicts them from the exported integers and the golden model's input codes. A
mismatch with none of these causes is reported as unexplained. The prediction is reported whatever the
CPU (it is zero for the default uint8 weights), with the CPU this check ran on. TVM is checked the same
way (the same model.onnx, the same comparison; it rounds half to even too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from potq.deploy.formats import FORMATS
from potq.deploy.onnx_qdq import EXTRA, INPUT, OPSET, OUTPUT, WEIGHTS_UINT8, to_onnx
from potq.deploy.saturation import predict, this_cpu
from potq.errors import UserError
from potq.golden import IntegerModel
from potq.ir.graph import REQUANT_OPS, Graph, OpType
from potq.ir.rules import FLOAT32_EXACT, Rounding

C_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


def _session(graph: Graph, threads: int = 0, weights: str = WEIGHTS_UINT8):
    """onnxruntime's default session (graph optimizations on) on the model with every quantized value as
    an output, and that model."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"the ONNX check needs onnxruntime: pip install 'potq[{EXTRA}]'") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    model = to_onnx(graph, intermediates=True, weights=weights)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), model


def _causes(
    graph: Graph,
    golden: IntegerModel,
    value: str,
    bad_values: set[str],
    saturating: dict[str, int],
    consumer: str = "onnxruntime",
) -> list[str]:
    n = graph.producer(value)
    causes = [f"input {v} already differs" for v in n.inputs if v in bad_values]
    if saturating.get(n.name):
        causes.append(
            f"saturation of int16 pair sums in node {n.name}: {saturating[n.name]:,} dot products (u8 x s8 "
            "VPMADDUBSW on x86-64 without VNNI; export with uint8 weights, the default)"
        )
    # every shift rounds by the model's rule; the input's table does not differ (the graph holds it)
    shifts = n.op in REQUANT_OPS and n.op is not OpType.INPUT and graph.q[value].bits == 8
    if shifts and graph.rounding is not Rounding.HALF_EVEN:
        causes.append(f"{consumer} rounds half to even, this model {graph.rounding.label}")
    bound = golden.bounds.get(n.name)
    if bound is not None and bound >= FLOAT32_EXACT:
        causes.append(f"worst-case accumulator {bound:,} reaches 2^24, beyond float32's exact integers")
    return causes


def _compare(
    graph: Graph,
    consumer: str,
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    images: np.ndarray,
    labels: np.ndarray,
    batch: int,
    on_record: Callable[[dict[str, torch.Tensor]], None] | None = None,
    saturating: dict[str, int] | None = None,
) -> dict:
    """A consumer's outputs (`run`: uint8 images -> every output by name) against the golden model, batch
    by batch: every value, the logits (float, divided by their power-of-two scale: exact), the classes;
    each mismatching value with its causes. `on_record` sees the golden model's records of each batch."""
    golden = IntegerModel(graph)
    scale = 2.0 ** graph.q[graph.output].exponent
    mismatches: dict[str, int] = {}
    values = same_class = correct = 0
    t_consumer = t_golden = 0.0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        t0 = time.perf_counter()
        outs = run(x)
        t1 = time.perf_counter()
        record: dict[str, torch.Tensor] = {}
        logits = golden.run(torch.from_numpy(x), record).numpy()
        t_golden += time.perf_counter() - t1
        t_consumer += t1 - t0
        if on_record is not None:
            on_record(record)
        got = {OUTPUT: outs[OUTPUT] / scale, **{v: o for v, o in outs.items() if v != OUTPUT}}
        want = {OUTPUT: logits, **{v: record[v].numpy() for v in outs if v != OUTPUT}}
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
        value = graph.output if v == OUTPUT else v
        causes = _causes(graph, golden, value, bad_values, saturating or {}, consumer)
        kinds.append({"value": v, "mismatches": count, "causes": causes or ["unexplained"]})
    return {
        "consumer": consumer,
        "images": len(images),
        "compared_values": values,
        "mismatches": sum(mismatches.values()),
        "mismatch_rate": sum(mismatches.values()) / max(1, values),
        "logit_mismatches": mismatches.get(OUTPUT, 0),
        "class_agreement": same_class / max(1, len(images)),
        "accuracy": correct / max(1, len(images)),
        "mismatch_kinds": kinds,
        "unexplained": sum(k["mismatches"] for k in kinds if k["causes"] == ["unexplained"]),
        "rounding": graph.rounding.label,
        "cpu": this_cpu(),
        "consumer_seconds": t_consumer,
        "golden_seconds": t_golden,
    }


def check_onnx(
    graph: Graph,
    images: np.ndarray,
    labels: np.ndarray,
    batch: int = 500,
    threads: int = 0,
    weights: str = WEIGHTS_UINT8,
) -> dict:
    """onnxruntime against the golden model on uint8 images (N, C, H, W); threads 0: onnxruntime's default;
    weights: the exported weight type (potq.deploy.formats.WEIGHT_FORMS). The saturation model's
    prediction for an x86-64 CPU without VNNI is counted on the same images."""
    sess, model = _session(graph, threads, weights)
    names = [o.name for o in sess.get_outputs()]
    saturating: dict[str, int] = {}

    def count(record: dict[str, torch.Tensor]) -> None:
        for node, p in predict(model, record).items():
            saturating[node] = saturating.get(node, 0) + p["saturating_dot_products"]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(None, {INPUT: x}), strict=True))

    r = _compare(graph, "onnxruntime", run, images, labels, batch, count, saturating)
    r["avx2_saturating_dot_products"] = {k: v for k, v in saturating.items() if v}
    r["weights"] = weights
    return r


TVM_EXTRA = "tvm"  # pip install 'potq[tvm]': apache-tvm from PyPI
TVM_TARGET = "llvm"


def require_tvm():
    """The tvm package, or one line naming the extra to install."""
    try:
        import tvm
        from tvm.relax.frontend.onnx import from_onnx  # noqa: F401
    except ImportError:
        raise UserError(f"the TVM check needs apache-tvm: pip install 'potq[{TVM_EXTRA}]'") from None
    return tvm


def _tvm_module(graph: Graph, batch: int, weights: str = WEIGHTS_UINT8):
    """model.onnx (every quantized value an output) imported by TVM's Relax ONNX frontend and built for
    llvm with a fixed batch; a function of uint8 images (batch, C, H, W) -> every output by name."""
    tvm = require_tvm()
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = to_onnx(graph, intermediates=True, weights=weights)
    names = [o.name for o in model.graph.output]
    mod = from_onnx(model, shape_dict={INPUT: [batch, *graph.shapes[graph.input]]}, keep_params_in_input=False)
    mod = relax.transform.LegalizeOps()(relax.transform.DecomposeOpsForInference()(mod))
    vm = relax.VirtualMachine(relax.build(mod, target=TVM_TARGET), tvm.cpu())

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        n = len(x)
        if n < batch:  # the last images, padded to the built batch
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        outs = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x)))
        return {v: o.numpy()[:n] for v, o in zip(names, outs, strict=True)}

    return run


def check_tvm(graph: Graph, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> dict:
    """TVM (Relax ONNX frontend, built for llvm) on the exported model.onnx against the golden model, as
    the onnxruntime check: every quantized value, the logits, with their causes."""
    batch = max(1, min(batch, len(images)))
    t0 = time.perf_counter()
    run = _tvm_module(graph, batch)
    build_seconds = time.perf_counter() - t0
    tvm = require_tvm()
    r = _compare(graph, "TVM", run, images, labels, batch)
    return {**r, "tvm_version": tvm.__version__, "target": TVM_TARGET, "build_seconds": build_seconds}


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
    onnx_weights: str = WEIGHTS_UINT8,
    tvm: bool = False,
    tvm_images: int = 100,
    test_limit: int | None = None,
) -> dict:
    """The consumers' checks of a run's quantized model (`potq verify --onnx/--c/--tvm`, `potq run`'s deploy
    step), saved as deploy_<label>.json for the report's Deployment section; `skipped`: the checks this
    machine can't run, and why; test_limit: the checks on N test images drawn across the classes."""
    from potq.data import load_dataset
    from potq.runs.provenance import derived_inputs
    from potq.runs.quantize import load_quantized

    if c_vectors < 1:
        raise UserError(f"--c-vectors must be at least 1, got {c_vectors}")
    if tvm_images < 1:
        raise UserError(f"--tvm-images must be at least 1, got {tvm_images}")
    run = Path(run)
    result: dict = {}
    if onnx or c or tvm:
        graph, cfg = load_quantized(run, name)
        if c:
            compiler()  # before the long ONNX check: is there a compiler at all?
        if onnx:
            _session(graph, weights=onnx_weights)
        if tvm:
            require_tvm()
        ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
        from potq.export import test_subset, vector_indices

        images, labels = test_subset(ds.test_x, ds.test_y, test_limit)
        if onnx:
            result["onnx"] = check_onnx(graph, images, labels, weights=onnx_weights)
        if tvm:  # TVM's untuned llvm build runs a few images per second: the class-spread draw, as for C
            picked = vector_indices(labels, min(tvm_images, len(labels)))
            result["tvm"] = {**check_tvm(graph, images[picked], labels[picked]), "test_indices": picked.tolist()}
        if c:  # the class-spread test images that `potq export` draws as its vectors
            picked = vector_indices(labels, min(c_vectors, len(labels)))
            result["c"] = {**check_c(graph, images[picked]), "test_indices": picked.tolist()}
        result["inputs"] = derived_inputs(run, name, ds.digest)
    if skipped is not None:
        result["skipped"] = skipped
    return save_deploy_record(run, name, result)


def save_deploy_record(run: Path, name: str, checks: dict) -> dict:
    """Add the checks to deploy_<label>.json: the record of every consumer check of one quantized model. A
    record of other inputs (potq.runs.provenance: the model requantized, other data) is replaced whole."""
    from potq.files import read_json, save_json
    from potq.runs.paths import deploy_json

    path = deploy_json(run, name)
    saved = read_json(path) if path.exists() else {}
    if "inputs" in checks and saved.get("inputs") != checks["inputs"]:
        saved = {}
    record = {"label": name, **saved, **checks}
    save_json(record, path)
    return record


def _have_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_formats() -> tuple[str, ...]:
    """What `potq run` exports: every format whose library is installed (rtl only on request: its memory
    images hold every value of every vector)."""
    return tuple(f for f in FORMATS if f != "rtl" and (f != "onnx" or _have_onnx()))


def _have_tvm() -> bool:
    try:
        require_tvm()
    except UserError:
        return False
    return True


def deploy_checks(
    run: Path, name: str, cache=None, test_limit: int | None = None, c_vectors: int = 200, tvm_images: int = 100
) -> dict:
    """`potq run`'s deploy step: every consumer check this machine can run; what it can't, it says why
    (the image counts: check_run's; `potq run --budget` sizes them)."""
    have_onnx, have_cc = _have_onnx(), find_compiler() is not None
    have_tvm = have_onnx and _have_tvm()
    skipped = {}
    if not have_onnx:
        skipped["onnx"] = f"onnx and onnxruntime are not installed (pip install 'potq[{EXTRA}]')"
    if not have_cc:
        skipped["c"] = "no C compiler (cc, gcc or clang) on PATH"
    if not have_tvm:
        skipped["tvm"] = f"apache-tvm is not installed (pip install 'potq[{TVM_EXTRA}]')"
    have_rtl = shutil.which("verilator") is not None
    if not have_rtl:
        skipped["rtl"] = "Verilator is not installed (apt-get install verilator)"
    result = check_run(
        run,
        name,
        have_onnx,
        have_cc,
        None,
        cache,
        c_vectors=c_vectors,
        skipped=skipped,
        tvm=have_tvm,
        tvm_images=tvm_images,
        test_limit=test_limit,
    )
    if have_rtl:  # potq's RTL on a 4x4 array (a quick build, then cached), one class-spread test vector
        from potq.deploy.rtl_check import RUN_ARRAY, check_rtl_run

        result["rtl"] = check_rtl_run(run, name, RUN_ARRAY, vectors=1, cache=cache)
    return result


def deploy_summary(r: dict) -> list[str]:
    """One line per consumer: what its check found (the report's Deployment section too)."""
    lines = []
    if "onnx" in r:
        o = r["onnx"]
        lines.append(
            f"ONNX (onnxruntime, QDQ opset {OPSET}): {o['mismatches']:,} of {o['compared_values']:,} values differ "
            f"from the golden model ({o['mismatch_rate']:.2%}; logits {o['logit_mismatches']:,}), class agreement "
            f"{o['class_agreement']:.4f}, accuracy {o['accuracy']:.4f} on {o['images']:,} test images; "
            f"rounding {o['rounding']}" + ("" if not o["mismatches"] else f"; causes: {_causes_text(o)}")
        )
        if "weights" in o:  # written since the export's weight type became a choice
            sat = sum(o["avx2_saturating_dot_products"].values())
            lines.append(
                f"ONNX weights {o['weights']}: on an x86-64 CPU without VNNI onnxruntime's kernels "
                + (f"would get {sat:,} dot products wrong (int16 pair sums saturate)" if sat else "are exact")
                + f" (potq.deploy.saturation); checked on {o['cpu']['model']} ({', '.join(o['cpu']['flags'])})"
            )
    if "tvm" in r:
        t = r["tvm"]
        lines.append(
            f"TVM {t['tvm_version']} (Relax ONNX frontend, {t['target']}): {t['mismatches']:,} of "
            f"{t['compared_values']:,} values differ from the golden model (logits {t['logit_mismatches']:,}), "
            f"class agreement {t['class_agreement']:.4f} on {t['images']:,} test images; rounding {t['rounding']}"
            + ("" if not t["mismatches"] else f"; causes: {_causes_text(t)}")
        )
    if "c" in r:
        c = r["c"]
        lines.append(
            f"C99 runtime ({c['flags']}): {c['logit_mismatches']} mismatching logits and {c['class_mismatches']} "
            f"differing classes in {c['vectors']} test images; {c['images_per_second']:.1f} images/s"
        )
    if "rtl" in r:
        t = r["rtl"]
        lines.append(
            f"RTL (Verilator, {t['array']} output-stationary array): {t['mismatches']:,} mismatching values of "
            f"{t['compared_values']:,} (every node, {t['images']} test image{'s' if t['images'] > 1 else ''}); "
            f"{t['cycles_per_image']:,} cycles per image (closed form {t['predicted_cycles_per_image']:,})"
        )
    lines += [f"{k}: not checked: {why}" for k, why in r.get("skipped", {}).items()]
    return lines


def _causes_text(o: dict) -> str:
    causes: set[str] = set()
    for k in o["mismatch_kinds"]:
        causes.update(c for c in k["causes"] if not c.startswith("input "))
    return "; ".join(sorted(causes)) or "inherited"
