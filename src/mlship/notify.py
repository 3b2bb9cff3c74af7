"""Tell the team: gate verdicts, deploy outcomes, rollbacks, failovers, drift and canary decisions
go to one webhook, as a Slack-compatible message or as plain JSON (`[tool.mlship.notify]`).

The URL is a secret, read only from the environment (MLSHIP_WEBHOOK_URL) and never printed.
A notification is a courtesy, not a stage: one that cannot be delivered (timeout, DNS, a
non-2xx answer) is one warning line on stderr and never changes a command's result or exit code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mlship.errors import InfraError, PipelineRejected
from mlship.redaction import MASK, redact
from mlship.webhook import NOTIFY_EVENTS, WEBHOOK_ENV

if TYPE_CHECKING:
    from pathlib import Path

    from mlship.deploy.result import DeployResult
    from mlship.model.gates.types import GateReport
    from mlship.monitoring.abtest_analysis import AbReport
    from mlship.monitoring.drift import DriftReport
    from mlship.settings import NotifySettings, Settings

T = TypeVar("T")

FORMAT_ENV = "MLSHIP_NOTIFY_FORMAT"
EVENTS_ENV = "MLSHIP_NOTIFY_EVENTS"
TIMEOUT_ENV = "MLSHIP_NOTIFY_TIMEOUT_S"
ENV_ENV = "MLSHIP_NOTIFY_ENV"
"""How the router process (which reads no settings) learns the project's notify settings."""

ICONS = {"pass": "✅", "fail": "❌", "live": "🚀", "canary": "🐤", "manual": "↩️", "automatic": "⚠️"}


@dataclass(frozen=True)
class Notice:
    """One thing that happened, in the words both payload formats share."""

    event: str
    verdict: str
    summary: str
    model: str | None = None
    version: str | None = None
    env: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    also: tuple[str, ...] = ()
    """Other event kinds this notice is (a rolled-back deploy is also an automatic rollback)."""
    warning: str = ""
    """A verdict that stands with a caveat (a gate passed with ⚠ not enough evidence): what is unsettled."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "verdict": self.verdict,
            "model": self.model,
            "version": self.version,
            "env": self.env,
            "summary": self.summary,
            "warning": self.warning,
            "details": self.details,
            "links": self.links,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def to_slack(self) -> dict[str, Any]:
        """Slack's incoming-webhook shape: `text` (also the notification's fallback) plus blocks."""
        icon = "⚠️" if self.warning else ICONS.get(self.verdict, "ℹ️")
        subject = f"{self.model} v{self.version}" if self.model and self.version else self.model or ""
        where = f" ({self.env})" if self.env else ""
        caveat = " ⚠ NOT ENOUGH EVIDENCE" if self.warning else ""
        text = f"{icon} mlship {self.event} {self.verdict.upper()}{caveat}: {subject}{where} — {self.summary}"
        if self.warning:
            text += f" ⚠ {self.warning}"
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)}}]
        if self.links:
            links = " · ".join(f"<{url}|{name}>" for name, url in self.links.items())
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
        return {"text": text, "blocks": blocks}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice, fmt: str) -> dict[str, Any]:
    return notice.to_slack() if fmt == "slack" else notice.to_json()


def send(notice: Notice, cfg: NotifySettings, *, environ: Mapping[str, str] | None = None) -> bool:
    """Post `notice` when a URL is set and its event is wanted; True when the webhook took it.

    Never raises: a failure is one warning line (without the URL) on stderr.
    """
    env = os.environ if environ is None else environ
    url = env.get(WEBHOOK_ENV, "").strip()
    if not url or not ({notice.event, *notice.also} & set(cfg.events)):
        return False
    outcome: list[str | None] = []
    worker = threading.Thread(target=_deliver, args=(url, payload(notice, cfg.format), cfg.timeout_s, outcome))
    worker.daemon = True  # a resolver that hangs past every timeout must not hold the process open
    worker.start()
    worker.join(cfg.timeout_s + 1.0)  # httpx's timeout does not bound name resolution: this does
    if not outcome:
        reason = f"no answer within {cfg.timeout_s:g} s"
    elif outcome[0] is None:
        return True
    else:
        reason = outcome[0]
    reason = redact(reason.replace(url, MASK))
    print(
        f"mlship: warning: {notice.event} notification not sent: {reason} (check {WEBHOOK_ENV}; the result stands)",
        file=sys.stderr,
        flush=True,
    )
    return False


def _deliver(url: str, body: dict[str, Any], timeout_s: float, outcome: list[str | None]) -> None:
    """POST `body`; append None on a 2xx, else why not."""
    try:
        import httpx  # noqa: PLC0415 - httpx: heavy, imported where it is used (off `--help` and the light paths)

        response = httpx.post(url, json=body, timeout=timeout_s)
        outcome.append(None if response.is_success else f"the webhook answered HTTP {response.status_code}")
    except Exception as exc:  # noqa: BLE001 - whatever broke delivery, the command's result stands
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        outcome.append(f"{type(exc).__name__}{': ' + text if text else ''}")


def send_in_background(notice: Notice, cfg: NotifySettings) -> threading.Thread:
    """Deliver from a daemon thread: for loops that must not wait up to the timeout (the router)."""
    thread = threading.Thread(target=send, args=(notice, cfg), name="mlship-notify", daemon=True)
    thread.start()
    return thread


# Links ---------------------------------------------------------------------------------------


def ci_run_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The CI run this command is part of (GitHub Actions or GitLab), from the CI's own variables."""
    env = os.environ if environ is None else environ
    server, repo, run = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run}"
    return env.get("CI_PIPELINE_URL") or None


def mlflow_run_url(tracking_uri: str, run_id: str | None) -> str | None:
    """The MLflow UI page of a run, when the tracking store is a server (credentials never included)."""
    if not run_id or not tracking_uri.startswith(("http://", "https://")):
        return None
    scheme, _, rest = tracking_uri.partition("://")
    host_and_path = rest.split("@", 1)[1] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{host_and_path.rstrip('/')}/#/runs/{run_id}"


def _links(settings: Settings | None, run_id: str | None = None, report: Path | None = None) -> dict[str, str]:
    links: dict[str, str] = {}
    ci = ci_run_url()
    if ci:
        links["ci run"] = ci
    if settings is not None:
        mlflow = mlflow_run_url(settings.resolved_tracking_uri, run_id)
        if mlflow:
            links["mlflow run"] = mlflow
    if report is not None:
        links["report"] = str(report)
    return links


# The events ----------------------------------------------------------------------------------


def gate(settings: Settings, report: GateReport, report_dir: Path) -> bool:
    """`mlship gate`'s verdict."""
    cand = report.candidate.describe()
    notice = Notice(
        event="gate",
        verdict=report.verdict,
        summary=report.summary,
        model=cand.get("name") or cand.get("label"),
        version=_str(cand.get("version")),
        details={
            "failed": [g.name for g in report.gates if g.failed],
            "not_enough_evidence": [g.name for g in report.inconclusive],
            "registered": report.registered,
        },
        warning=report.warning if report.passed else "",
        links=_links(settings, cand.get("run_id") or report.logged_to_run, report_dir / "gate.md"),
    )
    return send(notice, settings.notify)


def deployed(settings: Settings, result: DeployResult, *, kind: str = "deploy") -> bool:
    """A deploy or rollback (`kind`) that succeeded: what is live now, and where.

    `mlship rollback` is a rollback whatever it took (one switch, or a full deploy of an older
    release); a deploy that ends a canary by switching back is one too.
    """
    r = result.release
    split = bool(result.weights and len(result.weights) > 1)
    where = f"({result.target}/{result.env})"
    summary = f"{result.action}: {r.label} is live on {result.live} {where}"
    if kind == "rollback" or result.action in ("rollback", "abort-canary"):
        event, verdict = "rollback", "manual"
    elif result.action == "shadow":  # the candidate only receives copies: the live release is unchanged
        event, verdict = "deploy", "shadow"
        summary = f"shadow: {r.label} receives copies of live traffic; {result.live} stays live {where}"
    elif result.action == "stop-shadow":
        event, verdict = "deploy", "stopped"
        summary = f"stop-shadow: the shadow ended; {result.live} stays live {where}"
    else:
        event, verdict = "deploy", "canary" if split else "live"
    notice = Notice(
        event=event,
        verdict=verdict,
        summary=summary,
        model=r.name,
        version=r.version,
        env=result.env,
        details={
            "action": result.action,
            "target": result.target,
            "live": result.live,
            "live_url": result.live_url,
            "weights": result.weights,
            "previous": result.previous.label if result.previous else None,
            "verify": result.verify.reason if result.verify else None,
        },
        links=_links(settings, r.run_id),
    )
    return send(notice, settings.notify)


def guard(kind: str, action: Callable[[Settings], T], *, env: str, model: str | None = None) -> Callable[[Settings], T]:
    """Wrap a deploy/rollback command's action: a refusal or an infrastructure failure is told, then re-raised.

    It also puts the notify settings in this process's environment, which the local router it
    may start inherits (`router_env`): the router reads no settings of its own.

    A deploy the pipeline refused was rolled back (the previous release stays live): that is both a
    deploy outcome and an automatic rollback. Usage errors (exit 2) are the caller's, not news.
    """

    def guarded(settings: Settings) -> T:
        os.environ.update(router_env(settings, env))  # a router this command starts tells of its failovers
        try:
            return action(settings)
        except (PipelineRejected, InfraError) as exc:
            rejected = isinstance(exc, PipelineRejected)
            if kind == "deploy":
                verdict, also = ("automatic", ("rollback",)) if rejected else ("error", ())
                event = "deploy"
            else:
                event, verdict, also = "rollback", "fail" if rejected else "error", ()
            notice = Notice(
                event=event,
                verdict=verdict,
                summary=redact(str(exc)),
                model=model,
                env=env,
                details={"exit_code": exc.exit_code},
                links=_links(None),
                also=also,
            )
            send(notice, settings.notify)
            raise

    return guarded


def drift(settings: Settings, report: DriftReport, report_dir: Path | None) -> bool:
    """`mlship drift`'s dataset verdict and the features that moved."""
    drifted = report.drifted
    summary = (
        f"{len(drifted)} of {len(report.features)} features drifted ({', '.join(drifted)})"
        if drifted
        else f"no dataset drift ({len(report.features)} features, {report.n_current:,} current rows)"
    )
    notice = Notice(
        event="drift",
        verdict="fail" if report.dataset_drift else "pass",
        summary=summary,
        model=settings.model_name,
        details={
            "dataset_drift": report.dataset_drift,
            "drifted_features": drifted,
            "prediction_drift": report.prediction.drifted if report.prediction else None,
            "reference": report.reference,
            "current": report.current,
        },
        links=_links(None, report=(report_dir or settings.reports_path) / "drift.md"),
    )
    return send(notice, settings.notify)


def canary(settings: Settings, report: AbReport, *, applied: bool, env: str) -> bool:
    """A canary decided from its events (`mlship abtest --apply`): promote, reject, keep collecting, or srm."""
    if not applied:
        return False
    verdict = {"promote": "pass", "reject": "fail"}.get(report.state, report.state)
    notice = Notice(
        event="canary",
        verdict=verdict,
        summary=f"{report.state}: lift {report.lift:+.4f}, p = {report.decision.p_value:.4g} (action: {report.action})",
        model=settings.model_name,
        env=env,
        details={
            "state": report.state,
            "action": report.action,
            "control": {"successes": report.control.successes, "n": report.control.n},
            "treatment": {"successes": report.treatment.successes, "n": report.treatment.n},
        },
        links=_links(None),
    )
    return send(notice, settings.notify)


# The router's failover -----------------------------------------------------------------------


def router_env(settings: Settings, env: str) -> dict[str, str]:
    """What the local router process needs to tell of a failover (it reads no settings itself)."""
    cfg = settings.notify
    return {
        FORMAT_ENV: cfg.format,
        EVENTS_ENV: ",".join(cfg.events),
        TIMEOUT_ENV: str(cfg.timeout_s),
        ENV_ENV: env,
    }


def settings_from_env(environ: Mapping[str, str] | None = None) -> NotifySettings:
    """The notify settings `router_env` handed down; the defaults for anything missing or unreadable."""
    from mlship.settings import NotifySettings  # noqa: PLC0415 - pydantic: kept off `--help` (commands import notify at top)

    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if env.get(FORMAT_ENV):
        raw["format"] = env[FORMAT_ENV]
    if EVENTS_ENV in env:
        raw["events"] = [e for e in env[EVENTS_ENV].split(",") if e]
    if env.get(TIMEOUT_ENV):
        raw["timeout_s"] = env[TIMEOUT_ENV]
    try:
        return NotifySettings.model_validate(raw)
    except ValueError:
        return NotifySettings()


def failover(record: Mapping[str, Any]) -> threading.Thread:
    """The router made a standby live on its own: tell, from a thread, never from the request path."""
    notice = Notice(
        event="failover",
        verdict="automatic",
        summary=f"live moved {record.get('from')} → {record.get('to')}: {record.get('reason')}",
        env=os.environ.get(ENV_ENV) or None,
        details=dict(record),
    )
    return send_in_background(notice, settings_from_env())


def _str(value: object) -> str | None:
    return None if value is None else str(value)


__all__ = ["NOTIFY_EVENTS", "WEBHOOK_ENV", "Notice", "canary", "deployed", "drift", "failover", "gate", "guard", "send"]
