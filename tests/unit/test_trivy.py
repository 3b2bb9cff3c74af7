"""The Trivy gate on reports in Trivy's real JSON schema (SchemaVersion 2)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import ConfigError
from mlship.security import trivy

REPO = Path(__file__).resolve().parents[2]
# The project's own reports in Trivy's JSON schema (SchemaVersion 2), see the README there.
FIXTURES = REPO / "tests" / "fixtures" / "trivy"
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


def test_blocks_fixable_findings_at_and_above_threshold_and_lists_the_unfixed() -> None:
    result = trivy.evaluate(image_report(), severity="HIGH", today=TODAY)
    assert not result.passed
    assert [f.id for f in result.blocking] == ["CVE-2026-0001", "CVE-2026-0004"]
    assert [f.id for f in result.unfixed] == ["CVE-2026-0002"], "no fix: listed, not blocking"
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
    result = trivy.evaluate(image_report(), severity="HIGH", ignores=rules, today=TODAY, strict=True)
    assert sorted(f.id for f in result.ignored) == ["CVE-2026-0001", "CVE-2026-0004"]
    # the expired entry no longer hides its CVE (unfixed: --strict fails on it), and is reported as expired
    assert [f.id for f in result.unfixed_at_threshold] == ["CVE-2026-0002"] and not result.passed
    assert result.expired_ignores == ["CVE-2026-0002 (expired 2026-01-01)"]
    # Trivy's rule: exp:D means midnight UTC of D, so the day before D is the last one honoured
    eve = trivy.evaluate(image_report(), ignores=rules, today=dt.date(2026, 12, 30))
    assert "CVE-2026-0001" in [f.id for f in eve.ignored]
    on_the_day = trivy.evaluate(image_report(), ignores=rules, today=dt.date(2026, 12, 31))
    assert "CVE-2026-0001" in [f.id for f in on_the_day.blocking]
    assert "CVE-2026-0001 (expired 2026-12-31)" in on_the_day.expired_ignores
    # the comment on an entry's line is its reason
    assert rules.entries[0].reason == "until the base image bump"


def test_entries_outside_the_acceptance_policy_are_warned_about_but_honoured(tmp_path: Path) -> None:
    rules = trivy.parse_ignore_file(
        "CVE-2026-0001\n"  # no expiry, no reason
        "CVE-2026-0002 exp:2026-12-01 # far ahead\n"
        "CVE-2026-0004 exp:2026-08-30 # reviewed, within 90 days\n"
    )
    warnings = rules.policy_warnings(TODAY)
    assert warnings == [
        "CVE-2026-0001 (line 1) has no exp: date: it would be accepted forever",
        "CVE-2026-0001 (line 1) gives no reason (a # comment on its line)",
        "CVE-2026-0002 (line 2) expires 2026-12-01, more than 90 days ahead",
    ]
    result = trivy.evaluate(image_report(), ignores=rules, today=TODAY)
    assert {f.id for f in result.ignored} == {"CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0004"}
    assert result.ignore_policy_warnings == warnings
    assert "Ignore entries outside the policy:" in trivy.render_markdown(result)
    assert trivy.load_ignore_file(REPO / ".trivyignore").policy_warnings(dt.date(2026, 12, 1)) == []


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


# --- the project's own reports in Trivy's schema v2 (tests/fixtures/trivy) ---

EXPECTED = {
    # file: (blocking IDs at HIGH, blocking IDs at HIGH with --ignore-unfixed): only fixable findings block
    "mlship-serving-image.json": (["CVE-2099-10001", "CVE-2099-20001"], ["CVE-2099-10001", "CVE-2099-20001"]),
    "mlship-serving-clean.json": ([], []),
    "debian-slim-unfixed-only.json": ([], []),
    "debian-slim-fixable-high.json": (["CVE-2099-30100"], ["CVE-2099-30100"]),
    "dockerfile-config.json": (["DS-0002"], ["DS-0002"]),
    "dockerfile-config-v0.60.json": (["DS002"], ["DS002"]),
    "secrets.json": (["aws-access-key-id"], ["aws-access-key-id"]),
}
# The one MLflow advisory whose published range (GHSA-ghv6-9r9j-wh4j, >=0.9.0, no fix) covers the
# locked mlflow 3.17.2; the other June 2024 ones are capped at 2.13.1 (see .trivyignore).
MLFLOW_ADVISORIES = {"CVE-2024-37054"}
# What the committed .trivyignore held before the re-check: six entries that match nothing in a
# scan of mlflow 3.17.2.
OLD_MLFLOW_ENTRIES = (
    "CVE-2024-37052",
    "CVE-2024-37053",
    "CVE-2024-37056",
    "CVE-2024-37057",
    "CVE-2024-37059",
    "CVE-2024-37060",
)


def fixture(name: str) -> Path:
    return FIXTURES / name


def test_every_json_fixture_is_covered_and_valid() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)
    for name in EXPECTED:
        report = trivy.load_report(fixture(name))
        assert report["SchemaVersion"] == 2 and report["ArtifactType"], name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_project_reports(name: str) -> None:
    report = trivy.load_report(fixture(name))
    at_high, unfixed = EXPECTED[name]
    assert sorted(f.id for f in trivy.evaluate(report, today=TODAY).blocking) == at_high
    assert sorted(f.id for f in trivy.evaluate(report, ignore_unfixed=True, today=TODAY).blocking) == unfixed


def test_will_not_fix_and_affected_count_as_unfixed() -> None:
    report = trivy.load_report(fixture("mlship-serving-image.json"))
    result = trivy.evaluate(report, severity="LOW", ignore_unfixed=True, today=TODAY)
    assert {f.id for f in result.unfixed_skipped} == MLFLOW_ADVISORIES | {"CVE-2099-10002"}
    assert not result.unfixed, "--ignore-unfixed drops them from the listing too"
    assert [f.id for f in result.below_threshold] == []
    assert "CVE-2099-10003" in [f.id for f in result.blocking]  # MEDIUM, fixed, at a LOW threshold
    # a multi-version FixedVersion ("2.0.1, 1.9.9") is a fix
    python = next(f for f in trivy.findings(report) if f.id == "CVE-2099-20001")
    assert python.fixable and python.aliases == ("GHSA-xxxx-yyyy-zzzz",)


def test_project_sarif_is_rejected() -> None:
    with pytest.raises(ConfigError, match="SARIF"):
        trivy.load_report(fixture("mlship-serving-image.sarif"))


# --- the committed .trivyignore: policy and effect ---

ENTRY = re.compile(
    r"^(?P<id>(CVE-\d{4}-\d{4,}|GHSA(-[0-9a-z]{4}){3}|[A-Z]+-\d+|[a-z0-9-]+))\s+exp:(?P<exp>\S+)\s+"
    r"#\s+reviewed (?P<reviewed>\d{4}-\d{2}-\d{2}): (?P<reason>.{20,})$"
)
MAX_ACCEPTANCE = dt.timedelta(days=90)


def test_committed_trivyignore_follows_the_policy() -> None:
    """Every entry: an ID, an expiry at most 90 days after its review, and a reason."""
    text = (REPO / ".trivyignore").read_text()
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert entries, "the reviewed MLflow advisories are accepted here"
    for line in entries:
        match = ENTRY.match(line)
        assert match, f"not ID exp:DATE # reviewed DATE: reason -> {line!r}"
        reviewed, expires = dt.date.fromisoformat(match["reviewed"]), dt.date.fromisoformat(match["exp"])
        assert dt.timedelta(0) < expires - reviewed <= MAX_ACCEPTANCE, line
    rules = trivy.parse_ignore_file(text)
    assert all(e.expires is not None and e.reason for e in rules.entries)
    assert len({e.id for e in rules.entries}) == len(rules.entries), "an ID listed twice"


def test_committed_trivyignore_hides_exactly_the_reviewed_advisories_until_they_expire() -> None:
    rules = trivy.load_ignore_file(REPO / ".trivyignore")
    report = trivy.load_report(fixture("mlship-serving-image.json"))
    reviewed = dt.date(2026, 12, 7)
    now = trivy.evaluate(report, ignores=rules, today=reviewed, strict=True)
    assert {f.id for f in now.ignored} == MLFLOW_ADVISORIES
    assert now.stale_ignores == [], "every committed entry hides a finding of the serving image's scan"
    # what is left is what a reviewer must still act on: the fixable findings, and the unreviewed unfixed one
    assert sorted(f.id for f in now.blocking) == ["CVE-2099-10001", "CVE-2099-20001"]
    assert [f.id for f in now.unfixed] == ["CVE-2099-10002"]
    expiry = min(e.expires for e in rules.entries if e.expires is not None)
    expired = trivy.evaluate(report, ignores=rules, today=expiry)
    assert {f.id for f in expired.unfixed} >= MLFLOW_ADVISORIES, "unfixed: listed again, not hidden"
    assert not expired.ignored and len(expired.expired_ignores) == len(rules.entries)


def test_committed_trivyignore_names_for_each_entry_the_advisory_range_that_makes_it_apply() -> None:
    text = (REPO / ".trivyignore").read_text()
    for entry in trivy.parse_ignore_file(text).entries:
        assert "GHSA-" in entry.reason and "3.17.2" in entry.reason, entry
    for removed in OLD_MLFLOW_ENTRIES:
        assert removed not in [e.id for e in trivy.parse_ignore_file(text).entries]
        assert f"{removed} " in text, f"the header records why {removed} was removed"


# --- the policy on scans shaped like a real Debian-slim image scan ---


def test_debian_slim_scan_with_only_unfixed_findings_passes_and_lists_them(tmp_path: Path) -> None:
    result = trivy.scan_gate(
        fixture("debian-slim-unfixed-only.json"), ignore_file=REPO / ".trivyignore", report_dir=tmp_path
    )
    assert result.passed and not result.blocking and not result.failures
    assert result.unfixed_counts() == {"CRITICAL": 1, "HIGH": 6, "MEDIUM": 2, "LOW": 3}
    top = result.top_unfixed_packages()
    assert top[0] == {"package": "libc6", "installed": "2.36-9+deb12u13", "count": 3, "highest": "HIGH"}
    assert [r["package"] for r in top[1:3]] == ["zlib1g", "libc-bin"], "ties: the higher severity first"
    md = (tmp_path / "scan-gate.md").read_text()
    assert "# Image scan gate: PASSED" in md
    assert "Unfixed vulnerabilities: 12 with no fixed version yet, not failing the gate" in md
    assert "By severity: CRITICAL 1 · HIGH 6 · MEDIUM 2 · LOW 3" in md
    assert "| libc6 | 2.36-9+deb12u13 | 3 | HIGH |" in md
    data = json.loads((tmp_path / "scan-gate.json").read_text())
    assert data["passed"] is True and data["unfixed"]["by_severity"]["HIGH"] == 6
    assert len(data["unfixed"]["at_or_above_threshold"]) == 7
    # the same scan fails under --strict, and under scan.fail_on_unfixed
    strict = trivy.scan_gate(fixture("debian-slim-unfixed-only.json"), ignore_file=REPO / ".trivyignore", strict=True)
    assert not strict.passed and "7 unfixed vulnerability(ies) at or above HIGH (--strict)" in strict.failures
    configured = trivy.scan_gate(fixture("debian-slim-unfixed-only.json"), fail_on_unfixed=True)
    # (no ignore file here: mlflow's CVE-2024-37054 is the eighth)
    assert configured.failures == ["8 unfixed vulnerability(ies) at or above HIGH (scan.fail_on_unfixed)"]


def test_debian_slim_scan_with_a_fixable_high_fails_naming_it(tmp_path: Path) -> None:
    result = trivy.scan_gate(
        fixture("debian-slim-fixable-high.json"), ignore_file=REPO / ".trivyignore", report_dir=tmp_path
    )
    assert not result.passed
    assert [(f.id, f.package, f.fixed) for f in result.blocking] == [("CVE-2099-30100", "libssl3", "3.0.17-1~deb12u3")]
    assert result.failures == ["1 fixable finding(s) at or above HIGH"]
    md = (tmp_path / "scan-gate.md").read_text()
    assert "FAILED" in md and "| HIGH | vulnerability | CVE-2099-30100 |" in md
    assert "Unfixed vulnerabilities: 12" in md, "the unfixed listing is there when the gate fails too"


def test_a_stale_ignore_entry_is_named_and_fails_only_under_strict(tmp_path: Path) -> None:
    text = (REPO / ".trivyignore").read_text() + "CVE-2024-37052 exp:2027-03-01 # reviewed 2026-12-07: the old entry\n"
    rules = trivy.parse_ignore_file(text)
    report = trivy.load_report(fixture("debian-slim-unfixed-only.json"))
    result = trivy.evaluate(report, ignores=rules, today=TODAY)
    line = len(text.splitlines())
    assert result.stale_ignores == [f"CVE-2024-37052 (line {line}) matched no finding of this report"]
    assert result.passed, "stale entries are reported, not failed, by default"
    assert "Stale ignore entries" in trivy.render_markdown(result)
    strict = trivy.evaluate(report, ignores=rules, today=TODAY, strict=True)
    assert "1 stale ignore entry(ies) (--strict)" in strict.failures


def test_the_review_comment_section_summarises_the_scan(tmp_path: Path) -> None:
    trivy.scan_gate(fixture("debian-slim-unfixed-only.json"), ignore_file=REPO / ".trivyignore", report_dir=tmp_path)
    section = trivy.summary_from_json(json.loads((tmp_path / "scan-gate.json").read_text()))
    assert section.startswith("### ✅ Image scan gate passed")
    assert "- unfixed (no fixed version yet): 12 — CRITICAL 1 · HIGH 6 · MEDIUM 2 · LOW 3" in section
    assert "`libc6` 3 (HIGH)" in section
