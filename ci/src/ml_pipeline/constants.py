"""The module's fixed vocabulary: container paths, what each stage reads, cache names, the CLI's
enum choices and the two errors every function raises.

Nothing here touches the engine; `stages`, `release` and `main` all import from it, it imports
from none of them.
"""

from __future__ import annotations

import enum

from dagger import enum_type

SRC = "/src"
VENV = "/opt/venv"
OUT = "/out"
DATA_DIR = "/work/data"
REPORTS = "/reports"
BATCH_OUT = f"{OUT}/batch"
EXIT_CODE = "exit-code"
DEFAULT_MODEL_NAME = "card-fraud"
SYNTHETIC = "synthetic.parquet"
STDERR_TAIL_LINES = 15
# The package's long description is irrelevant inside the pipeline: stages other than `test`
# get this stand-in README (pyproject's `readme`), so a README edit re-runs nothing but tests.
README_STAND_IN = "mlship (README left out of this pipeline stage; it changes nothing the stage runs)\n"

# Cache volumes shared by every run on an engine.
UV_CACHE = "mlship-uv"
TRIVY_DB_CACHE = "mlship-trivy-db"

SOURCE_IGNORE = [
    ".git",
    ".venv",
    ".mlship",
    "**/__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "htmlcov",
    "ci/sdk",
    "ci/.venv",
]

# What each stage reads from the source tree (Directory.filter include patterns). A stage sees
# nothing else, so an edit outside its paths (README, workflows, k8s manifests …) is a cache hit.
PACKAGE_PATHS = ["pyproject.toml", "uv.lock", "src"]
LINT_PATHS = [*PACKAGE_PATHS, "**/*.py", "deployment/Dockerfile"]
DATA_PATHS = [*PACKAGE_PATHS, "data/expectations"]
BUILD_PATHS = [*PACKAGE_PATHS, "deployment/Dockerfile", ".dockerignore"]
SCAN_GATE_PATHS = [*PACKAGE_PATHS, ".trivyignore"]
DEPLOY_PATHS = [*PACKAGE_PATHS, "deployment/k8s"]
# `test` runs the whole suite, which checks the README, the workflows and the manifests too.
TEST_PATHS: list[str] = []
# The tiers `test` runs: everything .ci/run runs but the tiers that need a Docker daemon (none in
# the engine). The Spark tests are in: the test base has the spark extra and a JRE.
TEST_SELECTION = "not docker and not replay"
TEST_EXTRAS = ["spark"]
# Debian's default JRE (pyspark 4 needs Java 17+): openjdk-21 on trixie, which the pinned
# python:3.11-slim is; openjdk-17 on bookworm. Debian trixie has no openjdk-17 package, so naming
# the default keeps the stage working on whichever Debian the pinned image is built on.
JRE_PACKAGE = "default-jre-headless"
# The tiers the test stage must run, not skip (tests/conftest.py): a JRE or pyspark gone missing
# from the base fails the stage instead of skipping the Spark tests.
TEST_REQUIRED_TIERS = "spark"


@enum_type
class ReportFormat(enum.Enum):
    """Trivy report formats `scan-report` can hand back."""

    SARIF = "sarif"
    """SARIF 2.1.0, for code-scanning upload"""
    JSON = "json"
    """Trivy's JSON report (SchemaVersion 2), what `mlship scan-gate` reads"""
    CYCLONEDX = "cyclonedx"
    """A CycloneDX SBOM"""


@enum_type
class Severity(enum.Enum):
    """Scan-gate threshold: findings at or above it fail the gate."""

    UNKNOWN = "UNKNOWN"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


@enum_type
class Environment(enum.Enum):
    """Deploy environment (a kustomize overlay under deployment/k8s/overlays)."""

    STAGING = "staging"
    """Deployed automatically"""
    PRODUCTION = "production"
    """Needs --approve (a human approved this release)"""


@enum_type
class BadRows(enum.Enum):
    """What batch-predict does with rows that fail the model's input schema."""

    REFUSE = "refuse"
    """Score nothing, exit 1 naming how many rows failed and why"""
    FLAG = "flag"
    """Score the rest; the bad rows get null predictions and an input_error"""


class UsageError(ValueError):
    """Arguments that cannot work together: raised before any container runs."""


class PipelineFailed(RuntimeError):
    """One or more stages of `all` failed; the message carries the per-stage summary."""
