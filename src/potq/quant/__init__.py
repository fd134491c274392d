"""Power-of-two INT8 quantization: schemes and scale rules, calibration and lowering to the integer
graph, the simulated model, PTQ, QAT, and the QConfig observer."""

from potq.quant.rules import SCHEMES, QuantSettings

__all__ = ["SCHEMES", "PowerOfTwoObserver", "QuantSettings"]


def __getattr__(name: str):
    # torch.ao is deprecated and warns on import: load it only for the people who ask for the adapter
    if name == "PowerOfTwoObserver":
        from potq.quant.observer import PowerOfTwoObserver

        return PowerOfTwoObserver
    raise AttributeError(name)
