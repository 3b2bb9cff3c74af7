"""Where a model came from: git commit and library versions, recorded with runs and images."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlship.redaction import env_for_child

_SHA_ENV = ("MLSHIP_GIT_SHA", "GITHUB_SHA", "CI_COMMIT_SHA")


@cache
def git_sha(root: Path | None = None) -> str:
    """The commit being built: CI variables first, then `git rev-parse HEAD`, else "unknown"."""
    for name in _SHA_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            env=env_for_child(),  # git needs no credential to read HEAD
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions that decide whether a model loads and behaves the same elsewhere."""
    return {
        "mlship": package_version("mlship"),
        "sklearn": package_version("scikit-learn"),
        "mlflow": package_version("mlflow"),
        "python": platform.python_version(),
    }
