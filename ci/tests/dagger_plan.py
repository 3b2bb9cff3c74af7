"""Render a lazy Dagger object's recorded selections as text, for plan assertions."""

from __future__ import annotations

import re
from typing import Any


def render(obj: Any) -> str:
    """A lazy Dagger object's recorded call chain as text, recursing into object arguments."""
    parts = []
    for sel in obj._ctx.selections:
        args = ", ".join(f"{k}={_arg(v)}" for k, v in sel.args.items())
        parts.append(f"{sel.name}({args})")
    return ".".join(parts)


def _arg(value: Any) -> str:
    if hasattr(value, "_ctx"):
        return f"<{type(value).__name__}:{render(value)}>"
    if isinstance(value, list):
        return "[" + ", ".join(_arg(v) for v in value) + "]"
    return repr(value)


def execs(obj: Any) -> list[list[str]]:
    """The argv of every withExec of the chain itself (not of its arguments), in order."""
    return [list(sel.args["args"]) for sel in obj._ctx.selections if sel.name == "withExec"]


def objects(obj: Any) -> list[Any]:
    """The object and every lazy object reachable through its (and their) arguments."""
    found = [obj]
    for sel in obj._ctx.selections:
        for value in sel.args.values():
            for item in value if isinstance(value, list) else [value]:
                if hasattr(item, "_ctx"):
                    found += objects(item)
    return found


def source_reads(obj: Any, source: Any) -> set[str]:
    """What a plan reads from `source`: `filter(include=…)` patterns and `file(path=…)` paths.

    '**' means the whole source is read unfiltered."""
    prefix = list(source._ctx.selections)
    reads: set[str] = set()
    for item in objects(obj):
        sels = list(item._ctx.selections)
        if sels[: len(prefix)] != prefix:
            continue
        nxt = sels[len(prefix)] if len(sels) > len(prefix) else None
        if nxt is not None and nxt.name == "filter" and nxt.args.get("include"):
            reads.update(nxt.args["include"])
        elif nxt is not None and nxt.name == "file":
            reads.add(nxt.args["path"])
        else:
            reads.add("**")
    return reads


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out.rstrip("/") + r"\Z")


def reads_path(reads: set[str], path: str) -> bool:
    """Does a plan that reads `reads` see `path`? An include pattern also takes what is under a
    matching directory, as the engine's include filter does."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(p == "**" or any(_pattern(p).match(pre) for pre in prefixes) for p in reads)
