"""potq: compact CNNs from design to integer hardware with power-of-two INT8 quantization."""

__version__ = "0.1.0"
