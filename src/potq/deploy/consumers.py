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

from potq.deploy.export import write_export
from potq.deploy.formats import FORMATS
from potq.deploy.onnx_qdq import EXTRA, INPUT, OUTPUT, WEIGHTS_UINT8, to_onnx
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
    shifts = n.op in REQUANT_OPS and n.op is not OpType.INPUT and not graph.q[value].accumulator
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
    with tempfile.TemporaryDirectory(prefix="potq-c-") as tmp:
        folder = Path(tmp) / "c"
        classes = [str(i) for i in range(graph.shapes[graph.output][0])]
        write_export(graph, folder, images, np.zeros(len(images), dtype=np.int64), classes, formats=("c",))
        result = run_c(build_c(folder, sanitize), repeats)
    return {"consumer": "C99 runtime", "compiler": compiler(), "flags": " ".join(C_FLAGS), **result}


def onnx_installed() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_formats() -> tuple[str, ...]:
    """What `potq run` exports: every format whose library is installed (rtl only on request: its memory
    images hold every value of every vector)."""
    return tuple(f for f in FORMATS if f != "rtl" and (f != "onnx" or onnx_installed()))


def tvm_installed() -> bool:
    try:
        require_tvm()
    except UserError:
        return False
    return True
