"""Engine-free tests of the Dagger module: import it from ci/src with the pinned dagger-io."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

CI = Path(__file__).resolve().parents[1]
os.environ.setdefault("DAGGER_MAIN_OBJECT", "MlPipeline")
if str(CI / "src") not in sys.path:
    sys.path.insert(0, str(CI / "src"))


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
