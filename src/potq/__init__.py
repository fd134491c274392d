"""potq: compact CNNs from design to integer hardware with power-of-two INT8 quantization.

`potq.quantize(model, calib_images)` is the Python entry point (potq.api); `potq` the command.
"""

__version__ = "0.4.0"


def __getattr__(name: str):
    # loaded on first use: `potq --help` and argument errors answer without importing torch
    if name in ("quantize", "Quantized"):
        from potq import api

        return getattr(api, name)
    raise AttributeError(name)
