"""Model integrity: the sha256 of an MLflow model directory, recorded when logged, checked before unpickling.

Loading a scikit-learn model runs pickle, i.e. arbitrary code. The digest is recorded in the
tracking store (run tag, then version tag) and in a file inside the model directory, and
every load goes through `verify` first: a pickle swapped behind a registered version is
refused (exit 2) before any of its code runs. It does not protect against someone who can
also rewrite the recorded digest in the tracking store.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from mlship.errors import ConfigError, InfraError
from mlship.fsutil import write_text

SIDECAR = "mlship-sha256.txt"
"""Written into the logged model directory: the digest travels with the model (e.g. into an image)."""
TAG = "mlship.model_sha256"
"""The run, logged-model and version tag that records the digest in the tracking store."""
_NOT_CONTENT = {SIDECAR, "registered_model_meta"}
"""Files that are not the model: the record itself, and what MLflow adds when it downloads a version."""
REQUIRE_ENV = "MLSHIP_REQUIRE_INTEGRITY"
"""Set (by `mlship --require-integrity`, or by hand) to refuse a model with no recorded sha256; servers inherit it."""
_warned: set[str] = set()


class IntegrityError(ConfigError):
    """The model's files are not the ones recorded when it was logged: exit 2, nothing was unpickled."""


def model_digest(directory: Path) -> str:
    """sha256 over the relative path and bytes of every file of the model directory, in sorted order.

    Deterministic (independent of mtime, permissions and listing order) and path-aware (moving
    bytes from one file to another changes it).
    """
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in _NOT_CONTENT),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    for path in files:
        name = path.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(directory: Path) -> str:
    """Record the digest of `directory` inside it; returns the digest."""

    digest = model_digest(directory)
    write_text(Path(directory) / SIDECAR, digest + "\n")
    return digest


def recorded_in(directory: Path) -> str | None:
    """The digest the directory's own record states, or None for a model logged without one."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def verify(directory: Path, expected: str | None = None, *, what: str | None = None) -> str | None:
    """Check the model files against `expected` (the tracking store's record) and the directory's own.

    Returns the digest that was verified, or None when nothing was recorded (a model logged
    before mlship recorded digests, or by another tool): there is nothing to compare with.
    """
    own = recorded_in(directory)
    records = [r for r in (expected, own) if r]
    label = what or str(directory)
    if not records:
        unverified(directory, label)
        return None
    if not any(p.is_file() for p in Path(directory).rglob("*")):
        # Nothing arrived at all: the store lost the files (an outage to fix), not a tamper to refuse.
        raise InfraError(
            f"model {label} has no files in the artifact store (its record says it was logged)",
            hint="restore the artifact store, or re-log the model",
        )
    actual = model_digest(directory)
    for record in records:
        if record != actual:
            source = "tracking store" if record == expected else SIDECAR
            raise IntegrityError(
                f"model {label} does not match the sha256 recorded when it was logged "
                f"({source}: {record[:12]}…, files now: {actual[:12]}…); refusing to load it",
                hint="the artifact was changed after logging: retrain or re-log it, and find out who changed it",
            )
    return actual


def required() -> bool:
    """Whether a model without a recorded sha256 is refused (MLSHIP_REQUIRE_INTEGRITY set to a true value)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def unverified(directory: Path, label: str) -> None:
    """A model with nothing to check against: refused under --require-integrity, else one warning line.

    Unpickling it runs whatever code it holds, unchecked; the operator should know, once per model.
    """
    if required():
        raise IntegrityError(
            f"model {label} has no recorded sha256 (no {SIDECAR} in it and none in the tracking store); "
            "--require-integrity refuses to load it",
            hint="use a model logged by `mlship train`, which records one, or drop --require-integrity",
        )
    key = str(Path(directory).resolve())
    if key in _warned:
        return
    _warned.add(key)
    print(
        f"mlship: warning: model {label} has no recorded sha256 (no {SIDECAR}): it is loaded without an "
        "integrity check (pass --require-integrity to refuse such models)",
        file=sys.stderr,
        flush=True,
    )
