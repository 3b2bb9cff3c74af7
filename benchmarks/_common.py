"""Helpers shared by the benchmark scripts: where results go and how they are written."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write results/<name>.json atomically, stamped with the time and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    body = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    tmp.write_text(json.dumps(body | payload, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(payload, indent=2))
    refresh_readme()
    return out


def refresh_readme() -> None:
    """Regenerate benchmarks/README.md from the results, so the page never lags the JSON just written."""
    import readme  # benchmarks/readme.py: the scripts run from this folder, so it is on sys.path

    if readme.main([]) != 0:
        print("benchmarks/README.md was not regenerated: see the line above", file=sys.stderr)
