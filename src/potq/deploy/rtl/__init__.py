"""potq's RTL: a PPU, a MAC PE, an R x C output-stationary systolic array, a vector unit and their controller in
SystemVerilog (this folder), built and run under Verilator (Debian's `verilator`). `rtl_sources` writes the
sources of one build (potq_pkg.sv generated from potq.ir.rules; a user's PPU or PE in potq's place);
`build_sim` verilates them once per array size and source text into a cache folder; potq.deploy.rtl_check
runs exported graphs through it against the golden model. docs/rtl.md has the ports and the cycle count."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

from potq.deploy.rtl.pkg import package_text
from potq.errors import UserError

PKG = "potq_pkg.sv"
SOURCES = ("potq_ppu.sv", "potq_pe.sv", "potq_array_os.sv", "potq_core.sv")  # the synthesizable design
TB = ("potq_tb.sv", "tb_main.cpp")  # the simulation top and its C++ driver
SWEEP = ("potq_ppu_sweep.sv", "ppu_sweep.cpp")  # the PPU's edge-sweep harness
PACKAGE = "verilator"  # Debian's package
# -O1 for the generated C++: as fast a model as Verilator's default -Os, built in about 3/4 of the time
MAKE = ("-MAKEFLAGS", "OPT_FAST=-O1")
LINT = ("-Wall", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM", "-Wno-BLKSEQ")


def source_text(name: str) -> str:
    return package_text() if name == PKG else files("potq.deploy.rtl").joinpath(name).read_text()


def verilator() -> str:
    exe = shutil.which("verilator")
    if exe is None:
        raise UserError(
            f"the RTL check needs Verilator: install Debian's package `{PACKAGE}` (apt-get install {PACKAGE})"
        )
    return exe


def rtl_sources(
    folder: Path, ppu: Path | None = None, pe: Path | None = None, extra: tuple[str, ...] = TB
) -> list[Path]:
    """Write potq_pkg.sv, the design (a user's PPU or PE file in place of potq's) and `extra` into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in (PKG, *SOURCES, *extra):
        user = {"potq_ppu.sv": ppu, "potq_pe.sv": pe}.get(name)
        if user is not None and not Path(user).is_file():
            raise UserError(f"{user}: no such SystemVerilog file")
        text = Path(user).read_text() if user is not None else source_text(name)
        if name == "potq_ppu.sv" and user is not None and "module potq_shift_round" not in text:
            text += "\n" + _shift_round_only()  # the sweep harness uses potq's shifter beside the user's PPU
        (folder / name).write_text(text)
        out.append(folder / name)
    return out


def _shift_round_only() -> str:
    text = source_text("potq_ppu.sv")
    return text[text.index("// round_shift(acc, shift)") :]


def cache_root() -> Path:
    from potq.data import default_cache_dir

    return Path(os.environ.get("POTQ_RTL_CACHE", default_cache_dir() / "rtl"))


class VerilatorError(Exception):
    """Verilator rejected the sources; the message is its first error line."""


def verilate(top: str, srcs: list[Path], args: list[str], tag: str, lenient: bool = False) -> tuple[Path, bool]:
    """The Verilator model of `srcs` (top module `top`, extra Verilator `args`), built once per source text
    and arguments into the cache folder `<top>-<tag>-<key>`; returns (the executable, whether it was built
    now). `lenient`: lint warnings do not stop the build (a user's module). Raises VerilatorError."""
    exe_tool = verilator()
    version = subprocess.run([exe_tool, "--version"], capture_output=True, text=True).stdout.strip()
    key = hashlib.sha256(f"{version} {tag} {args} {LINT} {MAKE} {lenient}".encode())
    for s in srcs:
        key.update(s.name.encode() + s.read_bytes())
    cached = cache_root() / f"{top}-{tag}-{key.hexdigest()[:16]}"
    exe = cached / "obj_dir" / "potq_sim"
    if exe.exists():
        return exe, False
    cached.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
    try:
        for s in srcs:
            shutil.copy(s, work / s.name)
        cmd = [exe_tool, "--cc", "--exe", "--build", "-j", "2", *MAKE, *LINT, "--top-module", top, "-o", "potq_sim"]
        cmd += [*args, *(["-Wno-fatal"] if lenient else []), *(s.name for s in srcs)]
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if r.returncode:
            errors = [line for line in (r.stderr + r.stdout).splitlines() if line.startswith("%")]
            raise VerilatorError((errors or ["(no message)"])[0])
        try:
            work.rename(cached)
        except OSError:  # another process built the same model meanwhile
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return exe, True


def build_sim(
    rows: int, cols: int, ppu: Path | None = None, pe: Path | None = None, sweep: bool = False
) -> tuple[Path, bool]:
    """The Verilator model (potq_tb, or the PPU sweep harness), built once per source text and array size
    into the cache; returns (the executable, whether it was built now)."""
    extra = SWEEP if sweep else TB
    top = "potq_ppu_sweep" if sweep else "potq_tb"
    args = [] if sweep else [f"-GR={rows}", f"-GC={cols}"]
    with tempfile.TemporaryDirectory(prefix="potq-rtl-src-") as tmp:
        srcs = rtl_sources(Path(tmp), ppu, pe, extra)
        try:  # a user's module: lint warnings are theirs to weigh, errors still stop the build
            return verilate(top, srcs, args, f"{rows}x{cols}", lenient=bool(ppu or pe))
        except VerilatorError as e:
            first = str(e)
            for name, user in (("potq_ppu.sv", ppu), ("potq_pe.sv", pe)):
                if user is not None:
                    first = first.replace(f" {name}:", f" {user}:")
            where = "your --ppu/--pe file" if (ppu or pe) else "potq's RTL"
            raise UserError(f"Verilator rejects {where}: {first}") from None
