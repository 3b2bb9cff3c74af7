"""Every documented invocation is real: each `dagger call …` / `dagger check` in the docs (README.md,
docs/*.md, CONTRIBUTING.md) and the CI files names functions, flags and enum values the module
registers (its offline typedefs), so a renamed argument breaks this test instead of a user's CI."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from ml_pipeline.main import MlPipeline
from module_typedefs import Function, functions
from test_workflows import ACTION, action_command, dagger_steps, load

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
# Every page a reader is shown commands on (benchmarks/README.md is generated and runs none of the module).
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

# Flags of `dagger` / `dagger call` itself (not of the module), with whether they take a value
# (cmd/dagger main.go, module.go, functions.go at v0.21.8; persistent, so allowed anywhere).
CLI_FLAGS = {"-m": True, "--mod": True, "--progress": True, "-o": True, "--output": True}
CLI_FLAGS |= {"-j": False, "--json": False}
CLI_FLAGS |= {"-i": False, "--interactive": False, "-q": False, "--quiet": False, "-s": False, "--silent": False}
CLI_FLAGS |= {"-v": False, "--verbose": False, "--help": False}
# Core API functions the documented lines chain onto a result, by the result's type: their flags.
CORE = {
    "Directory": {"export": {"path", "wipe"}, "entries": {"path"}, "terminal": set()},
    "File": {"export": {"path", "allow-parent-dir-overwrite"}, "contents": set()},
    "Container": {"export": {"path"}, "publish": {"address"}, "terminal": set(), "as-tarball": set()},
    "Service": {"up": {"ports", "random"}},
}


@dataclass(frozen=True)
class Invocation:
    source: str
    words: tuple[str, ...]  # after `dagger`


def _words(text: str) -> list[str]:
    text = re.sub(r"\$\{\{.*?\}\}", "VALUE", text)
    text = re.sub(r"<[^>]*>", "X", text)  # README placeholders like <org>
    return shlex.split(text, comments=True)


def doc_invocations(doc: Path) -> list[Invocation]:
    found: list[Invocation] = []
    name = doc.relative_to(ROOT).as_posix()
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        for match in re.finditer(r"dagger ((?:-m \S+ |--progress[= ]\S+ )*(?:call|check)\b[^`|]*)", line):
            text = match.group(1)
            if "`" in line[: match.start()] and line[: match.start()].count("`") % 2 == 1:
                text = text.split("`")[0]
            words = tuple(_words(text))
            if words not in (("call",), ("call", "…")):  # prose about `dagger call` itself
                found.append(Invocation(f"{name}:{i + 1}", words))
        i += 1
    return found


def _script_invocations(source: str, script: str) -> list[Invocation]:
    found = []
    for line in script.splitlines():
        for match in re.finditer(r"\bdagger ((?:-m \S+ )*(?:call|check)\b.*?)(?:\|\||&&|;|$)", line):
            found.append(Invocation(source, tuple(_words(match.group(1)))))
    return found


def workflow_invocations() -> list[Invocation]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        wf = load(path)
        for job in wf["jobs"].values():
            for step in job.get("steps", []):
                name = f"{path.name}:{step.get('name', step.get('id', '?'))}"
                if str(step.get("uses", "")).startswith(ACTION):
                    verb, argv = action_command(step["with"])
                    found.append(Invocation(name, (verb, *argv)))
                found += _script_invocations(name, str(step.get("run", "")))
    return found


def gitlab_invocations() -> list[Invocation]:
    found = []
    for name, job in yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text()).items():
        if not isinstance(job, dict) and not isinstance(job, list):
            continue
        items = job if isinstance(job, list) else [*job.get("script", []), *job.get("after_script", [])]
        for item in items:
            for line in item if isinstance(item, list) else [item]:
                found += _script_invocations(f".gitlab-ci.yml:{name}", str(line))
    return found


ALL = [inv for doc in DOCS for inv in doc_invocations(doc)] + workflow_invocations() + gitlab_invocations()


def check_invocation(words: tuple[str, ...], fns: dict[str, Function], checks: set[str]) -> list[str]:
    """Problems with one invocation (empty when the module accepts it)."""
    rest = list(words)
    while rest and rest[0] in CLI_FLAGS:  # `dagger -m X call …`
        flag = rest.pop(0)
        if CLI_FLAGS[flag]:
            rest.pop(0)
    if not rest or rest[0] not in ("call", "check"):
        return [f"not a dagger call/check: {words}"]
    verb, rest = rest[0], rest[1:]
    if verb == "check":
        unknown = [w for w in rest if not w.startswith("-") and w not in checks]
        return [f"unknown check {w!r} (checks: {sorted(checks)})" for w in unknown]
    problems: list[str] = []
    constructor = {"source", "python-image"}
    current: Function | None = None
    core_type = last_core = ""
    given: set[str] = set()
    while rest:
        word = rest.pop(0)
        if word.startswith("-"):
            flag, has_value, _ = word.partition("=")
            if flag in CLI_FLAGS:
                if CLI_FLAGS[flag] and not has_value:
                    rest.pop(0)
                continue
            name = flag.lstrip("-")
            if current is None and not core_type:
                if name not in constructor:
                    problems.append(f"{flag} before the function is not a constructor flag")
                elif not has_value:
                    rest.pop(0)
                continue
            if core_type:
                if name not in CORE[core_type][last_core]:
                    problems.append(f"{last_core} on {core_type} has no {flag}")
                elif not has_value and name not in ("wipe", "random"):
                    rest.pop(0)
                continue
            assert current is not None
            arg = current.args.get(name)
            if arg is None:
                problems.append(f"{current.name} has no flag {flag} (flags: {sorted(current.args)})")
                continue
            given.add(name)
            value = word.partition("=")[2]
            if arg.kind != "BOOLEAN_KIND" and not has_value:
                value = rest.pop(0) if rest else ""
            # the CLI matches an enum value to a member name ignoring case (enumValue.Set, EqualFold)
            if arg.enum and value != "VALUE" and value.casefold() not in {m.casefold() for m in arg.enum}:
                problems.append(f"{current.name} {flag}={value!r} is not one of {arg.enum}")
            continue
        # a function name: the module's first, then core functions on its result
        if current is None and not core_type:
            if word not in fns:
                problems.append(f"no function {word!r} (functions: {sorted(fns)})")
                return problems
            current = fns[word]
            continue
        returns = current.returns if current is not None and not core_type else ""
        if current is not None:
            missing = [a for a, spec in current.args.items() if not spec.optional and a not in given]
            problems += [f"{current.name} is missing its required --{a}" for a in missing]
        if returns not in CORE or word not in CORE[returns]:
            shown = (
                returns if returns and not returns.endswith("_KIND") else f"a {returns.removesuffix('_KIND').lower()}"
            )
            problems.append(f"{word!r} cannot be chained on {core_type or shown}")
            return problems
        core_type, last_core, current = returns, word, None
    if current is not None:
        missing = [a for a, spec in current.args.items() if not spec.optional and a not in given]
        problems += [f"{current.name} is missing its required --{a}" for a in missing]
    if current is None and not core_type:
        problems.append("no function named")
    return problems


def checks() -> set[str]:
    return {
        name.replace("_", "-")
        for name, fn in MlPipeline.__dagger_module__._objects["MlPipeline"].functions.items()
        if name and fn.check
    }


def test_every_place_documents_invocations() -> None:
    sources = {inv.source.split(":")[0] for inv in ALL}
    assert {"README.md", "ci.yml", "deploy.yml", "monitor.yml", ".gitlab-ci.yml"} <= sources
    assert len(ALL) >= 20


def test_every_docs_page_that_shows_dagger_lines_is_checked() -> None:
    """The pages the README's Dagger content moved to are read too, not only the README."""
    sources = {inv.source.split(":")[0] for inv in ALL}
    assert {"docs/ci.md", "docs/security.md", "CONTRIBUTING.md"} <= sources
    assert sum(inv.source.startswith("docs/ci.md:") for inv in ALL) >= 15


@pytest.mark.parametrize("invocation", ALL, ids=lambda inv: f"{inv.source}:{' '.join(inv.words)[:60]}")
def test_documented_invocation_matches_the_module(invocation: Invocation) -> None:
    assert check_invocation(invocation.words, functions(), checks()) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("call scan-report --format=html export --path=x", "is not one of ['SARIF', 'JSON', 'CYCLONEDX']"),
        ("call deploy --kubeconfig=env://K --image=i --env=prod", "is not one of ['STAGING', 'PRODUCTION']"),
        ("call deploy --kubeconfig=env://K", "deploy is missing its required --image"),
        ("call all --trackingUri=x", "all has no flag --trackingUri"),
        ("call gate --no-champion export --dest=x", "export on Directory has no --dest"),
        ("call train-model", "no function 'train-model'"),
        ("call all export --path=x", "'export' cannot be chained on a string"),
        ("check lint typecheck", "unknown check 'typecheck'"),
    ],
)
def test_a_renamed_or_mistyped_argument_is_caught(line: str, problem: str) -> None:
    problems = check_invocation(tuple(shlex.split(line)), functions(), checks())
    assert any(problem in p for p in problems), problems


def test_what_the_readme_and_ci_call_covers_the_release_path() -> None:
    called = {inv.words[1] for inv in ALL if inv.words[0] == "call" and len(inv.words) > 1}
    assert {"all", "gate", "test-report", "scan-report", "deploy", "rollback", "monitor", "train"} <= called
    assert any(step for path in WORKFLOWS.glob("*.yml") for step in dagger_steps(load(path)))


def test_enum_values_match_member_names_ignoring_case_like_the_cli() -> None:
    for line in ("call scan-report --format=sarif", "call scan-report --format=SARIF", "call scan --severity=high"):
        assert check_invocation(tuple(shlex.split(line)), functions(), checks()) == [], line
