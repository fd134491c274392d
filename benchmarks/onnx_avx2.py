"""The ONNX export's two weight forms in onnxruntime's default session: exactness on this CPU and on an
emulated AVX2-only CPU, the saturation model's prediction beside it, speed and file size.

For each net and scheme (the test suite's nets: randomized BatchNorm, calibrated on random images), both
forms (uint8 weights with zero point 128, the default; int8 weights, the old form) are exported with every
quantized value as an output and run:
- here, natively (this CPU: see "cpu" in the output), default session options;
- under `qemu-x86_64 -cpu <model>` (qemu-user, TCG: a CPU with AVX2 and without AVX-512 or VNNI for
  Haswell), so that onnxruntime's MLAS picks its AVX2 kernels: the CPU of the issue, emulated;
and every value is compared with the golden model, node by node, beside potq.deploy.saturation's
prediction of the dot products that saturate. Speed: images per second of the model without extra
outputs, one thread, natively, both forms in this same process (ratio uint8 / int8).

    apt-get install qemu-user   # once
    PYTHONPATH=src:. python benchmarks/onnx_avx2.py --images 16
    PYTHONPATH=src:. python benchmarks/onnx_avx2.py --images 16 --schemes pot-channel --calm-stem
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tests.test_deploy import graph_of
from tests.test_graph import EXAMPLE

from potq.deploy.onnx_qdq import INPUT, OUTPUT, WEIGHT_FORMS, to_onnx
from potq.deploy.saturation import mac_operands, predict, saturating_mask, this_cpu
from potq.golden import IntegerModel

NETS = ["seed", "resnet20", "mobilenet-cifar", EXAMPLE]

# runs inside the emulator: onnxruntime and numpy only (no torch), every model of a folder
CHILD = """
import sys, glob, numpy as np, onnxruntime as ort
folder = sys.argv[1]
x = np.load(folder + "/images.npy")
for path in sorted(glob.glob(folder + "/*.onnx")):
    for flag in ("0", "1"):  # session.x64quantprecision: onnxruntime's own int8 -> uint8 weight rewrite
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.x64quantprecision", flag)
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in s.get_outputs()]
        suffix = ".emulated.npz" if flag == "0" else ".emulated-x64quantprecision.npz"
        np.savez(path[:-5] + suffix, **dict(zip(names, s.run(None, {"image": x}))))
"""


def compare(graph, outs: dict, record: dict, logits: np.ndarray) -> dict[str, int]:
    scale = 2.0 ** graph.q[graph.output].exponent
    bad = {}
    for v, got in outs.items():
        want = logits if v == OUTPUT else record[v].numpy()
        count = int(((got / scale) != want).sum()) if v == OUTPUT else int((got != want).sum())
        if count:
            bad[v] = count
    return bad


def first_node_check(graph, folder: Path, tag: str, record: dict) -> dict:
    """The first MAC node whose emulated int8-form output differs (its inputs are still exact, if the
    nodes before it are): are all its differing values where the model predicts a saturating dot product?"""
    import onnx

    model = onnx.load(str(folder / f"{tag}-int8.onnx"))
    outs = dict(np.load(folder / f"{tag}-int8.emulated.npz"))
    output_of = {n.name: n.output for n in graph.nodes}
    for m in mac_operands(model):
        value = output_of[m.node]
        if value not in outs:
            continue
        wrong = torch.from_numpy(outs[value] != record[value].numpy())
        if not bool(wrong.any()):
            continue
        inputs_exact = not bool((outs[m.input] != record[m.input].numpy()).any())
        mask = saturating_mask(m, record[m.input])
        predicted = torch.zeros_like(wrong) if mask is None else mask.reshape(wrong.shape)
        return {
            "node": m.node,
            "inputs_exact": inputs_exact,
            "differing_values": int(wrong.sum()),
            "predicted_dot_products": int(predicted.sum()),
            "differing_outside_prediction": int((wrong & ~predicted).sum()),
        }
    return {"node": None}


def speed(model_bytes: bytes, images: np.ndarray, repeats: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    s.run(None, {INPUT: images[:8]})
    t0 = time.perf_counter()
    for _ in range(repeats):
        s.run(None, {INPUT: images})
    return repeats * len(images) / (time.perf_counter() - t0)


def case(name: str, scheme: str, n: int, folder: Path, speed_images: np.ndarray, repeats: int, calm_stem: bool) -> dict:
    import onnxruntime as ort

    graph, images = graph_of(name, scheme, "half-even", n)
    if calm_stem:  # the first layer's weights quartered: the first saturating node is a later, wider one
        stem = graph.mac_nodes()[0]
        stem.tensors["weight"] = torch.div(stem.tensors["weight"], 4, rounding_mode="trunc")
    golden = IntegerModel(graph)
    record: dict = {}
    logits = golden.run(torch.from_numpy(images), record).numpy()
    tag = f"{Path(name.split(':')[0]).stem}-{scheme}"
    row: dict = {"net": name.split("/")[-1], "scheme": scheme, "images": n}
    for form in WEIGHT_FORMS:
        model = to_onnx(graph, intermediates=True, weights=form)
        (folder / f"{tag}-{form}.onnx").write_bytes(model.SerializeToString())
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        native = compare(graph, dict(zip(names, sess.run(None, {INPUT: images}), strict=True)), record, logits)
        plain = to_onnx(graph, weights=form).SerializeToString()
        sat = predict(model, record)
        row[form] = {
            "native_mismatches": native,
            "predicted_saturating_dot_products": {
                k: v["saturating_dot_products"] for k, v in sat.items() if v["saturating_dot_products"]
            },  # fmt: skip
            "risky_weight_pairs": sum(v["risky_weight_pairs"] for v in sat.values()),
            "file_bytes": len(plain),
            "images_per_second": round(speed(plain, speed_images, repeats), 1),
        }
    np.save(folder / "images.npy", images)
    row["_graph"], row["_record"], row["_logits"], row["_tag"] = graph, record, logits, tag
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16, help="random images each net is checked on")
    p.add_argument("--speed-images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--qemu-cpu", default="Haswell", help="the emulated CPU model (qemu-x86_64 -cpu)")
    p.add_argument("--schemes", default="pot-channel,pot-tensor")
    p.add_argument("--nets", default=",".join(NETS), help="comma-separated zoo names or file.py:factory")
    p.add_argument(
        "--calm-stem",
        action="store_true",
        help="quarter the first layer's weights, so that the model is checked on the ConvSym path (channels % 4 == 0)",
    )
    a = p.parse_args()
    torch.set_num_threads(1)
    qemu = shutil.which("qemu-x86_64")
    speed_images = np.random.default_rng(0).integers(0, 256, (a.speed_images, 3, 32, 32), dtype=np.uint8)
    print(json.dumps({"cpu": this_cpu(), "emulated": f"qemu-x86_64 -cpu {a.qemu_cpu}" if qemu else None}))
    for name in a.nets.split(","):
        for scheme in a.schemes.split(","):
            with tempfile.TemporaryDirectory(prefix="potq-avx2-") as tmp:
                folder = Path(tmp)
                row = case(name, scheme, a.images, folder, speed_images, a.repeats, a.calm_stem)
                graph, record, logits, tag = (row.pop(k) for k in ("_graph", "_record", "_logits", "_tag"))
                if qemu:
                    t0 = time.perf_counter()
                    r = subprocess.run([qemu, "-cpu", a.qemu_cpu, sys.executable, "-c", CHILD, tmp],
                                       capture_output=True, text=True)  # fmt: skip
                    if r.returncode:
                        raise RuntimeError(r.stderr[-3000:])
                    for form in WEIGHT_FORMS:
                        outs = dict(np.load(folder / f"{tag}-{form}.emulated.npz"))
                        row[form]["emulated_mismatches"] = compare(graph, outs, record, logits)
                        outs = dict(np.load(folder / f"{tag}-{form}.emulated-x64quantprecision.npz"))
                        row[form]["emulated_x64quantprecision_mismatches"] = compare(graph, outs, record, logits)
                    row["first_node_check"] = first_node_check(graph, folder, tag, record)
                    row["emulated_seconds"] = round(time.perf_counter() - t0, 1)
            u, i = row["uint8"], row["int8"]
            row["speed_uint8_over_int8"] = round(u["images_per_second"] / i["images_per_second"], 3)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
