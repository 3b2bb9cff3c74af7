"""Every `mlship …` command line the docs show names commands and options the CLI has, and every
`python -m mlship.…` module they show exists: a renamed flag or a moved module breaks this test, not a
reader's copy-paste. (The `dagger call` lines are checked by ci/tests/test_invocations.py.)"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from mlship.cli import app
from mlship.commands import register_all

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
# A shell line runs mlship as `mlship`, `uv run mlship`, `.venv/bin/mlship` (optionally under `nice`).
# A pipe is ` | `; `a|b` inside an argument is the docs' notation for a choice.
MLSHIP = re.compile(
    r"(?:^|&&|;|\s\|\s)\s*(?:nice\s+)?(?:uv run\s+)?(?:\.venv/bin/)?mlship\s+(?P<args>(?:(?!&&|;|\s\|\s).)*)"
)
PYTHON_M = re.compile(r"python -m (?P<module>mlship(?:\.\w+)*)")


@dataclass(frozen=True)
class Shown:
    source: str
    line: str


def code_lines(doc: Path) -> list[Shown]:
    """The lines of a page's fenced and indented code blocks, continuation lines joined."""
    shown: list[Shown] = []
    fenced = False
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line, start = lines[i], i
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            shown.append(Shown(f"{doc.relative_to(REPO).as_posix()}:{start + 1}", line.strip()))
        i += 1
    return shown


def commands() -> list[Shown]:
    found = []
    for doc in DOCS:
        for shown in code_lines(doc):
            if not shown.line.startswith(("#", "//")):
                found += [Shown(shown.source, m.group("args")) for m in MLSHIP.finditer(shown.line)]
    return found


def modules() -> list[Shown]:
    return [
        Shown(doc.relative_to(REPO).as_posix(), m.group("module"))
        for doc in DOCS
        for m in PYTHON_M.finditer(doc.read_text(encoding="utf-8"))
    ]


def words(args: str) -> list[str]:
    """The arguments as the shell splits them; `[optional]` brackets and `a|b` choices are notation."""
    text = re.sub(r"\s#\s.*$", "", args)
    text = re.sub(r"(?<=\s)\[|\](?=\s|$)", " ", f" {text}")
    return [w for w in shlex.split(text) if w not in ("…", "...")]


def root_command() -> Any:
    """The CLI as click sees it (typer's own click: a group has `commands`, an option `opts`)."""
    register_all(app)
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")
    return command


def check(argv: list[str], root: Any) -> list[str]:
    """Problems with one command line (empty when the CLI accepts its commands and option names)."""
    command = root
    path = ["mlship"]
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if word.startswith("-"):
            name = word.partition("=")[0]
            option = next((p for p in command.params if p.param_type_name == "option" and name in p.opts), None)
            if option is None and name not in ("--help", "-h"):
                return [f"`{' '.join(path)}` has no option {name}"]
            if option is not None and not option.is_flag and "=" not in word and rest:
                rest.pop(0)
            continue
        if hasattr(command, "commands"):
            sub = command.commands.get(word)
            if sub is None:
                return [f"`{' '.join(path)}` has no command {word!r} (it has: {', '.join(sorted(command.commands))})"]
            command, path = sub, [*path, word]
            continue
        # a positional argument of a leaf command
    if hasattr(command, "commands") and command is not root:
        return [f"`{' '.join(path)}` needs a command"]
    return []


COMMANDS = commands()


def test_the_docs_show_commands_of_every_area() -> None:
    shown = {" ".join(words(c.line)[:1]) for c in COMMANDS}
    assert {"run", "gate", "deploy", "rollback", "serve", "drift", "abtest", "predict-batch", "scan-gate"} <= shown
    assert {c.source.split(":")[0] for c in COMMANDS} >= {"README.md", "docs/deploy.md", "docs/monitoring.md"}


@pytest.mark.parametrize("shown", COMMANDS, ids=lambda c: f"{c.source}:{c.line[:50]}")
def test_a_documented_mlship_command_exists_with_its_options(shown: Shown) -> None:
    assert check(words(shown.line), root_command()) == [], shown


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("deploy --modle models:/m/1", "`mlship deploy` has no option --modle"),
        ("data synthesize --out x.csv", "`mlship data` has no command 'synthesize'"),
        ("data", "`mlship data` needs a command"),
        ("--config a.toml trian", "`mlship` has no command 'trian'"),
    ],
)
def test_a_mistyped_command_or_option_is_caught(line: str, problem: str) -> None:
    problems = check(words(line), root_command())
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_notation_is_not_taken_for_arguments() -> None:
    assert words("gate --candidate M [--no-champion] [--look 2 --max-looks 5]   # a comment") == [
        "gate", "--candidate", "M", "--no-champion", "--look", "2", "--max-looks", "5",
    ]  # fmt: skip
    assert check(words("predict-batch --model M --input a --output b [--bad-rows refuse|flag]"), root_command()) == []


@pytest.mark.parametrize("shown", modules(), ids=lambda m: f"{m.source}:{m.line}")
def test_a_documented_python_module_exists(shown: Shown) -> None:
    assert importlib.util.find_spec(shown.line) is not None, f"{shown.source} runs `python -m {shown.line}`"
