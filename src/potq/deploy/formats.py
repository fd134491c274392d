"""The export formats that `potq export --format` writes (no torch: --help lists them)."""

from __future__ import annotations

from potq.errors import UserError

# what `--format` can ask for; "all" is every one. model.json (the graph) is always written.
#   hw: weights.npz, model.h, $readmemh hex files and test vectors for an RTL testbench
#   c: model.h and the C99 runtime (potq_model.c, potq_model.h, main.c, potq_vectors.h)
#   onnx: model.onnx, power-of-two QDQ (needs the onnx extra)
#   rtl: rtl/, potq's SystemVerilog accelerator, its Verilator testbench and memory images of the vectors
FORMATS = ("hw", "c", "onnx", "rtl")
FORMAT_CHOICES = (*FORMATS, "all")
# model.onnx's stored weight type: uint8 (w + 128, zero point 128; exact in onnxruntime on every CPU, see
# potq.deploy.saturation) or int8 (zero point 0; its int16 pair sums saturate on x86-64 without VNNI)
WEIGHTS_UINT8, WEIGHTS_INT8 = "uint8", "int8"
WEIGHT_FORMS = (WEIGHTS_UINT8, WEIGHTS_INT8)


def parse_formats(value: str) -> tuple[str, ...]:
    """--format hw|c|onnx|all, or a comma-separated list of them."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in FORMAT_CHOICES]
    if bad or not names:
        raise UserError(f"--format {value!r}: choose from {', '.join(FORMAT_CHOICES)} (or a comma-separated list)")
    return FORMATS if "all" in names else tuple(f for f in FORMATS if f in names)
