"""The Trivy gate on reports in Trivy's real JSON schema (SchemaVersion 2)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import ConfigError
from mlship.security import trivy

REPO = Path(__file__).resolve().parents[2]
# CI checks out shared/ beside the clone; a git worktree sits one level deeper.
SHARED_FIXTURES = next(
    (
        p / "shared" / "trivy-fixtures"
        for p in (REPO.parent, REPO.parent.parent)
        if (p / "shared" / "trivy-fixtures").is_dir()
    ),
    REPO.parent / "shared" / "trivy-fixtures",
)
TODAY = dt.date(2026, 6, 1)


def image_report() -> dict[str, Any]:
    """An image scan like `trivy image --input` writes: os-pkgs and python-pkg results."""
    return {
        "SchemaVersion": 2,
        "CreatedAt": "2026-05-30T10:00:00Z",
        "ArtifactName": "mlship-serving.tar",
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}},
        "Results": [
            {
                "Target": "mlship-serving.tar (debian 12.5)",
                "Class": "os-pkgs",
                "Type": "debian",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-2026-0001",
                        "PkgName": "openssl",
                        "InstalledVersion": "3.0.11-1",
                        "FixedVersion": "3.0.13-1",
                        "Status": "fixed",
                        "Severity": "CRITICAL",
                        "Title": "openssl overflow",
                    },
                    {
                        "VulnerabilityID": "CVE-2026-0002",
                        "PkgName": "bash",
                        "InstalledVersion": "5.2-2",
                        "Status": "affected",
                        "Severity": "HIGH",
                        "Title": "bash no fix",
                    },
                    {
                        "VulnerabilityID": "CVE-2026-0003",
                        "PkgName": "zlib",
                        "InstalledVersion": "1.2.13",
                        "FixedVersion": "1.3",
                        "Status": "fixed",
                        "Severity": "MEDIUM",
                    },
                ],
            },
            {
                "Target": "Python",
                "Class": "lang-pkgs",
                "Type": "python-pkg",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-2026-0004",
                        "VendorIDs": ["GHSA-aaaa-bbbb-cccc"],
                        "PkgName": "setuptools",
                        "InstalledVersion": "65.0",
                        "FixedVersion": "70.0",
                        "Status": "fixed",
                        "Severity": "HIGH",
                    },
                ],
            },
        ],
    }


def write(tmp_path: Path, payload: object, name: str = "trivy.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_blocks_at_and_above_threshold_sorted_by_severity() -> None:
    result = trivy.evaluate(image_report(), severity="HIGH", today=TODAY)
    assert not result.passed
    assert [f.id for f in result.blocking] == ["CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0004"]
    assert [f.id for f in result.below_threshold] == ["CVE-2026-0003"]


def test_critical_threshold_lets_high_through() -> None:
    result = trivy.evaluate(image_report(), severity="critical", today=TODAY)
    assert [f.id for f in result.blocking] == ["CVE-2026-0001"]


def test_ignore_unfixed_skips_only_vulnerabilities_without_a_fix() -> None:
    result = trivy.evaluate(image_report(), severity="HIGH", ignore_unfixed=True, today=TODAY)
    assert "CVE-2026-0002" not in [f.id for f in result.blocking]
    assert [f.id for f in result.unfixed_skipped] == ["CVE-2026-0002"]


def test_ignore_file_comments_expiry_and_aliases() -> None:
    rules = trivy.parse_ignore_file(
        "# accepted risks\n"
        "CVE-2026-0001 exp:2026-12-31  # until the base image bump\n"
        "\n"
        "CVE-2026-0002 exp:2026-01-01\n"
        "GHSA-aaaa-bbbb-cccc\n"
    )
    assert [e.id for e in rules.entries] == ["CVE-2026-0001", "CVE-2026-0002", "GHSA-aaaa-bbbb-cccc"]
    result = trivy.evaluate(image_report(), severity="HIGH", ignores=rules, today=TODAY)
    assert sorted(f.id for f in result.ignored) == ["CVE-2026-0001", "CVE-2026-0004"]
    # the expired entry no longer hides its CVE, and is reported as expired
    assert [f.id for f in result.blocking] == ["CVE-2026-0002"]
    assert result.expired_ignores == ["CVE-2026-0002 (expired 2026-01-01)"]
    # the day the entry expires is still honoured; the day after is not
    late = trivy.evaluate(image_report(), ignores=rules, today=dt.date(2027, 1, 1))
    assert "CVE-2026-0001" in [f.id for f in late.blocking]


def test_bad_expiry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="exp:YYYY-MM-DD"):
        trivy.parse_ignore_file("CVE-1 exp:31-12-2026\n")


def test_misconfigurations_count_only_when_failed_and_secrets_always() -> None:
    report = {
        "SchemaVersion": 2,
        "ArtifactName": ".",
        "Results": [
            {
                "Target": "Dockerfile",
                "Class": "config",
                "Type": "dockerfile",
                "Misconfigurations": [
                    {
                        "ID": "DS-0002",
                        "AVDID": "AVD-DS-0002",
                        "Title": "root user",
                        "Severity": "HIGH",
                        "Status": "FAIL",
                    },
                    {"ID": "DS-0026", "Title": "no healthcheck", "Severity": "HIGH", "Status": "PASS"},
                ],
            },
            {
                "Target": "app/settings.py",
                "Class": "secret",
                "Secrets": [
                    {
                        "RuleID": "aws-access-key-id",
                        "Title": "AWS Access Key ID",
                        "Severity": "CRITICAL",
                        "StartLine": 3,
                    }
                ],
            },
        ],
    }
    result = trivy.evaluate(report, today=TODAY)
    assert [(f.kind, f.id) for f in result.blocking] == [
        ("secret", "aws-access-key-id"),
        ("misconfiguration", "DS-0002"),
    ]
    assert result.blocking[0].target == "app/settings.py:3"
    # the legacy AVD id still ignores the misconfiguration
    ignored = trivy.evaluate(report, ignores=trivy.parse_ignore_file("AVD-DS-0002\n"), today=TODAY)
    assert [f.id for f in ignored.ignored] == ["DS-0002"]


def test_clean_report_passes_and_writes_summary(tmp_path: Path) -> None:
    path = write(tmp_path, {"SchemaVersion": 2, "ArtifactName": "img.tar", "Results": []})
    result = trivy.scan_gate(path, report_dir=tmp_path / "reports", today=TODAY)
    assert result.passed
    assert json.loads((tmp_path / "reports" / "scan-gate.json").read_text())["passed"] is True
    assert "PASSED" in (tmp_path / "reports" / "scan-gate.md").read_text()


def test_markdown_lists_blocking_findings(tmp_path: Path) -> None:
    path = write(tmp_path, image_report())
    trivy.scan_gate(path, report_dir=tmp_path, ignore_file=tmp_path / "absent", today=TODAY)
    md = (tmp_path / "scan-gate.md").read_text()
    assert "FAILED" in md and "| CRITICAL | vulnerability | CVE-2026-0001 |" in md


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"version": "2.1.0", "runs": []}, "SARIF"),
        ({"SchemaVersion": 1, "Results": []}, "SchemaVersion 2 expected"),
        ([1, 2], "SchemaVersion 2 expected"),
        ({"SchemaVersion": 2, "Results": {"x": 1}}, "Results is not a list"),
    ],
)
def test_non_trivy_input_is_rejected(tmp_path: Path, payload: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        trivy.load_report(write(tmp_path, payload))


def test_unreadable_and_missing_reports(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a Trivy JSON report"):
        trivy.load_report(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        trivy.load_report(tmp_path / "nope.json")


def test_unknown_severity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown severity"):
        trivy.evaluate(image_report(), severity="SEVERE")


# --- Trivy's own golden reports (../shared/trivy-fixtures; present beside the clone in CI) ---

EXPECTED_SHARED = {
    # file: (blocking IDs at HIGH, blocking IDs at HIGH with --ignore-unfixed)
    "debian-buster.json.golden": (["CVE-2019-18224"], ["CVE-2019-18224"]),
    "debian-buster-ignore-unfixed.json.golden": (["CVE-2019-18224"], ["CVE-2019-18224"]),
    "v0.60.0__debian-buster.json.golden": (["CVE-2019-18224"], ["CVE-2019-18224"]),
    "dockerfile.json.golden": (["DS-0002"], ["DS-0002"]),
    "v0.60.0__dockerfile.json.golden": (["DS002"], ["DS002"]),
    "secrets.json.golden": (["aws-access-key-id", "mysecret"], ["aws-access-key-id", "mysecret"]),
}


def shared(name: str) -> Path:
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"{SHARED_FIXTURES} not present")
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED_SHARED))
def test_trivy_golden_reports(name: str) -> None:
    report = trivy.load_report(shared(name))
    at_high, unfixed = EXPECTED_SHARED[name]
    assert sorted(f.id for f in trivy.evaluate(report, today=TODAY).blocking) == at_high
    assert sorted(f.id for f in trivy.evaluate(report, ignore_unfixed=True, today=TODAY).blocking) == unfixed


def test_every_shared_json_golden_parses() -> None:
    files = sorted(shared("debian-buster.json.golden").parent.glob("*.json.golden"))
    assert len(files) >= 10
    for path in files:
        report = trivy.load_report(path)
        assert trivy.findings(report), path.name


def test_shared_low_unfixed_is_counted_below_threshold_or_skipped() -> None:
    report = trivy.load_report(shared("debian-buster.json.golden"))
    low = trivy.evaluate(report, severity="LOW", today=TODAY)
    assert sorted(f.id for f in low.blocking) == ["CVE-2019-18224", "CVE-2019-18276"]
    skipped = trivy.evaluate(report, severity="LOW", ignore_unfixed=True, today=TODAY)
    assert [f.id for f in skipped.unfixed_skipped] == ["CVE-2019-18276"]
    ubi = trivy.evaluate(
        trivy.load_report(shared("ubi-7-comprehensive.json.golden")), severity="LOW", ignore_unfixed=True, today=TODAY
    )
    assert [f.id for f in ubi.unfixed_skipped] == ["CVE-2019-18276"]  # Status will_not_fix


def test_shared_sarif_is_rejected() -> None:
    with pytest.raises(ConfigError, match="SARIF"):
        trivy.load_report(shared("alpine-310.sarif.golden"))
