"""The house rules of issue 17, checked on the source itself: the interpreters read only the integer graph
(no import of the quantizer), the quantizer is a library (no trainer, no data module), strings are parsed at
the edge (no scheme recognized by its name, no `Rounding | str`), and functions stay short."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "potq"
INTERPRETERS = ["ir", "golden.py", "energy.py", "export.py", "deploy", "accel"]


def sources(*parts: str) -> list[Path]:
    files = []
    for part in parts:
        p = SRC / part
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", sources(*INTERPRETERS), ids=lambda p: str(p.relative_to(SRC)))
def test_interpreters_import_nothing_from_the_quantizer(path):
    assert not {m for m in imported_modules(path) if m == "potq.quant" or m.startswith("potq.quant.")}


@pytest.mark.parametrize("path", sources("ir"), ids=lambda p: str(p.relative_to(SRC)))
def test_the_graph_package_imports_nothing_outside_it_but_errors(path):
    assert {m for m in imported_modules(path) if m.startswith("potq.")} <= {
        *(f"potq.ir.{p.stem}" for p in sources("ir")),
        "potq.ir",
        "potq.errors",
    }


@pytest.mark.parametrize("path", sources("quant"), ids=lambda p: str(p.relative_to(SRC)))
def test_the_quantizer_is_a_library(path):
    assert not {m for m in imported_modules(path) if m in ("potq.train", "potq.data", "potq.recipes", "potq.runs")}


def test_strings_are_parsed_at_the_edge():
    text = "\n".join(p.read_text() for p in sources("."))
    assert 'startswith("pot-")' not in text and "Rounding | str" not in text


def test_no_function_over_80_lines():
    long = [
        f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in sources(".")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert not long
