"""Shared fixtures: every test runs with its own project directory and MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

# The tiers whose prerequisites live outside the project (a Docker daemon, debootstrap, Debian's
# docker-registry, Java and the spark extra). On a laptop a missing one skips with its reason;
# MLSHIP_REQUIRE_TIERS (comma-separated, e.g. "docker,replay,spark"; .ci/run sets all three)
# turns that skip into a failure, so a CI machine where a tier cannot run is red, not quietly green.
TIERS = ("docker", "replay", "spark")
REQUIRE_TIERS_ENV = "MLSHIP_REQUIRE_TIERS"


def required_tiers() -> frozenset[str]:
    """The tiers MLSHIP_REQUIRE_TIERS names; an unknown name is a usage error, never ignored."""
    names = frozenset(n.strip() for n in os.environ.get(REQUIRE_TIERS_ENV, "").split(",") if n.strip())
    unknown = sorted(names - set(TIERS))
    if unknown:
        raise pytest.UsageError(
            f"{REQUIRE_TIERS_ENV} names unknown tier(s) {', '.join(unknown)} (known: {', '.join(TIERS)})"
        )
    return names


def tier_unavailable(tier: str, reason: str) -> NoReturn:
    """A tier's prerequisite is missing: skip with the reason, or fail when the tier is required."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    if tier in required_tiers():
        pytest.fail(f"the {tier} tier is required ({REQUIRE_TIERS_ENV}) but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def spark_reason() -> str | None:
    """Why the Spark tests cannot run here (None when they can): the spark extra and a Java runtime."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        return "the spark extra is not installed (`uv sync --extra spark`, as .ci/run does)"
    if shutil.which("java") is None:
        return "no Java runtime (.ci/run installs one)"
    return None


@pytest.fixture(scope="session")
def spark_tier() -> None:
    """Skips (or, when required, fails) every test that uses it when the Spark tier cannot run."""
    reason = spark_reason()
    if reason is not None:
        tier_unavailable("spark", reason)


def pytest_configure(config: pytest.Config) -> None:
    required_tiers()  # a misspelt MLSHIP_REQUIRE_TIERS stops the session before any test runs


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up the developer's tracking server or config."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLSHIP_CONFIG", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # `mlship --require-integrity` sets this for the servers it starts: set-then-delete makes the
    # teardown remove it, so one CLI test cannot leave it set for the rest of the session
    monkeypatch.setenv("MLSHIP_REQUIRE_INTEGRITY", "")
    monkeypatch.delenv("MLSHIP_REQUIRE_INTEGRITY")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as the working directory (state goes to ./.mlship)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "data" / "expectations" / "transactions.json"


def make_project(root: Path, rows: int = 3000, seed: int = 42, **settings: object) -> Path:
    """A project directory with synthetic data, the repo's suite and a pyproject with [tool.mlship]."""
    from mlship.data.synth import write_synthetic

    root.mkdir(parents=True, exist_ok=True)
    (root / "data" / "expectations").mkdir(parents=True, exist_ok=True)
    (root / "data" / "expectations" / "transactions.json").write_text(SUITE.read_text())
    write_synthetic(root / "data" / "transactions.parquet", rows=rows, seed=seed)
    values = {"model_name": "card-fraud", **settings}
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
    (root / "pyproject.toml").write_text(f"[tool.mlship]\n{body}")
    return root


def _toml(value: object) -> str:
    """A TOML value: JSON spells strings, numbers, booleans and lists the same; dicts become inline tables."""
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@pytest.fixture
def fraud_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ready project (3,000 synthetic rows, the repo's suite) as the working directory."""
    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One trained model shared by read-only tests: (project root, TrainResult)."""
    from mlship.model.train import train
    from mlship.settings import load_settings

    root = make_project(tmp_path_factory.mktemp("trained") / "proj")
    settings = load_settings(cwd=root)
    return root, train(settings)


UNIT_DIR = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests/unit as `unit`, so `-m unit` selects them (a quick, real run of the suite's core),
    and the Spark engine's test files as `spark` (`-m spark`: what needs the extra and a JRE)."""
    for item in items:
        if UNIT_DIR in item.path.parents:
            item.add_marker(pytest.mark.unit)
        if item.path.name.startswith("test_batch_spark"):
            item.add_marker(pytest.mark.spark)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask for the test, whatever the runner's: permission checks are then exact."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
