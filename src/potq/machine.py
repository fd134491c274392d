"""The one home of the CPU's facts that potq records and prints (the report's Machine row, the consumers' checks,
the benchmarks): its model name and the instruction-set flags that decide which kernels run. Torch-free."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that change what runs, in /proc/cpuinfo's spelling:
#   avx2: the x86-64 baseline of torch's and onnxruntime's vector kernels;
#   avx512f, avx512bw: the wider ones; avx512_vnni, avx_vnni: int8 dot products summed into int32 (onnxruntime's
#   u8 x s8 kernels are exact there; on AVX2 alone their int16 pair sums saturate: potq.deploy.saturation);
#   avx512_bf16, amx_tile, amx_bf16, amx_int8: bf16 and int8 matrix units (with amx_tile, `--precision auto`
#   trains in bf16 autocast: potq.train.autocast_bf16)
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_facts(cpuinfo: Path = CPUINFO) -> dict:
    """{"model": the CPU's model name, "flags": those of CPU_FLAGS it has}; where there is no /proc/cpuinfo
    (not Linux), the platform's processor name and no flags."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine() or "unknown", "flags": []}
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's block is enough: every core of a machine alike
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    have = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name", platform.machine() or "unknown"),
        "flags": [f for f in CPU_FLAGS if f in have],
    }


def cpu_text(facts: dict) -> str:
    """The CPU in words, as the report's Machine row and the checks print it."""
    flags = ", ".join(facts["flags"]) or f"none of {', '.join(CPU_FLAGS)}"
    return f"{facts['model']} (flags: {flags})"
