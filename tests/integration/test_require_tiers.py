"""MLSHIP_REQUIRE_TIERS turns a tier's skip into a failure (.ci/run sets it for every tier it installs).

Each case runs a real pytest session in a subprocess, so the switch is seen from outside, as CI sees it:
the exit code and the summary line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TIER_TEST = """
from tests.conftest import tier_unavailable


def test_needs_spark():
    tier_unavailable("spark", "the probe's prerequisite is absent")
"""


def _pytest(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MLSHIP_REQUIRE_TIERS"}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_missing_prerequisite_skips_unless_its_tier_is_required(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(TIER_TEST)
    args = ["-p", "tests.conftest", "test_probe.py"]

    laptop = _pytest(args, tmp_path)
    assert laptop.returncode == 0, laptop.stdout + laptop.stderr
    assert "1 skipped" in laptop.stdout and "the probe's prerequisite is absent" in laptop.stdout

    other = _pytest(args, tmp_path, MLSHIP_REQUIRE_TIERS="docker,replay")
    assert other.returncode == 0 and "1 skipped" in other.stdout, "requiring other tiers leaves this one a skip"

    ci = _pytest(args, tmp_path, MLSHIP_REQUIRE_TIERS="docker, replay,spark")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "1 failed" in ci.stdout and "skipped" not in ci.stdout
    assert "the spark tier is required (MLSHIP_REQUIRE_TIERS) but cannot run: the probe's prerequisite is absent" in (
        ci.stdout
    )


def test_a_misspelt_tier_stops_the_session_before_any_test(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(TIER_TEST)
    result = _pytest(["-p", "tests.conftest", "test_probe.py"], tmp_path, MLSHIP_REQUIRE_TIERS="docker,sparc")
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    assert "MLSHIP_REQUIRE_TIERS names unknown tier(s) sparc (known: docker, replay, spark)" in result.stderr
    assert "passed" not in result.stdout and "skipped" not in result.stdout


def test_the_spark_tests_fail_without_java_when_spark_is_required(tmp_path: Path) -> None:
    """The real call site: test_batch_spark.py with no `java` on PATH (an empty directory)."""
    args = ["tests/integration/test_batch_spark.py", "-m", "", "-k", "test_flag_with_no_good_row_scores_nothing"]
    laptop = _pytest(args, REPO, PATH=str(tmp_path))
    assert laptop.returncode == 0, laptop.stdout + laptop.stderr
    assert "1 skipped" in laptop.stdout and "no Java runtime" in laptop.stdout

    ci = _pytest(args, REPO, PATH=str(tmp_path), MLSHIP_REQUIRE_TIERS="docker,replay,spark")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "1 error" in ci.stdout and "the spark tier is required" in ci.stdout and "no Java runtime" in ci.stdout
