"""The exit-code contract of every `mlship` command, as exception types.

Library code raises these; only `cli.py` turns them into an exit code and one line.
"""

from __future__ import annotations


class MlshipError(Exception):
    """An expected failure: printed as one line (what, why, what to do), no traceback."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class PipelineRejected(MlshipError):
    """Exit 1: the pipeline said *no* (data invalid, gate failed, drift, findings, rolled back)."""

    exit_code = 1


class ConfigError(MlshipError):
    """Exit 2: usage or configuration error (bad key, missing/unsupported file, bad option)."""

    exit_code = 2


class InfraError(MlshipError):
    """Exit 3: environment or infrastructure error (MLflow unreachable, kubectl missing, port busy)."""

    exit_code = 3
