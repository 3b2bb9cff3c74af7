"""Atomic file writes: an artifact is either complete or absent, never half-written.

Files and folders get the modes any other tool would give them (0644/0755 under the usual
umask), not the owner-only 0600/0700 of the temporary files they are staged in: a report or
a model directory is meant to be read by the CI runner, a reviewer and the serving image.
"""

from __future__ import annotations

import json
import math
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
        if tmp.exists():
            ordinary_permissions(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_permissions(path: str | os.PathLike[str]) -> None:
    """Give `path` (and, for a folder, everything under it) 0666/0777 minus the umask.

    Temporary files and folders (mkstemp, mkdtemp) are created owner-only; renaming them into
    place would otherwise leave reports and models unreadable to anyone else.
    """
    mask = current_umask()
    root = Path(path)
    entries = [root, *root.rglob("*")] if root.is_dir() else [root]
    for entry in entries:
        if entry.is_symlink():
            continue
        executable = entry.is_dir() or bool(entry.stat().st_mode & 0o100)
        entry.chmod((0o777 if executable else 0o666) & ~mask)


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
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value
