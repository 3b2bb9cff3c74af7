"""Atomic file writes: an artifact is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it over `dest` only if the block succeeds."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically and return the destination path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically and return the destination path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_json(dest: str | os.PathLike[str], payload: Any) -> Path:
    """Write pretty, key-sorted JSON atomically (NaN/inf become null: strict JSON readers choke on them)."""
    return write_text(dest, json.dumps(_json_safe(payload), indent=2, sort_keys=True) + "\n")


def write_with(dest: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Let `writer` fill a temp path (e.g. a pandas or matplotlib writer), then rename it into place."""
    with atomic_path(dest) as tmp:
        writer(tmp)
    return Path(dest)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        import math

        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value
