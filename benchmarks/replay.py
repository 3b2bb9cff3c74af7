"""The replay tier's cost: wall time of the whole tier and of each replayed function and stage.

    uv run python benchmarks/replay.py [--cold] [--select "not all"] [--name replay-all-cold]

Runs `pytest ci/tests/test_replay*.py -m replay` once, with MLSHIP_REPLAY_TIMINGS pointing
at a scratch file the tier fills (per test: the function call's wall time; per awaited
leaf: seconds, execs run and execs served from the replay's cache). `--cold` gives the
tier a fresh exec-cache namespace, so every exec of every chain runs (docker's own build
cache and the uv cache volume stay warm, as on a CI machine that has run before).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from _common import save

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="a fresh exec cache: every exec runs")
    parser.add_argument("--select", default="", help="pytest -k expression (default: the whole tier)")
    parser.add_argument("--name", default="replay", help="results/<name>.json (default: replay)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlship-replay-bench-") as tmp:
        timings = Path(tmp) / "timings.json"
        env = {**os.environ, "MLSHIP_REPLAY_TIMINGS": str(timings)}
        if args.cold:
            env["MLSHIP_REPLAY_NAMESPACE"] = f"mlship-replay-bench-{uuid.uuid4().hex[:8]}"
            env["MLSHIP_REPLAY_CACHE"] = str(Path(tmp) / "cache")
        cmd = ["uv", "run", "pytest", "ci/tests/test_replay_interpreter.py", "ci/tests/test_replay_pipeline.py"]
        cmd += ["-m", "replay", "-p", "no:cacheprovider", "-q"] + (["-k", args.select] if args.select else [])
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        tail = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line][-1:]
        data = json.loads(timings.read_text()) if timings.exists() else {}
        if args.cold:
            subprocess.run(
                f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {env['MLSHIP_REPLAY_NAMESPACE']} "
                "| xargs -r docker rmi --force",
                shell=True,
                check=False,
                capture_output=True,
            )
    stages = [t for t in data.get("terminals", []) if t["seconds"] >= 0.5]
    save(
        args.name,
        {
            "command": "uv run python benchmarks/replay.py"
            + (" --cold" if args.cold else "")
            + (f" --select {args.select!r}" if args.select else "")
            + (f" --name {args.name}" if args.name != "replay" else ""),
            "selected": args.select or "the whole tier",
            "pytest_result": tail[0] if tail else "",
            "pytest_exit_code": proc.returncode,
            "tier_wall_s": round(wall, 1),
            "exec_cache": "cold (fresh namespace)" if args.cold else "warm (whatever earlier runs left)",
            "tests_s": data.get("tests", {}),
            "execs_run": data.get("execs_run"),
            "execs_cached": data.get("execs_cached"),
            "awaited_leaves_over_0_5s": stages,
            "stand_ins": data.get("substitutions", {}),
        },
    )


if __name__ == "__main__":
    main()
