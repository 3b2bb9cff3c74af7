"""`mlship scan-gate` as a user runs it: exit 0 clean, 1 findings, 2 not a Trivy report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all

register_all(app)
runner = CliRunner()

FINDING = {
    "SchemaVersion": 2,
    "ArtifactName": "image.tar",
    "Results": [
        {
            "Target": "image.tar (debian 12)",
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "CVE-2026-1111",
                    "PkgName": "openssl",
                    "InstalledVersion": "3.0.1",
                    "FixedVersion": "3.0.2",
                    "Status": "fixed",
                    "Severity": "HIGH",
                }
            ],
        },
    ],
}


def test_findings_exit_1_with_table_and_reports(project: Path) -> None:
    (project / "trivy.json").write_text(json.dumps(FINDING))
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--report-dir", "out"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "CVE-2026-1111" in result.output and "FAILED" in result.output
    assert json.loads((project / "out" / "scan-gate.json").read_text())["counts"]["blocking"] == 1


def test_default_trivyignore_and_critical_threshold_pass(project: Path) -> None:
    (project / "trivy.json").write_text(json.dumps(FINDING))
    assert runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--severity", "CRITICAL"]).exit_code == 0
    assert (project / ".mlship" / "reports" / "scan-gate.md").exists()
    (project / ".trivyignore").write_text("# accepted\nCVE-2026-1111 exp:2999-01-01\n")
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json"])
    assert result.exit_code == 0, result.output
    assert "1 ignored" in result.output


def test_expired_ignore_warns_and_fails(project: Path) -> None:
    (project / "trivy.json").write_text(json.dumps(FINDING))
    (project / "ignore").write_text("CVE-2026-1111 exp:2020-01-01\n")
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--ignore-file", "ignore"])
    assert result.exit_code == 1
    assert "no longer honoured" in result.output
    (project / "ignore").write_text("CVE-2026-1111\n")
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--ignore-file", "ignore"])
    assert result.exit_code == 0  # honoured, as Trivy would …
    assert "CVE-2026-1111 (line 1) has no exp: date" in result.output  # … but flagged


def test_sarif_and_bad_severity_exit_2(project: Path) -> None:
    (project / "trivy.sarif").write_text(json.dumps({"version": "2.1.0", "runs": []}))
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.sarif"])
    assert result.exit_code == 2
    assert "not a Trivy JSON report" in result.output
    (project / "trivy.json").write_text(json.dumps(FINDING))
    assert runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--severity", "SEVERE"]).exit_code == 2


REPO = Path(__file__).resolve().parents[2]


def test_committed_trivyignore_passes_the_reviewed_mlflow_advisories_only(project: Path) -> None:
    """The project's own image report, through the CLI with the repository's .trivyignore."""
    report = json.loads((REPO / "tests" / "fixtures" / "trivy" / "mlship-serving-image.json").read_text())
    python = next(r for r in report["Results"] if r["Target"] == "Python")
    mlflow_only = dict(
        report,
        Results=[dict(python, Vulnerabilities=[v for v in python["Vulnerabilities"] if v["PkgName"] == "mlflow"])],
    )
    (project / "trivy.json").write_text(json.dumps(mlflow_only))
    (project / ".trivyignore").write_text((REPO / ".trivyignore").read_text())
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "1 ignored" in result.output and "0 stale" in result.output
    (project / "full.json").write_text(json.dumps(report))
    result = runner.invoke(app, ["scan-gate", "--report", "full.json"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "CVE-2099-20001" in result.output


def test_unfixed_findings_are_listed_not_failed_unless_strict_or_configured(project: Path) -> None:
    """A Debian-slim scan with only unfixed findings: exit 0 with the listing; --strict and
    `[tool.mlship.scan] fail_on_unfixed = true` make it exit 1; a stale ignore is named."""
    fixture = REPO / "tests" / "fixtures" / "trivy" / "debian-slim-unfixed-only.json"
    (project / "trivy.json").write_text(fixture.read_text())
    (project / ".trivyignore").write_text(
        (REPO / ".trivyignore").read_text() + "CVE-2099-99999 exp:2999-01-01 # reviewed 2026-12-07: matches nothing\n"
    )
    result = runner.invoke(app, ["scan-gate", "--report", "trivy.json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "unfixed (no fixed version yet): 1 CRITICAL, 6 HIGH, 2 MEDIUM, 3 LOW" in result.output
    assert "libc6 (3)" in result.output and "listed, not failing" in result.output
    assert "stale ignore entry CVE-2099-99999" in result.output
    strict = runner.invoke(app, ["scan-gate", "--report", "trivy.json", "--strict"], env={"COLUMNS": "200"})
    assert strict.exit_code == 1, strict.output
    assert "7 unfixed vulnerability(ies) at or above HIGH (--strict)" in strict.output
    assert "1 stale ignore entry(ies) (--strict)" in strict.output
    with (project / "pyproject.toml").open("a") as fh:
        fh.write("\n[tool.mlship.scan]\nfail_on_unfixed = true\n")
    configured = runner.invoke(app, ["scan-gate", "--report", "trivy.json"], env={"COLUMNS": "200"})
    assert configured.exit_code == 1, configured.output
    assert "(scan.fail_on_unfixed)" in configured.output
