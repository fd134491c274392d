"""Eyeriss row-stationary dataflow: a mapping (m, n, e, p, q, r, t), its legality, and its cost terms.

Claim: for a convolution (or Linear, a 1x1 convolution) `Workload` on an `Arch`, `legal()` applies the
AI-on-chip course lab's rules (AOC 2025 Lab 2, "Performance Modeling": its EyerissMapper's parameter
ranges and validate(), plus the global-buffer capacity) and names the first rule a mapping breaks;
`evaluate()` gives the lab's terms: global-buffer usage per pass, DRAM and global-buffer traffic per
operand in bytes at the operands' real widths, MACs, cycles (DRAM, global buffer, PE array, post-
processing), energy per level, operational intensity, balance point and bound. The formulas, their
sources and the terms the handout leaves open are written in docs/accel-row-stationary.md.
Evidence: tests/test_accel_rs.py reproduces the handout's example layer exactly (global-buffer ifmap
usage 1,280 B, DRAM ifmap reads 20,480 B, global-buffer ifmap reads 40,960 B, 1,769,472 MACs,
kernel intensity 25.16 MACs/B; its balance point of 12 is the 4 B bus alone, where potq reads one DRAM bandwidth,
Arch.dram_bytes_per_cycle, for the latency, the roofline and the bound: 60) and checks the other terms by hand.

The formulas are written once (`terms`, `RULES`) over plain ints or numpy arrays alike, so that the
scalar `evaluate` and the vectorized search in search.py compute the same numbers by the same operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

from potq.accel.arch import PJ_PER_J
from potq.accel.systolic import cdiv
from potq.accel.workload import spad_traffic
from potq.errors import UserError
from potq.ir.codes import code_bytes

FIELDS = ("m", "n", "e", "p", "q", "r", "t")
# The lab's post-processing unit: 5 cycles per output element when a max pool follows, 1 otherwise
# (handout, "Latency"); here they are operations, run at the architecture's ppu_ops_per_cycle.
PPU_OPS_POOL = 5
PPU_OPS_PLAIN = 1


@dataclass(frozen=True, order=True)
class Mapping:
    """The row-stationary mapping parameters (Eyeriss paper, Table 2; the lab's EyerissMappingParam)."""

    m: int  # output channels held in the global buffer
    n: int  # ifmaps (batch) per processing pass
    e: int  # width of a PE set: output rows per pass
    p: int  # filters per PE set
    q: int  # input channels per PE set
    r: int  # PE sets for different input channels
    t: int  # PE sets for different filters

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in zip(FIELDS, astuple(self), strict=True))


@dataclass(frozen=True)
class Legality:
    """True when legal; `rule` and `reason` name the first rule broken."""

    ok: bool
    rule: str = ""
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def check_workload(wl) -> None:
    if not wl.is_mac:
        raise UserError(f"layer {wl.node}: a {wl.op} node has no MACs; the row-stationary array runs conv and linear")


def divisors(x: int) -> list[int]:
    return [d for d in range(1, x + 1) if x % d == 0]


def _ends(wl, arch) -> dict[str, int]:
    """The last candidate of e, p, q, r and t, each of which runs from 1 (the one home of the space's bounds:
    `space` lists them, `grid_cells` only counts them)."""
    sets_high = arch.pe_rows // wl.R
    return {
        "e": min(arch.pe_cols * sets_high, wl.E),
        "p": arch.spad_bytes["psum"] * 8 // wl.bits_psum,
        "q": arch.spad_bytes["ifmap"] * 8 // (wl.S * wl.bits_ifmap),
        "r": sets_high,
        "t": arch.pes // wl.R,
    }


def space(wl, arch) -> dict[str, list[int]]:
    """The lab's candidate values of each parameter (EyerissMapper's *_available()), at real operand
    widths: m divides M, n divides N (the lab fixes n = 1 for N = 1), e up to the PE sets' width and E,
    p up to the psums the psum scratchpad holds, q up to the ifmap rows' channels the ifmap scratchpad
    holds, r up to the PE sets stacked in the array's height, t up to the PEs over R."""
    ends = _ends(wl, arch)
    return {"m": divisors(wl.M), "n": divisors(wl.N), **{k: list(range(1, ends[k] + 1)) for k in FIELDS[2:]}}


def grid_cells(wl, arch) -> int:
    """Cells of search.py's grid: the candidates of m, n, e, p, q and r multiplied (t is solved, not
    enumerated), counted without listing them. The search's memory and time grow with it (limits.py)."""
    ends = _ends(wl, arch)
    cells = len(divisors(wl.M)) * len(divisors(wl.N))
    for k in ("e", "p", "q", "r"):
        cells *= max(ends[k], 0)
    return cells


def space_size(wl, arch) -> int:
    size = 1
    for values in space(wl, arch).values():
        size *= len(values)
    return size


def glb_usage(wl, m, n, e, p, q, r, t) -> dict[str, Any]:
    """Global-buffer bytes one processing pass holds (handout, "GLB Usage"; psum: the m channels' e rows
    accumulate across the channel loop, so they stay for the whole pass)."""
    u = wl.stride_h
    use = {
        "ifmap": code_bytes(n * (q * r) * (u * (e - 1) + wl.R) * wl.W, wl.bits_ifmap),
        "filter": code_bytes((p * t) * (q * r) * wl.R * wl.S, wl.bits_filter),
        "bias": code_bytes(p * t, wl.bits_bias),
        "psum": code_bytes(n * m * e * wl.F, wl.bits_psum),
    }
    use["total"] = use["ifmap"] + use["filter"] + use["bias"] + use["psum"]
    return use


# The lab's legality rules, in the order they are reported: (name, holds(wl, arch, pool, m..t), why).
Rule = tuple[str, Callable[..., Any], Callable[..., str]]
RULES: list[Rule] = [
    (
        "range",
        lambda wl, a, pool, m, n, e, p, q, r, t: (
            (m >= 1) & (n >= 1) & (e >= 1) & (e <= wl.E) & (p >= 1) & (q >= 1) & (r >= 1) & (t >= 1)
        ),
        lambda wl, a: f"every parameter must be at least 1, and e at most E={wl.E}",
    ),
    (
        "pe_rows",
        lambda wl, a, pool, m, n, e, p, q, r, t: (e > 0) & (a.pe_rows >= wl.R),  # e: keep the grid's shape
        lambda wl, a: f"a PE set is R={wl.R} rows high but the PE array has {a.pe_rows} rows (pe_rows)",
    ),
    (
        "e",
        lambda wl, a, pool, m, n, e, p, q, r, t: (e % a.pe_cols == 0) | (e == a.pe_cols // 2) | (e == wl.E),
        lambda wl, a: f"e must be a multiple of the array's {a.pe_cols} columns (pe_cols), half of them, or E={wl.E}",
    ),
    (
        "pe_array",
        lambda wl, a, pool, m, n, e, p, q, r, t: (r * t == a.pes // wl.R // e) & (r <= a.pe_rows // wl.R),
        lambda wl, a: (
            f"r*t must equal the PE sets of R={wl.R} x e PEs the {a.pe_rows}x{a.pe_cols} array holds (pe_rows, pe_cols)"
        ),
    ),
    (
        "spad_ifmap",
        lambda wl, a, pool, m, n, e, p, q, r, t: q * wl.S * wl.bits_ifmap <= a.spad_bytes["ifmap"] * 8,
        lambda wl, a: (
            f"q ifmap rows of S={wl.S} values must fit the {a.spad_bytes['ifmap']} B ifmap scratchpad "
            "(spad_bytes.ifmap)"
        ),
    ),
    (
        "spad_filter",
        lambda wl, a, pool, m, n, e, p, q, r, t: p * q * wl.S * wl.bits_filter <= a.spad_bytes["filter"] * 8,
        lambda wl, a: (
            f"p*q filter rows of S={wl.S} values must fit the {a.spad_bytes['filter']} B filter scratchpad "
            "(spad_bytes.filter)"
        ),
    ),
    (
        "spad_psum",
        lambda wl, a, pool, m, n, e, p, q, r, t: p * wl.bits_psum <= a.spad_bytes["psum"] * 8,
        lambda wl, a: (
            f"p {wl.bits_psum}-bit psums must fit the {a.spad_bytes['psum']} B psum scratchpad (spad_bytes.psum)"
        ),
    ),
    (
        "m",
        lambda wl, a, pool, m, n, e, p, q, r, t: (wl.M % m == 0) & (m % p == 0) & (wl.N % n == 0),
        lambda wl, a: f"m must divide M={wl.M} and be a multiple of p; n must divide N={wl.N}",
    ),
    (
        "pool",
        lambda wl, a, pool, m, n, e, p, q, r, t: (e % pool == 0) | (e == wl.E),
        lambda wl, a: f"a pooling window must not straddle two strips of e rows (E={wl.E})",
    ),
    (
        "glb",
        lambda wl, a, pool, m, n, e, p, q, r, t: glb_usage(wl, m, n, e, p, q, r, t)["total"] <= a.glb_bytes,
        lambda wl, a: f"a processing pass must fit the {a.glb_bytes} B global buffer (glb_bytes)",
    ),
]


def legal(wl, arch, mapping: Mapping, pool: int = 1) -> Legality:
    """Whether the mapping runs on the architecture; if not, the first rule it breaks and why."""
    check_workload(wl)
    values = astuple(mapping)
    for name, holds, why in RULES:
        if not bool(holds(wl, arch, pool, *values)):
            return Legality(False, name, why(wl, arch))
    return Legality(True)


def _traffic(wl, pool, m, n, e, p, q, r, t) -> dict[str, Any]:
    """Bytes moved per layer, by level and operand, over the lab's loop nest:
    for M/m, E/e, N/n, C/(qr) [ifmap tile DMA'd once], m/(pt) [one processing pass]."""
    g = wl.groups
    blocks = cdiv(wl.M, m) * cdiv(wl.E, e) * cdiv(wl.N, n)  # (m, e, n) blocks: one ofmap tile each
    cblocks = cdiv(wl.C, q * r)
    mtiles = cdiv(m, p * t)  # passes per channel block: the ifmap tile's reuse in the global buffer
    use = glb_usage(wl, m, n, e, p, q, r, t)
    psum_tile = code_bytes(n * (p * t) * e * wl.F, wl.bits_psum)
    rows_out, cols_out = (e // pool, wl.F // pool) if pool > 1 else (e, wl.F)
    ofmap_tile = code_bytes(n * m * rows_out * cols_out, wl.bits_ofmap)
    d = {
        "dram_ifmap_read": g * blocks * cblocks * use["ifmap"],
        "dram_filter_read": g * blocks * cblocks * mtiles * use["filter"],
        "dram_bias_read": g * blocks * mtiles * use["bias"],  # only the first channel block loads B
        "dram_ofmap_write": g * blocks * ofmap_tile,
        "glb_ifmap_read": g * blocks * cblocks * mtiles * use["ifmap"],
        "glb_filter_read": g * blocks * cblocks * mtiles * use["filter"],
        "glb_bias_read": g * blocks * mtiles * use["bias"],
        "glb_psum_read": g * blocks * (cblocks - 1) * mtiles * psum_tile,
        "glb_psum_write": g * blocks * (cblocks - 1) * mtiles * psum_tile,  # the last block leaves via the PPU
        "glb_ofmap_write": g * blocks * ofmap_tile,
    }
    d["dram_read"] = d["dram_ifmap_read"] + d["dram_filter_read"] + d["dram_bias_read"]
    d["dram_write"] = d["dram_ofmap_write"]
    d["dram_access"] = d["dram_read"] + d["dram_write"]
    d["glb_read"] = d["glb_ifmap_read"] + d["glb_filter_read"] + d["glb_bias_read"] + d["glb_psum_read"]
    d["glb_write"] = d["glb_psum_write"] + d["glb_ofmap_write"]
    d["glb_access"] = d["glb_read"] + d["glb_write"]
    d["passes"] = g * blocks * cblocks * mtiles
    return d


def terms(wl, arch, pool, m, n, e, p, q, r, t) -> dict[str, Any]:
    """Every cost term of one mapping (ints) or of many (numpy integer arrays of equal shape)."""
    d = {f"glb_usage_{k}": v for k, v in glb_usage(wl, m, n, e, p, q, r, t).items()}
    d["glb_usage"] = d.pop("glb_usage_total")
    d.update(_traffic(wl, pool, m, n, e, p, q, r, t))
    macs = wl.macs
    ppu_ops = wl.outputs * (PPU_OPS_POOL if pool > 1 else PPU_OPS_PLAIN)
    spad_bytes = sum(spad_traffic(wl).values())  # the rule every dataflow shares (workload.py)
    d["macs"] = macs
    d["ppu_ops"] = ppu_ops
    d["cycles_dram"] = arch.dram_cycles(d["dram_access"])
    d["cycles_glb"] = cdiv(d["glb_access"] * arch.glb_cycles_per_transaction, arch.noc_bytes_per_cycle)
    d["cycles_compute"] = d["passes"] * n * q * p * wl.F * wl.S  # one MAC per PE per cycle
    d["cycles_ppu"] = cdiv(ppu_ops, arch.ppu_ops_per_cycle)
    d["latency"] = d["cycles_dram"] + d["cycles_glb"] + d["cycles_compute"] + d["cycles_ppu"]
    en = arch.energy
    d["energy_compute"] = macs * en["mac"]
    d["energy_spad"] = spad_bytes * en["spad"]
    d["energy_glb"] = d["glb_access"] * en["glb"]
    d["energy_dram"] = d["dram_access"] * en["dram"]
    d["energy_ppu"] = ppu_ops * en["ppu_op"]
    d["energy_leakage"] = arch.leakage_w * d["latency"] / arch.clock_hz * PJ_PER_J
    d["energy_total"] = (
        d["energy_compute"] + d["energy_spad"] + d["energy_glb"] + d["energy_dram"] + d["energy_ppu"]
    ) + d["energy_leakage"]
    d["edp"] = d["energy_total"] * d["latency"]
    d["utilization"] = macs / (d["cycles_compute"] * arch.pes)
    d["intensity"] = macs / d["dram_access"]
    return d


def kernel_bytes(wl) -> int:
    """The convolution kernel's own DRAM bytes (handout, Lab 2 task 4.2 and its matrix example): its input,
    weights and output, each moved once; no bias, no pooling."""
    return wl.bytes_of("ifmap") + wl.bytes_of("filter") + wl.bytes_of("ofmap")


def kernel_intensity(wl) -> float:
    """The kernel's operational intensity: MACs over kernel_bytes."""
    return wl.macs / kernel_bytes(wl)


def balance_point(arch) -> float:
    """The roofline's ridge: peak MACs per cycle (one per PE) over the architecture's one DRAM bandwidth
    (Arch.dram_bytes_per_cycle; eyeriss: 48 / 0.8 = 60, where the handout divides by the 4 B bus alone)."""
    return arch.pes / arch.dram_bytes_per_cycle


def bound(compute_cycles: float, dram_cycles: float) -> str:
    """Which time bounds a node: "compute" where its PE-array cycles exceed its DRAM cycles, "memory" where
    they fall short, "balanced" where equal, "none" where neither takes a cycle (a view, a fused pool). Read
    from the latency model's own terms, so the label agrees with the latency on every node; a layer under
    the roofline's ridge whose array runs at low utilization is compute-bound by it, as its cycles say."""
    if compute_cycles == dram_cycles:
        return "balanced" if compute_cycles else "none"
    return "compute" if compute_cycles > dram_cycles else "memory"


def evaluate(wl, arch, mapping: Mapping, pool: int = 1) -> dict[str, Any]:
    """The lab's terms of one legal mapping as plain numbers (docs/accel-row-stationary.md)."""
    ok = legal(wl, arch, mapping, pool)
    if not ok:
        raise UserError(f"layer {wl.node}: mapping {mapping} is not legal on {arch.name}: {ok.reason}")
    d = terms(wl, arch, pool, *astuple(mapping))
    out: dict[str, Any] = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in d.items()}
    out["balance_point"] = balance_point(arch)
    out["bound"] = bound(out["cycles_compute"], out["cycles_dram"])
    out["intensity_kernel"] = kernel_intensity(wl)
    # the kernel at the roofline's peak: its MACs at one per PE per cycle against its bytes at the bandwidth
    out["bound_kernel"] = bound(wl.macs / arch.pes, kernel_bytes(wl) / arch.dram_bytes_per_cycle)
    return out
