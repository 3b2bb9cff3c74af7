"""Structured logs of a server: one JSON access line per request, and a sampled prediction log.

Access lines go to stderr (what a container runtime collects). The prediction log is JSONL,
one sampled row per line with its inputs and outputs, read by `mlship drift`; lines are
appended whole by the single prediction thread, so a reader never sees half a line.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AccessLog:
    """Writes `{"ts", "event": "access", method, path, status, latency_ms, [key_hash], color, model_version}` lines."""

    def __init__(self, *, color: str, model_version: str, stream: IO[str] | None = None) -> None:
        self.color = color
        self.model_version = model_version
        self.stream = stream

    def access(self, method: str, path: str, status: int, seconds: float, *, key_hash: str | None = None) -> None:
        """One access line; `key_hash` (a sticky canary's hashed routing key) when the router sent one."""
        fields: dict[str, Any] = {
            "event": "access",
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        if key_hash is not None:
            fields["key_hash"] = key_hash
        self.write(fields)

    def write(self, fields: dict[str, Any]) -> None:
        line = {"ts": _now(), **fields, "color": self.color, "model_version": self.model_version}
        stream = self.stream or sys.stderr
        stream.write(orjson.dumps(line, default=str).decode() + "\n")
        stream.flush()


class PredictionLog:
    """Appends a `sample` fraction of predicted rows to a JSONL file."""

    def __init__(self, path: Path, *, sample: float, model_version: str, seed: int | None = None) -> None:
        self.path = path
        self.sample = sample
        self.model_version = model_version
        self._random = random.Random(seed)
        self._file: IO[bytes] | None = None
        if sample > 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")

    def record(self, rows: list[dict[str, Any]], labels: list[Any], probabilities: list[Any]) -> int:
        """Write the sampled rows (one write per batch) and return how many were written."""
        if self._file is None:
            return 0
        chosen = [i for i in range(len(rows)) if self._random.random() < self.sample]
        if not chosen:
            return 0
        ts = _now()
        lines = b"".join(
            orjson.dumps(
                {
                    "timestamp": ts,
                    "inputs": rows[i],
                    "prediction": labels[i],
                    "probability": probabilities[i],
                    "model_version": self.model_version,
                },
                option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY,
            )
            for i in chosen
        )
        self._file.write(lines)
        self._file.flush()
        return len(chosen)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
