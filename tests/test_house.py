"""The house rules of issues 17 and 26, checked on the source itself: the import graph of src/potq has no cycle
and no arrow up the floors (LAYERS), and no interpreter loads the quantizer, the trainer, a run folder's jobs
or the workflow, even indirectly; the quantizer is a library (no trainer, no data module); strings are parsed at
the edge (no scheme recognized by its name, no `Rounding | str`); and functions stay short."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "potq"
INTERPRETERS = ["ir", "golden.py", "energy.py", "deploy", "accel"]
# The floors of the house, lowest first: a module may import its own floor or a lower one, never a higher one.
# Every module of src/potq must sit on one (a prefix names a package and everything in it).
LAYERS = [
    ("base", ["potq.errors", "potq.allocator", "potq.machine"]),
    ("the integer graph", ["potq.ir"]),
    ("support", ["potq.files", "potq.plots", "potq.data", "potq.models", "potq.recipes", "potq.summary"]),
    ("interpreters", ["potq.golden", "potq.energy", "potq.accel", "potq.deploy"]),
    ("the quantizer", ["potq.quant"]),
    ("run folders and the trainer", ["potq.runs", "potq.train"]),
    ("the run's jobs", ["potq.jobs"]),
    ("the whole run", ["potq.budget", "potq.report", "potq.workflow"]),
    ("entry points", ["potq.api", "potq.cli", "potq.__main__", "potq"]),
]
# what no interpreter may load, directly or through another module
ABOVE_THE_INTERPRETERS = ("potq.quant", "potq.train", "potq.runs", "potq.jobs", "potq.workflow")


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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the potq modules it imports, anywhere in its source (inside functions too): `from a.b import c`
    counts as a.b.c where that is a module, else as a.b."""
    modules = {module_name(p): p for p in sources(".")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first search meets (each reported once, from where it closes)."""
    found, state = [], {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == "open":
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u, [])
    return found


def floor(module: str) -> int:
    """The index in LAYERS of the longest prefix that names the module."""
    best = max(
        (
            (len(p), i)
            for i, (_, prefixes) in enumerate(LAYERS)
            for p in prefixes
            if module == p or module.startswith(p + ".")
        ),
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} sits on no floor of LAYERS")
    return best[1]


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} ({LAYERS[floor(m)][0]}) imports {d} ({LAYERS[floor(d)][0]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if floor(d) > floor(m)
    ]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in graph.get(todo.pop(), ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_no_import_runs_up_the_floors():
    assert upward(import_graph()) == []


def test_the_checks_catch_a_planted_cycle_and_an_upward_import():
    graph = import_graph()
    graph["potq.errors"] = graph["potq.errors"] | {"potq.files"}  # potq.files imports potq.errors
    assert ["potq.errors", "potq.files", "potq.errors"] in cycles(graph)
    graph["potq.golden"] = graph["potq.golden"] | {"potq.runs.quantized"}
    assert "potq.golden (interpreters) imports potq.runs.quantized (run folders and the trainer)" in upward(graph)


@pytest.mark.parametrize("path", sources(*INTERPRETERS), ids=lambda p: str(p.relative_to(SRC)))
def test_no_interpreter_reaches_the_quantizer_or_the_jobs(path):
    """Through any chain of imports, lazy ones included (a superset of what loading it can load)."""
    reached = reachable(import_graph(), module_name(path))
    assert not {m for m in reached if m.startswith(ABOVE_THE_INTERPRETERS)}


def test_a_fresh_interpreter_importing_every_interpreter_loads_no_quantizer():
    modules = [module_name(p) for p in sources(*INTERPRETERS)]
    code = f"import sys; {'; '.join(f'import {m}' for m in modules)}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "potq.golden" in loaded and "potq.deploy.export" in loaded
    assert not [m for m in loaded if m.startswith(ABOVE_THE_INTERPRETERS)]


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
