"""Power-of-two INT8 quantization: the scale rule, the simulated model, PTQ, QAT, the QConfig observer."""

from potq.quant.qnet import SCHEMES, QuantNet, QuantSettings, build_quantnet, calibrate

__all__ = ["SCHEMES", "PowerOfTwoObserver", "QuantNet", "QuantSettings", "build_quantnet", "calibrate"]


def __getattr__(name: str):
    # torch.ao is deprecated and warns on import: load it only for the people who ask for the adapter
    if name == "PowerOfTwoObserver":
        from potq.quant.observer import PowerOfTwoObserver

        return PowerOfTwoObserver
    raise AttributeError(name)
