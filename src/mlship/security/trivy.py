"""Trivy JSON report (SchemaVersion 2) → findings → gate.

Trivy scans the image; this module decides whether the release may go on. It reads the
three finding kinds Trivy reports (vulnerabilities, failed misconfigurations, secrets) and
drops what `.trivyignore` accepts (expired entries no longer count). The policy:

- a finding at or above the severity threshold that someone can fix (a vulnerability with a
  fixed version, any failed misconfiguration, any secret) fails the gate;
- a vulnerability with no fixed version yet (a Debian-slim base always has some) is listed —
  count per severity and the packages that carry most — and fails only with `strict` or
  `fail_on_unfixed` (`[tool.mlship.scan] fail_on_unfixed = true`); `ignore_unfixed` drops
  them from the report altogether, as Trivy's own `--ignore-unfixed`;
- an ignore entry that matched no finding of the report is *stale* (it hides nothing, so
  nobody can audit it): reported always, failing with `strict`.
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
# The project's policy: an accepted finding is re-reviewed at least this often
# (docs/security.md, "The image scan gate").
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
    unfixed: list[Finding] = field(default_factory=list)
    expired_ignores: list[str] = field(default_factory=list)
    stale_ignores: list[str] = field(default_factory=list)
    ignore_policy_warnings: list[str] = field(default_factory=list)
    strict: bool = False
    fail_on_unfixed: bool = False

    @property
    def unfixed_at_threshold(self) -> list[Finding]:
        """Unfixed vulnerabilities at or above the threshold: what `strict`/`fail_on_unfixed` fail on."""
        threshold = SEVERITIES.index(self.severity)
        return [f for f in self.unfixed if SEVERITIES.index(f.severity) >= threshold]

    @property
    def failures(self) -> list[str]:
        """Why the gate fails, one reason a line (empty when it passes)."""
        out = []
        if self.blocking:
            out.append(f"{len(self.blocking)} fixable finding(s) at or above {self.severity}")
        if (self.strict or self.fail_on_unfixed) and self.unfixed_at_threshold:
            why = "--strict" if self.strict else "scan.fail_on_unfixed"
            count = len(self.unfixed_at_threshold)
            out.append(f"{count} unfixed vulnerability(ies) at or above {self.severity} ({why})")
        if self.strict and self.stale_ignores:
            out.append(f"{len(self.stale_ignores)} stale ignore entry(ies) (--strict)")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def unfixed_counts(self) -> dict[str, int]:
        """Unfixed vulnerabilities per severity, highest first (zero counts left out)."""
        counts = {s: 0 for s in reversed(SEVERITIES)}
        for f in self.unfixed:
            counts[f.severity] += 1
        return {s: n for s, n in counts.items() if n}

    def top_unfixed_packages(self, limit: int = 5) -> list[dict[str, Any]]:
        """The packages carrying most unfixed vulnerabilities (ties: the higher severity first)."""
        by_pkg: dict[tuple[str, str], list[Finding]] = {}
        for f in self.unfixed:
            by_pkg.setdefault((f.package, f.installed), []).append(f)
        ranked = sorted(
            by_pkg.items(),
            key=lambda kv: (-len(kv[1]), -max(SEVERITIES.index(f.severity) for f in kv[1]), kv[0][0]),
        )
        return [
            {
                "package": pkg,
                "installed": installed,
                "count": len(found),
                "highest": max((f.severity for f in found), key=SEVERITIES.index),
            }
            for (pkg, installed), found in ranked[:limit]
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "artifact": self.artifact,
            "severity": self.severity,
            "ignore_unfixed": self.ignore_unfixed,
            "strict": self.strict,
            "fail_on_unfixed": self.fail_on_unfixed,
            "counts": {
                "blocking": len(self.blocking),
                "unfixed": len(self.unfixed),
                "below_threshold": len(self.below_threshold),
                "ignored": len(self.ignored),
                "unfixed_skipped": len(self.unfixed_skipped),
            },
            "blocking": [asdict(f) for f in self.blocking],
            "unfixed": {
                "by_severity": self.unfixed_counts(),
                "top_packages": self.top_unfixed_packages(),
                "at_or_above_threshold": [asdict(f) for f in self.unfixed_at_threshold],
            },
            "ignored": [asdict(f) for f in self.ignored],
            "expired_ignores": self.expired_ignores,
            "stale_ignores": self.stale_ignores,
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
    strict: bool = False,
    fail_on_unfixed: bool = False,
) -> ScanGateResult:
    """Sort every finding into blocking / unfixed / below threshold / ignored / unfixed-skipped."""
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
        strict=strict,
        fail_on_unfixed=fail_on_unfixed,
    )
    matched: set[str] = set()
    for finding in findings(report):
        hits = [e.id for e in active if finding.matches(e.id)]
        if hits:
            matched.update(hits)
            result.ignored.append(finding)
        elif not finding.fixable:
            (result.unfixed_skipped if ignore_unfixed else result.unfixed).append(finding)
        elif SEVERITIES.index(finding.severity) >= threshold:
            result.blocking.append(finding)
        else:
            result.below_threshold.append(finding)
    result.stale_ignores = [
        f"{e.id} (line {e.line}) matched no finding of this report" for e in active if e.id not in matched
    ]
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    result.blocking.sort(key=lambda f: (order[f.severity], f.id))
    result.unfixed.sort(key=lambda f: (order[f.severity], f.package, f.id))
    return result


def render_markdown(result: ScanGateResult) -> str:
    """The scan summary (scan-gate.md): verdict, blocking findings, the unfixed listing, stale ignores."""
    verdict = "PASSED" if result.passed else "FAILED"
    mode = " (strict)" if result.strict else ""
    lines = [
        f"# Image scan gate: {verdict}{mode}",
        "",
        f"- artifact: `{result.artifact or 'unknown'}`",
        f"- threshold: {result.severity} and above"
        + (" (unfixed vulnerabilities skipped)" if result.ignore_unfixed else ""),
        f"- blocking: {len(result.blocking)} · unfixed: {len(result.unfixed)} · below threshold: "
        f"{len(result.below_threshold)} · ignored: {len(result.ignored)} · unfixed skipped: "
        f"{len(result.unfixed_skipped)}",
    ]
    lines += [f"- fails because: {reason}" for reason in result.failures]
    lines.append("")
    if result.blocking:
        lines += ["| severity | kind | id | target | package | installed | fixed in |", "|---|---|---|---|---|---|---|"]
        for f in result.blocking:
            lines.append(
                f"| {f.severity} | {f.kind} | {f.id} | {f.target} | {f.package} | {f.installed} | {f.fixed or '-'} |"
            )
        lines.append("")
    lines += unfixed_section(result)
    if result.stale_ignores:
        lines += [
            "Stale ignore entries (they hide nothing in this report; remove them"
            + (", --strict fails on them):" if not result.strict else "):"),
            *(f"- {s}" for s in result.stale_ignores),
            "",
        ]
    if result.expired_ignores:
        lines += ["Expired ignore entries (no longer honoured): " + ", ".join(result.expired_ignores), ""]
    if result.ignore_policy_warnings:
        lines += ["Ignore entries outside the policy:", *(f"- {w}" for w in result.ignore_policy_warnings), ""]
    return "\n".join(lines)


def unfixed_section(result: ScanGateResult) -> list[str]:
    """Markdown lines listing the unfixed vulnerabilities: count per severity and the top packages."""
    if not result.unfixed:
        return []
    failing = result.strict or result.fail_on_unfixed
    note = "failing the gate" if failing else "not failing the gate (--strict or scan.fail_on_unfixed = true would)"
    counts = " · ".join(f"{sev} {n}" for sev, n in result.unfixed_counts().items())
    lines = [
        f"### Unfixed vulnerabilities: {len(result.unfixed)} with no fixed version yet, {note}",
        "",
        f"By severity: {counts}",
        "",
        "| package | installed | unfixed | highest |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {r['package']} | {r['installed']} | {r['count']} | {r['highest']} |" for r in result.top_unfixed_packages()
    ]
    return [*lines, ""]


def summary_from_json(data: dict[str, Any]) -> str:
    """The scan section of a review comment, from a scan-gate.json the pipeline exported."""
    passed = bool(data.get("passed"))
    counts = data.get("counts") or {}
    unfixed = data.get("unfixed") or {}
    lines = [
        f"### {'✅' if passed else '❌'} Image scan gate {'passed' if passed else 'failed'}"
        + (" (strict)" if data.get("strict") else ""),
        "",
        f"- blocking (fixable, {data.get('severity', 'HIGH')} and above): {counts.get('blocking', 0)}",
    ]
    lines += [f"- fails because: {reason}" for reason in data.get("failures") or []]
    raw = unfixed.get("by_severity") or {}
    by_sev = {sev: raw[sev] for sev in reversed(SEVERITIES) if raw.get(sev)}  # JSON may hold them sorted by name
    if by_sev:
        lines.append(
            f"- unfixed (no fixed version yet): {sum(by_sev.values())} — "
            + " · ".join(f"{s} {n}" for s, n in by_sev.items())
        )
        top = unfixed.get("top_packages") or []
        if top:
            lines.append("- top packages: " + ", ".join(f"`{r['package']}` {r['count']} ({r['highest']})" for r in top))
    stale = data.get("stale_ignores") or []
    if stale:
        lines.append(f"- stale ignore entries: {', '.join(str(s).split(' ')[0] for s in stale)}")
    return "\n".join(lines) + "\n"


def scan_gate(
    report_path: Path,
    *,
    severity: str = "HIGH",
    ignore_unfixed: bool = False,
    ignore_file: Path | None = None,
    report_dir: Path | None = None,
    today: dt.date | None = None,
    strict: bool = False,
    fail_on_unfixed: bool = False,
) -> ScanGateResult:
    """Read the report, apply the ignore file and the policy, write scan-gate.{json,md}."""
    severity = normalise_severity(severity)
    report = load_report(report_path)
    result = evaluate(
        report,
        severity=severity,
        ignore_unfixed=ignore_unfixed,
        ignores=load_ignore_file(ignore_file),
        today=today,
        strict=strict,
        fail_on_unfixed=fail_on_unfixed,
    )
    if report_dir is not None:
        write_json(Path(report_dir) / "scan-gate.json", result.to_dict())
        write_text(Path(report_dir) / "scan-gate.md", render_markdown(result))
    return result
