"""A user's module file (`potq verify --rtl --ppu/--pe`), read and checked before any build: a text file that
defines the module potq instantiates, with potq's port names. Verilator would report a renamed port at the
line of potq's file that instantiates the module (potq_array_os.sv) and a missing module as a duplicate or
missing declaration somewhere else; this names the user's file and what is wrong in it, in one line."""

from __future__ import annotations

import re
from pathlib import Path

from potq.errors import UserError

COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
MODULE = re.compile(r"\bmodule\s+(?:automatic\s+|static\s+)?([A-Za-z_]\w*)")
IDENT = re.compile(r"[A-Za-z_$][\w$]*")


class Unparsed(Exception):
    """A header this reader can't follow (a syntax error, most likely): Verilator then reports it."""


def _group_end(text: str, i: int) -> int:
    """The index just past the parenthesis that closes the one at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return j + 1
    raise Unparsed


def port_names(text: str, module: str) -> list[str] | None:
    """The port names of `module` in SystemVerilog text (comments removed), in order; None if it is not
    defined there. ANSI headers (`input logic [7:0] a, b`) and plain lists (`(a, b); input a;`) alike.
    Raises Unparsed where the header's parentheses do not close."""
    text = COMMENTS.sub(" ", text)
    m = next((m for m in MODULE.finditer(text) if m.group(1) == module), None)
    if m is None:
        return None
    i = m.end()
    while True:  # skip `import pkg::*;` clauses and the `#( parameters )` list before the ports
        rest = text[i:].lstrip()
        i = len(text) - len(rest)
        if rest.startswith("import"):
            if ";" not in text[i:]:
                raise Unparsed
            i = text.index(";", i) + 1
        elif rest.startswith("#") and "(" in rest:
            i = _group_end(text, text.index("(", i))
        else:
            break
    if not text[i:].startswith("("):
        return []
    body = text[i + 1 : _group_end(text, i) - 1]
    names = []
    for chunk in body.split(","):
        chunk = re.sub(r"(\s*\[[^\]]*\])+\s*$", "", chunk.split("=")[0])  # unpacked dimensions, defaults
        words = IDENT.findall(chunk)
        if words:
            names.append(words[-1])
    return names


def user_module_text(path: Path, module: str, flag: str, potq_text: str) -> str:
    """The text of a user's file that must define `module` with the ports potq's own (potq_text) has;
    UserError naming the file otherwise (not there, not text, no such module, other port names)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such SystemVerilog file")
    raw = path.read_bytes()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise UserError(f"{flag} {path}: not a SystemVerilog text file (binary content)")
    try:
        ports = port_names(text, module)
    except Unparsed:
        return text  # Verilator names the syntax error, in this file
    if ports is None:
        found = [m.group(1) for m in MODULE.finditer(COMMENTS.sub(" ", text))]
        what = f"it defines {', '.join(found)}" if found else "it defines no module"
        what += "" if text.strip() else ": the file is empty"
        raise UserError(f"{flag} {path}: no module {module} ({what}); the file must define {module}")
    want = port_names(potq_text, module) or []
    missing, extra = [p for p in want if p not in ports], [p for p in ports if p not in want]
    if missing or extra:
        parts = [f"lacks port{'s' * (len(missing) > 1)} {', '.join(missing)}"] if missing else []
        parts += [f"has port{'s' * (len(extra) > 1)} {', '.join(extra)} that potq's does not"] if extra else []
        raise UserError(
            f"{flag} {path}: module {module} {' and '.join(parts)} (potq's ports: {', '.join(want)}; docs/rtl.md)"
        )
    return text
