"""Trivy JSON report (SchemaVersion 2) → findings → gate.

Trivy scans the image; this module decides whether the release may go on. It reads the
three finding kinds Trivy reports (vulnerabilities, failed misconfigurations, secrets),
drops what `.trivyignore` accepts (expired entries no longer count) and, with
`ignore_unfixed`, vulnerabilities nobody can fix yet, and fails on what is left at or above
the severity threshold.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlship.errors import ConfigError
from mlship.fsutil import write_json, write_text

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
# The project's policy: an accepted finding is re-reviewed at least this often (README, Security).
MAX_ACCEPTANCE_DAYS = 90
_UNFIXED_STATUSES = {"affected", "will_not_fix", "fix_deferred", "end_of_life", "under_investigation"}


@dataclass(frozen=True)
class Finding:
    """One thing Trivy found, normalised over the three scanners."""

    kind: str  # vulnerability | misconfiguration | secret
    id: str
    severity: str
    target: str
    title: str
    package: str = ""
    installed: str = ""
    fixed: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def fixable(self) -> bool:
        """Only vulnerabilities can be 'unfixed'; configs and secrets are always yours to fix."""
        return self.kind != "vulnerability" or bool(self.fixed)

    def matches(self, ignored_id: str) -> bool:
        return ignored_id == self.id or ignored_id in self.aliases


@dataclass(frozen=True)
class IgnoreEntry:
    """One accepted finding: its ID, until when (`exp:`), and why (the line's `#` comment)."""

    id: str
    expires: dt.date | None = None
    line: int = 0
    reason: str = ""

    def honoured(self, today: dt.date) -> bool:
        """Trivy's rule: `exp:D` is midnight UTC of D, so the entry hides its finding until the day
        before D and stops hiding it on D itself."""
        return self.expires is None or today < self.expires


@dataclass(frozen=True)
class IgnoreRules:
    entries: tuple[IgnoreEntry, ...] = ()

    def active(self, today: dt.date) -> list[IgnoreEntry]:
        return [e for e in self.entries if e.honoured(today)]

    def expired(self, today: dt.date) -> list[IgnoreEntry]:
        return [e for e in self.entries if not e.honoured(today)]

    def policy_warnings(self, today: dt.date, max_days: int = MAX_ACCEPTANCE_DAYS) -> list[str]:
        """Entries that break the acceptance policy: no expiry, an expiry beyond `max_days`, or no
        reason. Trivy still honours them, so they are warnings, not a verdict."""
        warnings = []
        for e in self.entries:
            if e.expires is None:
                warnings.append(f"{e.id} (line {e.line}) has no exp: date: it would be accepted forever")
            elif (e.expires - today).days > max_days:
                warnings.append(f"{e.id} (line {e.line}) expires {e.expires}, more than {max_days} days ahead")
            if not e.reason:
                warnings.append(f"{e.id} (line {e.line}) gives no reason (a # comment on its line)")
        return warnings


@dataclass
class ScanGateResult:
    """What the gate decided, and why, for the table, the JSON and the Markdown summary."""

    artifact: str
    severity: str
    ignore_unfixed: bool
    blocking: list[Finding] = field(default_factory=list)
    below_threshold: list[Finding] = field(default_factory=list)
    ignored: list[Finding] = field(default_factory=list)
    unfixed_skipped: list[Finding] = field(default_factory=list)
    expired_ignores: list[str] = field(default_factory=list)
    ignore_policy_warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.blocking

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "artifact": self.artifact,
            "severity": self.severity,
            "ignore_unfixed": self.ignore_unfixed,
            "counts": {
                "blocking": len(self.blocking),
                "below_threshold": len(self.below_threshold),
                "ignored": len(self.ignored),
                "unfixed_skipped": len(self.unfixed_skipped),
            },
            "blocking": [asdict(f) for f in self.blocking],
            "ignored": [asdict(f) for f in self.ignored],
            "expired_ignores": self.expired_ignores,
            "ignore_policy_warnings": self.ignore_policy_warnings,
        }


def normalise_severity(level: str) -> str:
    value = level.strip().upper()
    if value not in SEVERITIES:
        raise ConfigError(f"unknown severity {level!r}", hint=f"use one of {', '.join(SEVERITIES)}")
    return value


def load_report(path: Path) -> dict[str, Any]:
    """Read a Trivy JSON report; anything else (SARIF, CycloneDX, garbage) is a usage error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"report {path} not found", hint="pass the file trivy wrote with --format json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a Trivy JSON report: {exc}", hint="run trivy with --format json") from None
    if isinstance(data, dict) and "runs" in data and "version" in data:
        raise ConfigError(
            f"{path} is not a Trivy JSON report: it is SARIF {data.get('version')}",
            hint="run trivy with --format json; SARIF is for code-scanning upload",
        )
    if not isinstance(data, dict) or data.get("SchemaVersion") != 2:
        found = data.get("SchemaVersion") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"{path} is not a Trivy JSON report (SchemaVersion 2 expected, found {found!r})",
            hint="run trivy with --format json",
        )
    if not isinstance(data.get("Results") or [], list):
        raise ConfigError(
            f"{path} is not a Trivy JSON report: Results is not a list", hint="run trivy with --format json"
        )
    return data


def findings(report: dict[str, Any]) -> list[Finding]:
    """Every finding of the report; misconfigurations count only when they FAILed."""
    out: list[Finding] = []
    for result in report.get("Results") or []:
        target = str(result.get("Target", ""))
        for v in result.get("Vulnerabilities") or []:
            out.append(
                Finding(
                    kind="vulnerability",
                    id=str(v.get("VulnerabilityID", "")),
                    severity=_severity(v.get("Severity")),
                    target=target,
                    title=str(v.get("Title") or v.get("PkgName", "")),
                    package=str(v.get("PkgName", "")),
                    installed=str(v.get("InstalledVersion", "")),
                    fixed=str(v.get("FixedVersion") or ""),
                    aliases=tuple(str(a) for a in v.get("VendorIDs") or []),
                )
            )
        for m in result.get("Misconfigurations") or []:
            if str(m.get("Status", "FAIL")).upper() != "FAIL":
                continue
            aliases = tuple(str(m[k]) for k in ("AVDID",) if m.get(k))
            out.append(
                Finding(
                    kind="misconfiguration",
                    id=str(m.get("ID", "")),
                    severity=_severity(m.get("Severity")),
                    target=target,
                    title=str(m.get("Title", "")),
                    aliases=aliases,
                )
            )
        for s in result.get("Secrets") or []:
            out.append(
                Finding(
                    kind="secret",
                    id=str(s.get("RuleID", "")),
                    severity=_severity(s.get("Severity")),
                    target=f"{target}:{s.get('StartLine', '?')}",
                    title=str(s.get("Title", "")),
                )
            )
    return out


def _severity(value: object) -> str:
    text = str(value or "UNKNOWN").upper()
    return text if text in SEVERITIES else "UNKNOWN"


def parse_ignore_file(text: str) -> IgnoreRules:
    """`.trivyignore`: one ID per line, `#` comments, optional `exp:YYYY-MM-DD` after the ID.

    The text after a `#` on an entry's line is kept as the entry's reason."""
    entries: list[IgnoreEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        expires: dt.date | None = None
        for extra in parts[1:]:
            if extra.startswith("exp:"):
                try:
                    expires = dt.date.fromisoformat(extra[4:])
                except ValueError:
                    raise ConfigError(
                        f"ignore file line {number}: bad expiry {extra!r}", hint="write exp:YYYY-MM-DD"
                    ) from None
        entries.append(IgnoreEntry(id=parts[0], expires=expires, line=number, reason=comment.strip()))
    return IgnoreRules(tuple(entries))


def load_ignore_file(path: Path | None) -> IgnoreRules:
    if path is None or not Path(path).exists():
        return IgnoreRules()
    return parse_ignore_file(Path(path).read_text(encoding="utf-8"))


def evaluate(
    report: dict[str, Any],
    *,
    severity: str = "HIGH",
    ignore_unfixed: bool = False,
    ignores: IgnoreRules | None = None,
    today: dt.date | None = None,
) -> ScanGateResult:
    """Sort every finding into blocking / below threshold / ignored / unfixed-skipped."""
    threshold = SEVERITIES.index(normalise_severity(severity))
    rules = ignores or IgnoreRules()
    day = today or dt.datetime.now(dt.UTC).date()
    active = rules.active(day)
    result = ScanGateResult(
        artifact=str(report.get("ArtifactName", "")),
        severity=SEVERITIES[threshold],
        ignore_unfixed=ignore_unfixed,
        expired_ignores=[f"{e.id} (expired {e.expires})" for e in rules.expired(day)],
        ignore_policy_warnings=rules.policy_warnings(day),
    )
    for finding in findings(report):
        if any(finding.matches(e.id) for e in active):
            result.ignored.append(finding)
        elif ignore_unfixed and not finding.fixable:
            result.unfixed_skipped.append(finding)
        elif SEVERITIES.index(finding.severity) >= threshold:
            result.blocking.append(finding)
        else:
            result.below_threshold.append(finding)
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    result.blocking.sort(key=lambda f: (order[f.severity], f.id))
    return result


def render_markdown(result: ScanGateResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [
        f"# Image scan gate: {verdict}",
        "",
        f"- artifact: `{result.artifact or 'unknown'}`",
        f"- threshold: {result.severity} and above"
        + (" (unfixed vulnerabilities skipped)" if result.ignore_unfixed else ""),
        f"- blocking: {len(result.blocking)} · below threshold: {len(result.below_threshold)}"
        f" · ignored: {len(result.ignored)} · unfixed skipped: {len(result.unfixed_skipped)}",
        "",
    ]
    if result.blocking:
        lines += ["| severity | kind | id | target | package | installed | fixed in |", "|---|---|---|---|---|---|---|"]
        for f in result.blocking:
            lines.append(
                f"| {f.severity} | {f.kind} | {f.id} | {f.target} | {f.package} | {f.installed} | {f.fixed or '-'} |"
            )
        lines.append("")
    if result.expired_ignores:
        lines += ["Expired ignore entries (no longer honoured): " + ", ".join(result.expired_ignores), ""]
    if result.ignore_policy_warnings:
        lines += ["Ignore entries outside the policy:", *(f"- {w}" for w in result.ignore_policy_warnings), ""]
    return "\n".join(lines)


def scan_gate(
    report_path: Path,
    *,
    severity: str = "HIGH",
    ignore_unfixed: bool = False,
    ignore_file: Path | None = None,
    report_dir: Path | None = None,
    today: dt.date | None = None,
) -> ScanGateResult:
    """Read the report, apply the ignore file and thresholds, write scan-gate.{json,md}."""
    severity = normalise_severity(severity)
    report = load_report(report_path)
    result = evaluate(
        report,
        severity=severity,
        ignore_unfixed=ignore_unfixed,
        ignores=load_ignore_file(ignore_file),
        today=today,
    )
    if report_dir is not None:
        write_json(Path(report_dir) / "scan-gate.json", result.to_dict())
        write_text(Path(report_dir) / "scan-gate.md", render_markdown(result))
    return result
