"""The consumers' checks of a run's quantized model (`potq verify --onnx/--c/--tvm/--rtl`, `potq run`'s deploy
step): potq.deploy's checks on test images drawn across the classes, recorded in deploy_<label>.json for the
report's Deployment section, and the lines that word what they found."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from potq.data import load_dataset, test_subset, vector_indices
from potq.deploy.consumers import (
    TVM_EXTRA,
    _session,
    check_c,
    check_onnx,
    check_tvm,
    compiler,
    find_compiler,
    onnx_installed,
    require_tvm,
    tvm_installed,
)
from potq.deploy.onnx_qdq import EXTRA, OPSET, WEIGHTS_UINT8
from potq.deploy.rtl import PE_KINDS, verilator
from potq.deploy.rtl.pe import pe_build
from potq.deploy.rtl_check import check_rtl, parse_array
from potq.errors import UserError
from potq.files import RECORD_DIGEST, read_json, record_edited, save_record, stderr_to_log
from potq.jobs import C_VECTORS, RTL_VECTORS, TVM_IMAGES
from potq.machine import cpu_text
from potq.runs.paths import THIRD_PARTY_LOG, deploy_json
from potq.runs.provenance import derived_inputs
from potq.runs.quantized import read_quantized

RUN_ARRAY = "4x4"  # `potq run`'s deploy step: the array that builds quickest


def check_run(
    run: Path,
    name: str,
    onnx: bool,
    c: bool,
    data: str | None = None,
    cache=None,
    c_vectors: int = C_VECTORS,
    skipped: dict[str, str] | None = None,
    onnx_weights: str = WEIGHTS_UINT8,
    tvm: bool = False,
    tvm_images: int = TVM_IMAGES,
    test_limit: int | None = None,
) -> dict:
    """The consumers' checks of a run's quantized model (`potq verify --onnx/--c/--tvm`, `potq run`'s deploy
    step), saved as deploy_<label>.json for the report's Deployment section; `skipped`: the checks this
    machine can't run, and why; test_limit: the checks on N test images drawn across the classes."""
    if c_vectors < 1:
        raise UserError(f"--c-vectors must be at least 1, got {c_vectors}")
    if tvm_images < 1:
        raise UserError(f"--tvm-images must be at least 1, got {tvm_images}")
    run = Path(run)
    result: dict = {}
    if onnx or c or tvm:
        graph, cfg, quant_sha256 = read_quantized(run, name)
        if c:
            compiler()  # before the long ONNX check: is there a compiler at all?
        log = run / THIRD_PARTY_LOG  # what onnxruntime and TVM print themselves: theirs, not the user's answer
        if onnx:
            with stderr_to_log(log, f"onnxruntime session, {name}"):
                _session(graph, weights=onnx_weights)
        if tvm:
            require_tvm()
        ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
        images, labels = test_subset(ds.test_x, ds.test_y, test_limit)
        if onnx:
            with stderr_to_log(log, f"onnxruntime, {name}"):
                result["onnx"] = check_onnx(graph, images, labels, weights=onnx_weights)
        if tvm:  # TVM's untuned llvm build runs a few images per second: the class-spread draw, as for C
            picked = vector_indices(labels, min(tvm_images, len(labels)))
            with stderr_to_log(log, f"TVM, {name}"):
                checked = check_tvm(graph, images[picked], labels[picked])
            result["tvm"] = {**checked, "test_indices": picked.tolist()}
        if c:  # the class-spread test images that `potq export` draws as its vectors
            picked = vector_indices(labels, min(c_vectors, len(labels)))
            result["c"] = {**check_c(graph, images[picked]), "test_indices": picked.tolist()}
        result["inputs"] = derived_inputs(run, name, ds.digest, quant_sha256)
    if skipped is not None:
        result["skipped"] = skipped
    return save_deploy_record(run, name, result)


def save_deploy_record(run: Path, name: str, checks: dict) -> dict:
    """Add the checks to deploy_<label>.json: the record of every consumer check of one quantized model. A
    record of other inputs (potq.runs.provenance: the model requantized, other data) is replaced whole."""

    path = deploy_json(run, name)
    saved = read_json(path) if path.exists() else {}
    if "inputs" in checks and saved.get("inputs") != checks["inputs"] or record_edited(saved):
        saved = {}  # an edited record's figures are not carried into a new fingerprint
    record = {"label": name, **{k: v for k, v in saved.items() if k != RECORD_DIGEST}, **checks}
    save_record(record, path)
    return record


def deploy_checks(
    run: Path,
    name: str,
    cache=None,
    test_limit: int | None = None,
    c_vectors: int = C_VECTORS,
    tvm_images: int = TVM_IMAGES,
) -> dict:
    """`potq run`'s deploy step: every consumer check this machine can run; what it can't, it says why
    (the image counts: check_run's; `potq run --budget` sizes them)."""
    have_onnx, have_cc = onnx_installed(), find_compiler() is not None
    have_tvm = have_onnx and tvm_installed()
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
                + f" (potq.deploy.saturation); checked on {cpu_text(o['cpu'])}"
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


def check_rtl_run(
    run: Path,
    name: str,
    array: str = "16x16",
    ppu: Path | None = None,
    pe: Path | None = None,
    vectors: int = RTL_VECTORS,
    data: str | None = None,
    cache=None,
    pe_kind: str = PE_KINDS[0],
) -> dict:
    """`potq verify --rtl`: check_rtl on `vectors` test images drawn across the classes as `potq export` draws
    its vectors, on the array of `pe_kind`'s PE (mac or shift); saved under "rtl" in deploy_<label>.json."""

    rows, cols = parse_array(array)
    if vectors < 1:
        raise UserError(f"--rtl-vectors must be at least 1, got {vectors}")
    for flag, path in (("--ppu", ppu), ("--pe", pe)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")
    verilator()  # before anything slow: is it installed?
    run = Path(run)
    graph, cfg, quant_sha256 = read_quantized(run, name)
    pe_build(graph, pe_kind)  # a format the shift PE can't take: refused before the data and the build
    ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
    labels = np.array(ds.test_y)
    picked = vector_indices(labels, min(vectors, len(labels)))
    result = check_rtl(graph, np.array(ds.test_x[picked]), rows, cols, ppu, pe, pe_kind)
    result["test_indices"] = picked.tolist()
    save_deploy_record(run, name, {"rtl": result, "inputs": derived_inputs(run, name, ds.digest, quant_sha256)})
    return result


def rtl_lines(r: dict) -> list[str]:
    """What `potq verify --rtl` prints: a user's PPU's edge sweep, the totals and one row per node (cycles,
    mismatches by cause), then a user's PE's stress test, one row per MAC node."""
    kind = r.get("pe_kind", PE_KINDS[0])  # records saved before --pe-kind: the multiplier PE
    pe = f"{r['pe']} ({kind}" + (f", {r['pe_format']} storage codes)" if r.get("pe_format") else ", weight values)")
    lines = []
    sweep = r.get("ppu_sweep")
    if sweep:
        causes = "; ".join(f"{c}: {k:,}" for c, k in sweep["causes"].items())
        lines.append(
            f"PPU edge sweep ({r['ppu']}): {sweep['mismatches']:,} mismatching values of {sweep['cases']:,} edge "
            f"cases, rounding {sweep['rounding']}" + (f"; causes: {causes}" if causes else "")
        )
    lines += [
        f"RTL (Verilator; {r['array']} output-stationary array; PPU {r['ppu']}; PE {pe}): {r['mismatches']:,} "
        f"mismatching values of {r['compared_values']:,} ({r['images']} images, every value of every node), "
        f"rounding {r['rounding']}; {r['cycles_per_image']:,} cycles per image (closed form "
        f"{r['predicted_cycles_per_image']:,}); simulation {r['simulation_seconds']:.1f} s",
        "| Node | Op | Cycles | Mismatches | Causes |",
        "|---|---|---:|---:|---|",
    ]
    for n in r["nodes"]:
        causes = "; ".join(f"{c}: {k:,}" for c, k in n["causes"].items()) or "-"
        lines.append(f"| {n['node']} | {n['op']} | {n['cycles']:,} | {n['mismatches']:,} | {causes} |")
    return lines + _stress_lines(r.get("stress") or [], r["pe"])


def _stress_lines(stress: list[dict], pe: str) -> list[str]:
    """The PE's stress test (potq.deploy.rtl_stress): per MAC node its worst case, what the synthetic input
    reached, and the mismatches with their causes."""
    if not stress:
        return []
    bad = sum(s["mismatches"] for s in stress)
    lines = [
        f"PE stress test ({pe}; each MAC node at its worst-case accumulator, synthetic inputs): {bad:,} mismatching "
        f"values of {sum(s['values'] for s in stress):,}",
        "| Node | Op | Worst-case dot product | Reached | Mismatches | Causes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for s in stress:
        causes = "; ".join(f"{c}: {k:,}" for c, k in s["causes"].items()) or "-"
        lines.append(
            f"| {s['node']} | {s['op']} | {s['worst_case_dot']:,} | {s['reached_dot']:,} | {s['mismatches']:,} "
            f"| {causes} |"
        )
    return lines
