"""Hostile CSVs against `mlship.data.io.read_table`: how fast the caps refuse, and what the line cap costs.

Each hostile file runs in a fresh process (peak RSS is per process): a 16 MB and a 64 MB file that
is one line (the issue measured > 300 s and 3.2 GB RSS for them through `mlship validate`), and a
37 MB sound CSV read with and without the streaming line cap (best of 5; the cap's cost is the
difference). Writes benchmarks/results/hostile_files.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_READ = """
import resource, sys, time
from pathlib import Path
from mlship.data.io import read_table
from mlship.errors import ConfigError
t = time.perf_counter()
try:
    read_table(Path(sys.argv[1]))
    outcome = "read"
except ConfigError as exc:
    outcome = str(exc)
print(round(time.perf_counter() - t, 3), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, outcome, sep="\\t")
"""


def hostile(folder: Path, megabytes: int) -> dict[str, object]:
    path = folder / f"one-line-{megabytes}mb.csv"
    path.write_bytes(b"x" * (megabytes << 20))
    out = subprocess.run(
        [sys.executable, "-c", ONE_READ, str(path)], capture_output=True, text=True, check=True, timeout=600
    )
    seconds, rss_mb, outcome = out.stdout.strip().split("\t", 2)
    return {
        "file": f"{megabytes} MB, one line",
        "seconds_with_imports": float(seconds),
        "peak_rss_mb": int(rss_mb),
        "error": outcome.replace(str(folder) + "/", ""),
    }


def line_cap_cost(folder: Path) -> dict[str, object]:
    import pandas as pd

    from mlship.data.io import LineCapped
    from mlship.data.synth import generate

    path = folder / "sound.csv"
    generate(600_000, seed=1).to_csv(path, index=False)

    def plain() -> None:
        with path.open("rb") as raw:
            pd.read_csv(raw)

    def capped() -> None:
        with path.open("rb") as raw:
            pd.read_csv(LineCapped(raw, "sound.csv"))

    timings: dict[str, list[float]] = {"plain": [], "capped": []}
    for _ in range(5):  # interleaved, so a burst of load on the shared machine hits both alike
        for name, fn in (("plain", plain), ("capped", capped)):
            started = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - started)
    plain_s, capped_s = min(timings["plain"]), min(timings["capped"])
    return {
        "megabytes": round(path.stat().st_size / 1e6, 1),
        "pandas_seconds": round(plain_s, 3),
        "with_line_cap_seconds": round(capped_s, 3),
        "note": "best of 5 interleaved runs each, on a shared machine (load average in the tens)",
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlship-hostile-") as tmp:
        folder = Path(tmp)
        result = {"refused": [hostile(folder, 16), hostile(folder, 64)], "line_cap": line_cap_cost(folder)}
    out = Path(__file__).parent / "results" / "hostile_files.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
