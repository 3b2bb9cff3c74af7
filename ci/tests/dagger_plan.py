"""Render a lazy Dagger object's recorded selections as text, for plan assertions."""

from __future__ import annotations

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
