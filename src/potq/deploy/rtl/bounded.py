"""Running Verilator and the models it builds without trusting them (issue 32): a user's module may loop in an
`initial` block, `$display` every cycle or `$finish` at once, and potq may be killed mid-build. So every such
process runs

- in its own process group, beside a watchdog that holds the read end of a pipe whose write end only potq
  holds: when potq ends, however it ends (SIGKILL included), the pipe closes and the watchdog kills the whole
  group (Verilator's make and g++ children too), and it does so after a normal end as well, so nothing of the
  group outlives the call;
- under a wall-clock limit (the caller derives it from the work: the cycles it expects), the group killed past it;
- with its output in files capped by RLIMIT_FSIZE (the kernel stops a writer past the cap with SIGXFSZ), so a
  chatty module costs at most the cap in disk and memory.

Temporary folders carry potq's process id (`pid_folder`), so a later run removes those a killed run left behind
(`sweep_stale`)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# the watchdog: blocks on the pipe until potq's end closes it, then kills its own process group
WATCHDOG = "import os, signal, sys; sys.stdin.buffer.read(); os.killpg(0, signal.SIGKILL)"
OUT = "potq-out-"  # the output files' folder in the system's temporary folder: potq-out-<pid>.<random>


@dataclass
class Ran:
    """How a bounded process ended: its exit status (negative: the signal), its output (at most the cap)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    flooded: bool = False  # it wrote more than the cap (stopped by SIGXFSZ)


def _child_setup(pgid: int, max_bytes: int):
    def setup() -> None:  # in the child, before exec: join the watchdog's group, cap every file it writes
        os.setpgid(0, pgid)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return setup


def run_bounded(
    cmd: list[str], timeout: float, max_bytes: int, stdin: bytes | None = None, cwd: Path | None = None
) -> Ran:
    """Run cmd (see the module docstring) with `stdin` as its input; its stdout and stderr come back decoded
    (undecodable bytes replaced), each at most max_bytes."""
    read_end, write_end = os.pipe()
    # a process group of its own in potq's session (a child may join a group only in its own session)
    dog = subprocess.Popen([sys.executable, "-c", WATCHDOG], stdin=read_end, preexec_fn=os.setpgrp)
    os.close(read_end)
    try:
        with pid_folder(OUT) as tmp:
            out_path, err_path = tmp / "out", tmp / "err"
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                p = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=cwd,
                    preexec_fn=_child_setup(dog.pid, max_bytes),
                )
                timed_out = _wait(p, stdin, timeout, dog.pid)
            text = [path.read_bytes()[:max_bytes].decode(errors="replace") for path in (out_path, err_path)]
    finally:
        os.close(write_end)  # the watchdog ends the group: nothing of it outlives this call
        dog.wait()
    return Ran(p.returncode, *text, timed_out=timed_out, flooded=p.returncode == -signal.SIGXFSZ)


def _wait(p: subprocess.Popen, stdin: bytes | None, timeout: float, pgid: int) -> bool:
    """Feed stdin and wait up to timeout s; True when it ran past (then the group is killed)."""
    try:
        p.communicate(stdin, timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        p.wait()
        return True
    except BaseException:  # Ctrl-C, or anything else: the group goes with potq
        os.killpg(pgid, signal.SIGKILL)
        p.wait()
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_stale(parent: Path, prefix: str) -> None:
    """Remove the folders `<prefix><pid>.*` under parent whose process is gone (a killed potq's leftovers)."""
    if not parent.is_dir():
        return
    for d in parent.glob(f"{prefix}*"):
        pid = d.name[len(prefix) :].split(".", 1)[0]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


@contextmanager
def pid_folder(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary folder named `<prefix><pid>.<random>` under parent (default: the system's temporary
    folder), removed on exit; leftovers of killed runs with the same prefix are removed first."""
    parent = Path(parent or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
