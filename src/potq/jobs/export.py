"""`potq export` on a run folder: its quantized model written by potq.deploy.export, with test vectors drawn
across the classes (potq.data.vector_indices) and the record of which model and data they came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from potq.data import load_dataset, vector_indices
from potq.deploy.export import EXPORT_KIND, check_pe_kind, write_export
from potq.deploy.onnx_qdq import WEIGHTS_UINT8
from potq.deploy.rtl import PE_KINDS
from potq.errors import UserError
from potq.files import check_output_dir
from potq.jobs import EXPORT_VECTORS
from potq.runs.provenance import derived_inputs
from potq.runs.quantized import quantized_model_record, read_quantized


def export_run(
    run: Path,
    name: str,
    out: Path,
    vectors: int = EXPORT_VECTORS,
    data: str | None = None,
    cache=None,
    formats: tuple[str, ...] = ("hw",),
    onnx_weights: str = WEIGHTS_UINT8,
    pe_kind: str = PE_KINDS[0],
    force: bool | None = None,
) -> dict:
    """Export a run's quantized model, with `vectors` test images (across the classes) as test vectors;
    onnx_weights: the ONNX model's stored weight type (potq.deploy.onnx_qdq.WEIGHT_FORMS); pe_kind: the
    RTL's PE (potq.deploy.rtl.PE_KINDS); force: replace the files of an earlier export that the user
    changed (None: `potq run`, which offers no such option for its export folder)."""
    if vectors < 1:
        raise UserError(f"--vectors must be at least 1, got {vectors}")
    out, run = Path(out), Path(run)
    check_output_dir(out, EXPORT_KIND, protect=(run,), force=force)
    graph, cfg, quant_sha256 = read_quantized(run, name)
    check_pe_kind(graph, formats, pe_kind)  # before the data
    ds = load_dataset(data or cfg.data, cache, cfg.classes, cfg.data_digest)
    if vectors > len(ds.test_x):
        raise UserError(f"--vectors {vectors} is more than the {len(ds.test_x)} test images")
    indices = vector_indices(np.asarray(ds.test_y), vectors)
    images, labels = np.array(ds.test_x[indices]), np.array(ds.test_y[indices])
    record = quantized_model_record(run, name, quant_sha256)
    source = {**record, "inputs": derived_inputs(run, name, ds.digest, quant_sha256)}
    return write_export(
        graph, out, images, labels, cfg.classes, (run,), formats, source, indices, onnx_weights, pe_kind, force
    )
