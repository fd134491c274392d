"""The accelerator's architecture as a JSON file, every field checked: a preset name or a path -> `Arch`.

Claim: `load_arch` returns an `Arch` only when every field is present, of its type and in its range
(positive array and buffer sizes, non-negative finite energies, a known dataflow, each at most its limit in
potq/accel/limits.py); anything else, a file over MAX_ARCH_FILE_BYTES (refused before it is read) or nested
deeper than MAX_JSON_DEPTH included, is one `UserError` line naming the file and the field. Presets live in
potq/accel/archs/*.json.
Energies: `mac` and `ppu_op` per operation; `spad`, `glb`, `dram` per BYTE moved (an 8-bit operand is
one access of the course lab's accelerator, so its per-access energies read as per-byte ones; an int32
partial sum costs four). An energy may instead name entries of potq's energy table (`energy_table`,
"potq-45nm" = src/potq/energy_45nm.json): a compute op ("int8_mult+int32_add") or a memory level
("dram", its 64-bit access priced per byte as one eighth), so that the two models speak one set of pJ.
Evidence: tests/test_accel.py loads every preset and breaks each field in turn.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from potq.accel import limits
from potq.errors import UserError
from potq.ir.rules import ACCUMULATORS

PRESETS = (
    "eyeriss",  # the course lab's (AOC 2025 Lab 2), its PPU included: 1 operation per cycle
    "eyeriss-ppu8",  # potq's faster variant: the same with an 8-operation PPU (`eyeriss` before issue 30)
    "eyeriss-45nm",
    "systolic-8",
    "systolic-16",
    "systolic-32",
    "systolic-16-45nm",
    "systolic-16-45nm-sized",  # systolic-16-45nm with accumulators sized to each node's proven bound
    "potq-rtl",  # potq's own RTL as built, timed as Verilator counts it (potq.accel.rtl)
)
DEFAULT_ARCH = "eyeriss"  # the course lab's accelerator: `potq accel` and `q.accel()` without --arch
# the accelerator every quantized model is priced on (its record's costs, `potq mixed`'s default): a 16x16
# output-stationary array with the 45 nm table
COST_ARCH, COST_DATAFLOW = "systolic-16-45nm", "os"
DATAFLOWS = ("rs", "ws", "os", "is")
SPADS = ("ifmap", "filter", "psum")
ENERGIES = ("mac", "spad", "glb", "dram", "ppu_op")
UNITS = ("relative", "pJ")
PJ_PER_J = 1e12  # leakage W x s -> the energy unit (pJ; the lab's relative units are pJ too)
# an architecture's `timing`: the lab's serial sum, or potq's RTL as Verilator counts it (potq.accel.rtl)
TIMINGS = ("serial", "potq-rtl")
RTL_TIMING = TIMINGS[1]
# an architecture's `overlap` (and `potq accel --overlap`): "none", the lab's serial sum of the levels, or
# "double-buffered", each level working on one tile while the next streams in (potq.accel.model.overlapped)
OVERLAPS = ("none", "double-buffered")
TABLES = {"potq-45nm": None}  # name -> path (None: potq's own table, potq.energy.load_table())


@dataclass(frozen=True)
class Arch:
    name: str
    pe_rows: int
    pe_cols: int
    spad_bytes: dict[str, int]  # per PE: ifmap, filter, psum
    glb_bytes: int
    bus_bytes_per_cycle: int  # DRAM <-> global buffer
    noc_bytes_per_cycle: int  # global buffer <-> PE array
    glb_cycles_per_transaction: int
    dram_cycles_per_transaction: int
    energy_unit: str
    energy: dict[str, float]  # mac, ppu_op per operation; spad, glb, dram per byte
    clock_hz: float
    leakage_w: float
    dataflows: tuple[str, ...]
    ppu_ops_per_cycle: int  # post-processing unit: operations per cycle (requantization, add, pooling)
    energy_table: str | None = None  # price compute per potq.energy's terms from this table (see model.py)
    # "int32" (default) or "proven": partial sums and their adds as wide as each node's proven worst case
    # (potq.ir.bounds.ACCUMULATORS), e.g. a dataflow accelerator that sizes every layer's datapath
    accumulator: str = ACCUMULATORS[0]
    # "serial" (default): latency = compute + DRAM + GLB + PPU, the course lab's sum; "potq-rtl": each node's
    # cycles are potq's RTL's (potq.accel.rtl: its array, its vector unit, its memories inside those cycles)
    timing: str = TIMINGS[0]
    overlap: str = OVERLAPS[0]  # "double-buffered": a node takes its slowest level plus one tile of the others
    source: str = ""  # the file it came from

    @property
    def pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def dram_bytes_per_cycle(self) -> float:
        """The one DRAM bandwidth: a transaction moves bus_bytes_per_cycle bytes in dram_cycles_per_transaction
        cycles (eyeriss: 4 B per 5 cycles, 0.8 B/cycle). The latency's DRAM cycles (`dram_cycles`), the
        roofline's slope and ridge and the Bound column all read it, so they cannot disagree (issue 30)."""
        return self.bus_bytes_per_cycle / self.dram_cycles_per_transaction

    def dram_cycles(self, nbytes):
        """Cycles to move nbytes at dram_bytes_per_cycle, rounded up: ceil(bytes x cycles per transaction /
        bus bytes), in integers so that it is exact (on an int, or numpy integer arrays: search.py's grid)."""
        return -(-nbytes * self.dram_cycles_per_transaction // self.bus_bytes_per_cycle)


def preset_path(name: str) -> Path:
    return Path(str(resources.files("potq.accel").joinpath("archs", f"{name}.json")))


def _shown(v: object) -> str:
    """A value as an error message quotes it: a hostile one (a 1 MB string, 10**1000, deep lists) shortened."""
    return reprlib.repr(v)


def _int(where: str, raw: dict, key: str, hi: int, lo: int = 1) -> int:
    if key not in raw:
        raise UserError(f"{where}: missing field {key!r}")
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{where}: field {key!r} must be an integer, got {_shown(v)}")
    if v < lo:
        raise UserError(f"{where}: field {key!r} must be at least {lo}, got {_shown(v)}")
    if v > hi:
        raise UserError(f"{where}: field {key!r} must be at most {hi:,}, got {_shown(v)}")
    return v


def _num(where: str, raw: dict, key: str, hi: float, positive: bool = False) -> float:
    if key not in raw:
        raise UserError(f"{where}: missing field {key!r}")
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise UserError(f"{where}: field {key!r} must be a finite number, got {_shown(v)}")
    if v < 0 or (positive and v == 0):
        raise UserError(f"{where}: field {key!r} must be {'positive' if positive else 'non-negative'}, got {v}")
    if v > hi:
        raise UserError(f"{where}: field {key!r} must be at most {hi:g}, got {_shown(v)}")
    return float(v)


def _obj(where: str, raw: dict, key: str) -> dict:
    if key not in raw:
        raise UserError(f"{where}: missing field {key!r}")
    if not isinstance(raw[key], dict):
        raise UserError(f"{where}: field {key!r} must be an object")
    return raw[key]


def _table_energy(where: str, key: str, text: str, table) -> float:
    """'int8_mult+int32_add' -> the sum of the table's compute entries; a memory level -> pJ per byte."""
    total = 0.0
    for part in text.split("+"):
        part = part.strip()
        if part in table.compute:
            total += table.compute[part]
        elif part in table.memory:
            total += table.memory[part] / 8  # the table prices 64-bit accesses; the model counts bytes
        else:
            names = ", ".join([*table.compute, *table.memory])
            raise UserError(f"{where}: field 'energy.{key}': {_shown(part)} is not in the energy table ({names})")
    return total


def _energies(where: str, raw: dict) -> tuple[dict[str, float], str | None]:
    energy = _obj(where, raw, "energy")
    table_name = raw.get("energy_table")
    table = None
    if table_name is not None:
        if table_name not in TABLES:
            names = ", ".join(TABLES)
            raise UserError(f"{where}: field 'energy_table' must be one of {names}, got {_shown(table_name)}")
        from potq.energy import load_table

        table = load_table(TABLES[table_name])
    out = {}
    for key in ENERGIES:
        v = energy.get(key)
        if isinstance(v, str):
            if table is None:
                raise UserError(f"{where}: field 'energy.{key}' names table entries but 'energy_table' is not set")
            out[key] = _table_energy(where, key, v, table)
        else:
            out[key] = _num(where, {f"energy.{key}": v} if key in energy else {}, f"energy.{key}", limits.MAX_ENERGY)
    extra = sorted(set(energy) - set(ENERGIES))
    if extra:
        raise UserError(f"{where}: unknown field {_shown('energy.' + extra[0])} (expected {', '.join(ENERGIES)})")
    return out, table_name


def _modes(where: str, raw: dict) -> tuple[list[str], str, str, str]:
    """The fields that choose a model: dataflows, accumulator, timing (potq-rtl: the RTL's one os array),
    overlap."""
    flows = raw.get("dataflows")
    known_flows = isinstance(flows, list) and flows and all(f in DATAFLOWS for f in flows)
    if not known_flows or len(set(flows)) < len(flows):  # a repeat would repeat its DSE points
        names = ", ".join(DATAFLOWS)
        got = _shown(flows)
        raise UserError(f"{where}: field 'dataflows' must be a non-empty list of {names}, each once, got {got}")
    accumulator = raw.get("accumulator", ACCUMULATORS[0])
    if accumulator not in ACCUMULATORS:
        choices = ", ".join(ACCUMULATORS)
        raise UserError(f"{where}: field 'accumulator' must be one of {choices}, got {_shown(accumulator)}")
    timing = raw.get("timing", TIMINGS[0])
    if timing not in TIMINGS:
        raise UserError(f"{where}: field 'timing' must be one of {', '.join(TIMINGS)}, got {_shown(timing)}")
    if timing == RTL_TIMING and flows != ["os"]:  # the RTL is one output-stationary array
        raise UserError(f"{where}: field 'dataflows' must be [\"os\"] with timing {RTL_TIMING}, got {_shown(flows)}")
    overlap = raw.get("overlap", OVERLAPS[0])
    if overlap not in OVERLAPS:
        raise UserError(f"{where}: field 'overlap' must be one of {', '.join(OVERLAPS)}, got {_shown(overlap)}")
    check_overlap(where, timing, overlap)
    return flows, accumulator, timing, overlap


def check_overlap(where: str, timing: str, overlap: str) -> None:
    """potq's RTL has its own count (its memories inside its cycles): no levels to overlap."""
    if timing == RTL_TIMING and overlap != OVERLAPS[0]:
        raise UserError(f"{where}: overlap {overlap} does not apply to timing {RTL_TIMING}, the RTL's own count")


def parse_arch(raw: object, where: str) -> Arch:
    """Check every field of an architecture (a parsed JSON object) and build the Arch."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= limits.MAX_NAME_CHARS:
        raise UserError(f"{where}: field 'name' must be a string of 1 to {limits.MAX_NAME_CHARS} characters")
    if not isinstance(raw.get("comment", ""), str):
        raise UserError(f"{where}: field 'comment' must be a string")
    spad = _obj(where, raw, "spad_bytes")
    spads = {
        k: _int(where, {f"spad_bytes.{k}": spad[k]} if k in spad else {}, f"spad_bytes.{k}", limits.MAX_SPAD_BYTES)
        for k in SPADS
    }
    unit = raw.get("energy_unit")
    if unit not in UNITS:
        raise UserError(f"{where}: field 'energy_unit' must be one of {', '.join(UNITS)}, got {_shown(unit)}")
    energy, table = _energies(where, raw)
    flows, accumulator, timing, overlap = _modes(where, raw)
    known = {*Arch.__dataclass_fields__} - {"source"}
    extra = sorted(set(raw) - known - {"comment"})
    if extra:
        raise UserError(f"{where}: unknown field {_shown(extra[0])}")
    side, per_cycle, cycles = limits.MAX_PE_SIDE, limits.MAX_BYTES_PER_CYCLE, limits.MAX_CYCLES_PER_TRANSACTION
    return Arch(
        name=name,
        pe_rows=_int(where, raw, "pe_rows", side),
        pe_cols=_int(where, raw, "pe_cols", side),
        spad_bytes=spads,
        glb_bytes=_int(where, raw, "glb_bytes", limits.MAX_GLB_BYTES),
        bus_bytes_per_cycle=_int(where, raw, "bus_bytes_per_cycle", per_cycle),
        noc_bytes_per_cycle=_int(where, raw, "noc_bytes_per_cycle", per_cycle),
        glb_cycles_per_transaction=_int(where, raw, "glb_cycles_per_transaction", cycles, lo=0),
        # at least 1: a free DRAM would put the roofline's ridge at 0 and divide dram_bytes_per_cycle by 0
        dram_cycles_per_transaction=_int(where, raw, "dram_cycles_per_transaction", cycles),
        energy_unit=unit,
        energy=energy,
        clock_hz=_num(where, raw, "clock_hz", limits.MAX_CLOCK_HZ, positive=True),
        leakage_w=_num(where, raw, "leakage_w", limits.MAX_LEAKAGE_W),
        dataflows=tuple(flows),
        ppu_ops_per_cycle=_int(where, raw, "ppu_ops_per_cycle", limits.MAX_PPU_OPS_PER_CYCLE),
        energy_table=table,
        accumulator=accumulator,
        timing=timing,
        overlap=overlap,
        source=where,
    )


def json_depth(text: str) -> int:
    """How deep a JSON text nests its arrays and objects, brackets inside strings left out: one pass over
    the brackets, quotes and backslashes, checked before json.loads, whose recursion a deeply nested file
    would otherwise exhaust (a regular expression for the strings could take quadratic time)."""
    depth = deepest = 0
    in_string, skip = False, -1
    for m in re.finditer(r'[\[\]{}"\\]', text):
        c, i = m.group(), m.start()
        if i == skip:  # the character a backslash escapes
            continue
        if in_string:
            if c == "\\":
                skip = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def read_json(path: Path, where: str) -> object:
    """The parsed file, read only up to MAX_ARCH_FILE_BYTES (a larger one is refused before it is read
    whole) and nested at most MAX_JSON_DEPTH deep; anything else is one line."""
    cap = limits.MAX_ARCH_FILE_BYTES
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise UserError(f"{where}: can't read it ({e.strerror or e})") from None
    if len(data) > cap:
        raise UserError(f"{where}: larger than {cap // 1024} KiB; an architecture file is a few hundred bytes")
    try:
        text = data.decode("utf-8")
        if json_depth(text) > limits.MAX_JSON_DEPTH:
            raise UserError(f"{where}: nested deeper than {limits.MAX_JSON_DEPTH} levels; the format nests 2")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: json's, and ints of 4,300+ digits
        raise UserError(f"{where}: can't read it as JSON ({e})") from None


def load_arch(name_or_path: str | Path) -> Arch:
    """A preset (eyeriss, systolic-16, ...) or a JSON file; a bad one is one line naming the file and field."""
    text = str(name_or_path)
    path = preset_path(text) if text in PRESETS else Path(text)
    where = f"architecture {text}" if text in PRESETS else f"--arch {text}"
    if text not in PRESETS and not path.is_file():
        raise UserError(f"{where}: no such file (presets: {', '.join(PRESETS)})")
    return parse_arch(read_json(path, where), where)
