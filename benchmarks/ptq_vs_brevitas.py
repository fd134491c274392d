"""Post-training quantization: potq against Brevitas's power-of-two PTQ, in one process, on the same trained
model, the same calibration images and the same machine (issue 22, item 1).

potq: capture, calibration statistics, scales, lowering to the integer graph (potq.quant.pipeline.
quantize_graph), per scheme (pot-channel, pot-tensor), each from scratch (no statistics shared).
Brevitas: its ImageNet PTQ example's power-of-two flow (brevitas_examples ptq_common.quantize_model with
scale_factor_type po2_scale, 8-bit weights and activations, int32 bias, 99.999th-percentile activation
statistics; preprocess_for_quantize with BatchNorm merged, no graph equalization; one forward to initialize,
then calibration_mode over the same images), per weight granularity (per_channel, per_tensor).
Each is timed best of --repeats, interleaved, from the trained nn.Module to a quantized model; the fidelity
of each is the logit SQNR against the FP32 model on the first --test test images (FP32: the trained module
in float32). Brevitas is optional (`pip install potq[bench]`): without it, potq's side runs alone and the
Brevitas rows say why they are missing.

    python benchmarks/ptq_vs_brevitas.py --run runs/resnet20 --calib 1000 --test 2000
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/ptq_vs_brevitas.py --run runs/resnet20
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from potq.allocator import retain_freed_memory
from potq.data import load_dataset
from potq.ir.tensor import normalize
from potq.machine import cpu_facts
from potq.quant.pipeline import quantize_graph
from potq.quant.scheme import QuantSettings
from potq.quant.simulate import simulated
from potq.train import load_trained, prepare_data

SCHEMES = {"pot-channel": "per_channel", "pot-tensor": "per_tensor"}  # potq scheme -> Brevitas granularity


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with the flags that decide int8/fp32 kernels, and what torch uses."""
    facts = cpu_facts()  # potq.machine
    model, flags = facts["model"], set(facts["flags"])
    has = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    isa = os.environ.get("ATEN_CPU_CAPABILITY"), os.environ.get("ONEDNN_MAX_CPU_ISA")
    limited = f"; limited to ATEN_CPU_CAPABILITY={isa[0]} ONEDNN_MAX_CPU_ISA={isa[1]}" if any(isa) else ""
    return (
        f"{model} (flags: {', '.join(has) or 'none of avx2/avx512/amx'}; {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"capability {torch.backends.cpu.get_cpu_capability()}{limited})"
    )


def logits(forward, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([forward(x[i : i + batch]).double() for i in range(0, len(x), batch)])


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = float((ref - out).pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.pow(2).sum()) / noise)


def potq_ptq(model: nn.Module, cfg, calib_x: torch.Tensor, scheme: str):
    return quantize_graph(model, cfg.in_shape, cfg.mean, cfg.std, calib_x, QuantSettings(scheme))[1]


def brevitas_ptq(model: nn.Module, calib_x: torch.Tensor, granularity: str, batch: int) -> nn.Module:
    """Brevitas's ImageNet PTQ example flow with power-of-two scales (see the module docstring)."""
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.graph.quantize import preprocess_for_quantize
    from brevitas_examples.imagenet_classification.ptq.ptq_common import quantize_model

    warnings.filterwarnings("ignore", module=r"brevitas.*")  # its tracer's deprecation notes, once per call
    model = preprocess_for_quantize(model, equalize_iters=0, merge_bn=True)
    qmodel = quantize_model(
        model,
        backend="fx",
        weight_bit_width=8,
        act_bit_width=8,
        bias_bit_width=32,
        weight_quant_granularity=granularity,
        act_quant_percentile=99.999,
        act_quant_type="sym",
        scale_factor_type="po2_scale",
        quant_format="int",
    )
    qmodel.eval()
    with torch.no_grad():
        qmodel(calib_x[:batch])  # the example's initializing forward
        with calibration_mode(qmodel):
            for i in range(0, len(calib_x), batch):
                qmodel(calib_x[i : i + batch])
    return qmodel


def brevitas_missing() -> str | None:
    try:
        import brevitas  # noqa: F401
        import brevitas_examples  # noqa: F401
    except ImportError as e:
        return f"Brevitas is not installed ({e}); `pip install potq[bench]` adds it: its rows are skipped"
    return None


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a trained run folder (potq train)")
    p.add_argument("--data", default=None, help="default: the run's")
    p.add_argument("--calib", type=int, default=1000, help="calibration images (the first of the training set)")
    p.add_argument("--test", type=int, default=2000, help="test images for the logit SQNR")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=250, help="Brevitas calibration batch (potq's own is 250)")
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    a = p.parse_args()
    model, cfg = load_trained(a.run)
    arrays = prepare_data(cfg, load_dataset(a.data or cfg.data))
    calib_x = normalize(torch.from_numpy(arrays["train_x"][: a.calib]), cfg.mean, cfg.std).float()
    test_x = normalize(torch.from_numpy(arrays["test_x"][: a.test]), cfg.mean, cfg.std).float()
    fp32 = logits(model, test_x)
    missing = brevitas_missing()
    print(f"cpu: {cpu_name()}")
    print(f"model {cfg.model} from {a.run}; {len(calib_x)} calibration images, {len(test_x)} test images (JPEG copy)")
    if missing:
        print(f"note: {missing}")
    best: dict[tuple[str, str], float] = {}
    made: dict[tuple[str, str], object] = {}
    for r in range(a.repeats):  # interleaved: a load change hits both tools alike
        for scheme in a.schemes:
            s, made["potq", scheme] = timed(potq_ptq, model, cfg, calib_x, scheme)
            best["potq", scheme] = min(best.get(("potq", scheme), math.inf), s)
            print(f"  repeat {r + 1}: potq {scheme} {s:.2f} s", flush=True)
            if missing:
                continue
            m = copy.deepcopy(model)  # Brevitas merges BatchNorm into the module's own layers
            s, made["brevitas", scheme] = timed(brevitas_ptq, m, calib_x, SCHEMES[scheme], a.batch)
            best["brevitas", scheme] = min(best.get(("brevitas", scheme), math.inf), s)
            print(f"  repeat {r + 1}: brevitas po2 {SCHEMES[scheme]} {s:.2f} s", flush=True)
    print("\n| weights | potq PTQ (s) | Brevitas po2 PTQ (s) | potq / Brevitas | potq SQNR (dB) | Brevitas SQNR (dB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for scheme in a.schemes:
        q_sqnr = sqnr_db(fp32, logits(simulated(made["potq", scheme]), test_x))
        if missing:
            print(f"| {scheme} | {best['potq', scheme]:.2f} | skipped | - | {q_sqnr:.2f} | skipped |")
            continue
        b_sqnr = sqnr_db(fp32, logits(made["brevitas", scheme], test_x))
        ratio = best["potq", scheme] / best["brevitas", scheme]
        print(
            f"| {scheme} / {SCHEMES[scheme]} | {best['potq', scheme]:.2f} | {best['brevitas', scheme]:.2f} | "
            f"{ratio:.2f} | {q_sqnr:.2f} | {b_sqnr:.2f} |"
        )


if __name__ == "__main__":
    main()
