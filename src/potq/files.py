"""Atomic file writes: a kill mid-write leaves the old file or none, never a broken one."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from potq.errors import UserError


def atomic_write(path: Path, write: Callable[[Path], Any], size: int | None = None) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place; `size`, the bytes it
    writes where known, goes into the message of a full disk."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    clear_stale(path.parent, f".{path.name}.")
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota: name the user's file, not potq's temporary one
        Path(tmp).unlink(missing_ok=True)
        need = f", {size:,} bytes needed" if size is not None else ""
        raise UserError(
            f"{path}: can't write it ({e.strerror or e}{need}); the old file, if any, is unchanged"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_prefix(name: str) -> str:
    """Temporary files and folders carry their writer's pid, so that a later run can tell them stale."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(folder: Path, prefix: str) -> None:
    """Remove what a killed potq process left half-written beside a file or folder it was writing."""
    for p in Path(folder).glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix) :].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), len(data))


def save_torch(obj: Any, path: Path) -> None:
    """Serialized in memory first: torch's own writer turns a full disk into a RuntimeError of its own
    words; written by save_bytes it is an OSError, one line naming the file and the bytes needed."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    save_bytes(buffer.getvalue(), path)


def save_text(text: str, path: Path) -> None:
    save_bytes(text.encode(), path)


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, None where there is no file: what a run's records fingerprint."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


# ---- records that carry their own fingerprint: a hand edit is told from potq's figures ------------

RECORD_DIGEST = "record_sha256"


def record_digest(record: dict) -> str:
    """SHA-256 of a record's content without its own fingerprint, as JSON reads it back (canonical: keys
    sorted, tuples as lists)."""
    content = json.loads(json.dumps({k: v for k, v in record.items() if k != RECORD_DIGEST}))
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def save_record(record: dict, path: Path) -> None:
    """save_json of a result record (metrics, quant_, verify_, deploy_, energy, accel, summary), with the
    fingerprint of its content: a figure edited by hand no longer matches it (record_edited)."""
    save_json({**record, RECORD_DIGEST: record_digest(record)}, path)


def record_edited(record: dict) -> bool:
    """A record whose content is not what potq wrote (its fingerprint no longer matches). A record without
    one (potq 0.4's, or a file potq does not fingerprint) can't tell, and counts as not edited."""
    return RECORD_DIGEST in record and record[RECORD_DIGEST] != record_digest(record)


def read_record(path: Path) -> Record:
    """read_json of a result record that is shown as potq's answer (the report): an edited one is one line."""
    record = read_json(path)
    if record_edited(record):
        raise UserError(
            f"{path}: edited after potq wrote it (its content no longer matches its {RECORD_DIGEST}); "
            "make it again (potq run redoes it) or restore it"
        )
    return record


@contextlib.contextmanager
def stderr_to_log(path: Path, title: str):
    """What is written to stderr inside the block goes to the log `path` (appended under a line naming `title`),
    not to the user's terminal: the third-party libraries potq checks against (TVM's C++ LOG(WARNING),
    onnxruntime's) write to file descriptor 2 themselves, past Python's sys.stderr, and their lines ("Fast mode
    segfaults when ...") are theirs, not the user's answer; Python's warnings inside the block go there too. A
    quiet block writes nothing (no empty log). An exception still reaches the caller, and the CLI's one line,
    after stderr is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+", buffering=1) as held:
        os.dup2(held.fileno(), 2)
        try:
            with contextlib.redirect_stderr(held):
                yield
        finally:
            held.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            if text:
                with open(path, "a") as log:
                    log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n{text}")


# ---- folders that potq writes whole (export): replaced only when potq wrote them ------------------

MANIFEST = ".potq-manifest.json"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output_dir(
    out: Path, kind: str, protect: tuple[Path, ...] = (), flag: str = "--out", force: bool | None = None
) -> None:
    """Refuse, before any work, an --out that potq may not replace: a file or a symbolic link, the current
    folder or a folder holding it or one of `protect` (the run being exported), a non-empty folder with
    anything potq did not write there (it lists what it wrote in its manifest), or one where a file potq
    wrote was changed since (its SHA-256 no longer the manifest's: the user's edit, kept). `force`: True
    replaces such edited files (the user said so for this folder), False offers --force in the message,
    None (a command without that option) does not."""
    out = Path(out)
    if out.is_symlink():  # replacing it would replace the link, not the folder it names: refused, untouched
        raise UserError(
            f"{flag} {out}: a symbolic link (to {os.readlink(out)}); potq replaces {flag} whole: "
            "give the folder itself, or another path"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out}: is a file, not a folder")
    for p in (Path.cwd(), *protect):
        if _inside(p, out):
            raise UserError(f"{flag} {out}: holds {p}; potq replaces the {flag} folder whole, choose another path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    written = _manifest(out, kind)
    if written is None:
        raise UserError(f"{flag} {out}: a non-empty folder that potq did not write; choose another path or empty it")
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in written or p.is_symlink():
            raise UserError(f"{flag} {out}: holds {rel}, which potq did not write; move it or choose another path")
    if force:
        return
    for rel, digest in written.items():
        if digest is not None and (out / rel).is_file() and file_digest(out / rel) != digest:
            hint = ", or pass --force to replace it" if force is False else ""
            raise UserError(
                f"{flag} {out}: {rel} was changed since potq wrote it (its SHA-256 is not the manifest's); "
                f"it is kept: move it elsewhere{hint}"
            )


def _manifest(out: Path, kind: str) -> dict[str, str | None] | None:
    """What potq wrote into `out` by its manifest: each file's SHA-256 (None where a manifest of potq 0.4 or
    older records none), or None where `out` holds no manifest of this kind."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("tool") != "potq" or manifest.get("kind") != kind:
            return None
        digests = manifest.get("sha256") or {}
        return {str(f): digests.get(f) for f in manifest["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def missing_written(out: Path, kind: str) -> str | None:
    """The first file potq's manifest lists in `out` that is no longer there, in words, or None."""
    written = _manifest(Path(out), kind) or {}
    return next((f"{Path(out).name}/{rel} is missing" for rel in written if not (Path(out) / rel).is_file()), None)


def replace_dir(
    tmp: Path, out: Path, kind: str, protect: tuple[Path, ...] = (), flag: str = "--out", force: bool | None = None
) -> None:
    """Move the finished folder `tmp` to `out`, after writing its manifest (every file and its SHA-256); an
    old `out` goes only if check_output_dir allows it (checked again: the folder may have changed meanwhile)."""
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    digests = {f: file_digest(tmp / f) for f in files}
    manifest = {"tool": "potq", "kind": kind, "files": files, "sha256": digests}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
    check_output_dir(out, kind, protect, flag, force)
    old = None
    if out.exists():
        old = out.with_name(f"{temp_prefix(out.name)}old")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


# ---- one potq process per run folder ------------------------------------------------------------

LOCK = ".potq.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, what: str):
    """Hold an exclusive lock on a run folder while a command writes into it; a second potq process on
    the same folder stops with one line naming the holder. The OS drops the lock when a process dies;
    the lock file goes when the command ends (removed while still held, and a lock taken on a file
    that was removed meanwhile does not count)."""
    folder = Path(folder)
    if not folder.is_dir():
        yield
        return
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{what} {folder}: in use by another potq process ({holder}); wait for it to end") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed it as we locked it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def read_json(path: Path) -> Record:
    """A JSON object that potq wrote (a record: quant_*.json, verify_*.json, deploy_*.json, ...), every object
    in it a Record: a broken or foreign file, or a field its reader needs and does not find, is one line
    naming the file (and the field)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: can't read it as JSON ({type(e).__name__}); was it cut short or edited?") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object; was it edited?")
    return _checked(data, Path(path), "")


class MissingField(UserError, KeyError):
    """A record without a field its reader needs: a user mistake (an edited or foreign file; exit 2). Also a
    KeyError, so that a reader which takes a missing key for "not potq's file" still catches it."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own str() would quote the message


class Record(dict):
    """A JSON object read from a record file: `record[key]` on a missing key raises MissingField naming the
    file and the field's place (`layers[2].name`) instead of a KeyError traceback. `.get` is unchanged."""

    def __init__(self, data=(), path: Path | None = None, where: str = ""):
        super().__init__(data)  # Record(pairs) as dict(pairs): dataclasses.asdict copies a dict by its type
        self.path, self.where = path, where

    def __missing__(self, key: object):
        if self.path is None:  # such a copy knows no file: a plain dict's KeyError
            raise KeyError(key)
        field = f"{self.where}.{key}" if self.where else str(key)
        raise MissingField(f"{self.path}: no field {field!r}; was it cut short or edited?")


def _checked(value: Any, path: Path, where: str) -> Any:
    """Every object in a record's JSON as a Record that knows its file and its place in it."""
    if isinstance(value, dict):
        return Record({k: _checked(v, path, f"{where}.{k}" if where else k) for k, v in value.items()}, path, where)
    if isinstance(value, list):
        return [_checked(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
