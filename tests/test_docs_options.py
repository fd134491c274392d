"""Issue 31, item 4: the docs name no option that the command does not take. Every `potq <command> ... --option`
in the README and docs/*.md (code blocks and inline code) is an option of that command's parser
(potq.cli.build_parser), every value it shows for an option with a fixed set is one of that set, and the README's
table of the steps lists every choice where it lists them (`--recipe seed|seed-ls|fast`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from potq.accel.arch import DATAFLOWS
from potq.cli import build_parser
from potq.deploy.formats import FORMAT_CHOICES, parse_formats
from potq.errors import UserError
from potq.recipes import PRECISIONS, RECIPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:[ =](?!-)([^\s\[\]`]+))?")  # the value: not an option


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """potq's subcommands by name, each with its own parser, built as the command builds them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


PARSERS = subcommands()
COMMAND = re.compile(r"(?<![\w.-])potq (" + "|".join(map(re.escape, PARSERS)) + r")\b")
# The values of options whose set is not an argparse `choices` (a recipe name, a list of formats, a precision)
VALUE_SETS = {
    ("train", "--recipe"): tuple(RECIPES),
    ("run", "--recipe"): tuple(RECIPES),
    ("train", "--precision"): PRECISIONS,
    ("run", "--precision"): PRECISIONS,
    ("export", "--format"): FORMAT_CHOICES,
    ("accel", "--dataflow"): DATAFLOWS,
    ("mixed", "--dataflow"): DATAFLOWS,
}


def option_actions(command: str) -> dict[str, argparse.Action]:
    return {s: a for a in PARSERS[command]._actions for s in a.option_strings}


def value_set(command: str, option: str) -> tuple[str, ...] | None:
    """The values an option takes, where they are a fixed set; None where any value of its type goes."""
    if (command, option) in VALUE_SETS:
        return tuple(VALUE_SETS[command, option])
    choices = option_actions(command)[option].choices
    return tuple(str(c) for c in choices) if choices is not None else None


def code_texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) of every command-sized piece of code in a Markdown file: each line of a fenced block (a
    line ending in a backslash joined with the next) and each inline code span; a table's `\\|` is a `|`."""
    texts, fenced, pending = [], False, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{number}"
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            pending += line.rstrip("\\")
            if not line.endswith("\\"):
                texts.append((where, pending))
                pending = ""
            continue
        texts += [(where, span.replace("\\|", "|")) for span in re.findall(r"`([^`]+)`", line)]
    return texts


def mentions(path: Path) -> list[tuple[str, str, str, str | None]]:
    """(where, command, option, the value shown after it or None) for every `potq <command> ... --option`:
    an option belongs to the nearest `potq <command>` before it in the same line of code or inline span."""
    found = []
    for where, text in code_texts(path):
        commands = list(COMMAND.finditer(text))
        for i, c in enumerate(commands):
            end = commands[i + 1].start() if i + 1 < len(commands) else len(text)
            for m in OPTION.finditer(text, c.end(), end):
                found.append((where, c.group(1), m.group(1), m.group(2)))
    return found


ALL = [m for path in DOCS for m in mentions(path)]


def test_the_docs_name_commands_with_options():
    """The parsing itself: the README's table and the docs' examples are found."""
    assert len(ALL) > 100
    assert ("export", "--format") in {(c, o) for _, c, o, _ in ALL}
    assert {p.name for p in DOCS} >= {"README.md", "graph-format.md", "rtl.md", "accel.md"}


@pytest.mark.parametrize("where, command, option, value", ALL, ids=[f"{w} {c} {o}" for w, c, o, _ in ALL])
def test_every_option_the_docs_name_is_one_of_the_commands(where, command, option, value):
    actions = option_actions(command)
    assert option in actions, f"{where}: `potq {command}` has no option {option} (it has {', '.join(actions)})"
    allowed = value_set(command, option)
    if allowed is None or value is None or not re.fullmatch(r"[a-z0-9][a-z0-9,|/.-]*", value):
        return  # a placeholder (FILE, N, DIR), a path, or an option of any value
    for shown in value.split("|"):
        if (command, option) == ("export", "--format"):
            parse_formats(shown)  # a comma list of formats: UserError names a wrong one
        else:
            assert shown in allowed, f"{where}: potq {command} {option} {shown}: not one of {', '.join(allowed)}"


def table_lists() -> list[tuple[str, str, str, list[str]]]:
    """(where, command, option, the values listed) of every `--option a|b|c` in the README's table of the steps."""
    rows = {
        f"README.md:{n}"
        for n, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1)
        if line.startswith("| `potq ")
    }
    return [(w, c, o, v.split("|")) for w, c, o, v in mentions(ROOT / "README.md") if w in rows and v and "|" in v]


@pytest.mark.parametrize("where, command, option, listed", table_lists())
def test_the_readmes_table_lists_every_choice(where, command, option, listed):
    allowed = value_set(command, option)
    assert allowed is not None and sorted(listed) == sorted(allowed), (
        f"{where}: potq {command} {option} lists {'|'.join(listed)}; the command takes {'|'.join(allowed or ())}"
    )


def test_the_readmes_table_names_the_recipes_and_formats():
    """The two lists issue 31 found short: every recipe of potq.recipes.RECIPES, every export format and rtl."""
    listed = {(c, o): set(v) for _, c, o, v in table_lists()}
    assert listed[("train", "--recipe")] == set(RECIPES)
    assert listed[("export", "--format")] == set(FORMAT_CHOICES)


def test_a_wrong_option_in_the_docs_would_be_caught(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `potq export --formats c` or\n\n```bash\npotq train --recipe fastest \\\n --out X\n```\n")
    found = mentions(doc)
    assert ("doc.md:1", "export", "--formats", "c") in found and ("train", "--out") in {(c, o) for _, c, o, _ in found}
    assert "--formats" not in option_actions("export")
    assert "fastest" not in value_set("train", "--recipe")
    with pytest.raises(UserError):
        parse_formats("hw,verilog")


def test_no_commands_help_limits_it_to_zoo_models():
    """`summary --help` said "of a zoo model": every command that takes --model takes a user's model too."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    for command in PARSERS:
        if "--model" in option_actions(command) and "zoo model" in helps[command]:
            assert "your own" in helps[command], f"potq {command}: {helps[command]}"
    assert "your own" in helps["summary"]
