"""Notifications reach a real webhook on 127.0.0.1 for every event kind; a failing one never changes a result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mlship import notify
from mlship.deploy.release import Release
from mlship.deploy.result import DeployResult
from mlship.deploy.router import Route, Router
from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.monitoring.abtest_analysis import Arm, analyse
from mlship.settings import NotifySettings, Settings, settings_from_mapping
from tests.support.http_recorder import Recorded, closed_port_url, recorder

SECRET_PATH = "/services/T000/B000/s3cr3tXYZ"


@pytest.fixture(autouse=True)
def _no_ambient_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (notify.WEBHOOK_ENV, "GITHUB_RUN_ID", "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "CI_PIPELINE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in (notify.FORMAT_ENV, notify.EVENTS_ENV, notify.TIMEOUT_ENV, notify.ENV_ENV):
        monkeypatch.delenv(name, raising=False)


def settings(tmp_path: Path, **notify_cfg: Any) -> Settings:
    return settings_from_mapping({"notify": notify_cfg}, root=tmp_path)


def release(version: str = "7") -> Release:
    return Release(
        ref="models:/card-fraud@challenger",
        uri=f"models:/card-fraud/{version}",
        name="card-fraud",
        version=version,
        run_id="abc123",
        color="green",
    )


def deploy_result(action: str = "deploy", weights: dict[str, int] | None = None) -> DeployResult:
    return DeployResult(
        action=action,
        env="staging",
        target="local",
        release=release(),
        live_url="http://127.0.0.1:8000",
        live="green",
        previous=release("6"),
        weights=weights,
    )


def test_slack_payload_has_text_and_blocks_and_json_payload_has_the_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.test")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/fraud")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url + SECRET_PATH)
        assert notify.deployed(settings(tmp_path), deploy_result())
        assert notify.deployed(settings(tmp_path, format="json"), deploy_result())
    slack, plain = hook.requests[0], hook.requests[1]
    assert slack.method == "POST" and slack.path == SECRET_PATH
    assert slack.headers["content-type"] == "application/json"
    assert set(slack.body) == {"text", "blocks"}
    assert slack.body["text"].startswith("🚀 mlship deploy LIVE: card-fraud v7 (staging)")
    assert slack.body["blocks"][0]["type"] == "section"
    assert "<https://github.test/acme/fraud/actions/runs/42|ci run>" in slack.body["blocks"][1]["elements"][0]["text"]
    body = plain.body
    assert (body["event"], body["verdict"], body["model"], body["version"], body["env"]) == (
        "deploy",
        "live",
        "card-fraud",
        "7",
        "staging",
    )
    assert body["details"]["previous"] == "card-fraud v6" and body["details"]["live"] == "green"
    assert body["links"] == {"ci run": "https://github.test/acme/fraud/actions/runs/42"}


def test_a_verdict_with_a_caveat_shows_it_in_both_formats() -> None:
    caveat = "fairness.demographic_parity: not enough evidence (about 150 rows per group would settle it)"
    notice = notify.Notice(event="gate", verdict="pass", summary="m passes", model="m", warning=caveat)
    slack = notify.payload(notice, "slack")
    assert slack["text"].startswith("⚠️ mlship gate PASS ⚠ NOT ENOUGH EVIDENCE: m — m passes ⚠ fairness.")
    assert notify.payload(notice, "json")["warning"] == caveat
    plain = notify.payload(notify.Notice(event="gate", verdict="pass", summary="m passes", model="m"), "slack")
    assert plain["text"] == "✅ mlship gate PASS: m — m passes"


def test_no_url_sends_nothing_and_the_events_filter_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not notify.deployed(settings(tmp_path), deploy_result())  # no MLSHIP_WEBHOOK_URL: off, silently
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        assert not notify.deployed(settings(tmp_path, events=["gate"]), deploy_result())
        assert notify.deployed(settings(tmp_path, events=["rollback"]), deploy_result("rollback"))
    assert [r.body["text"].split(":")[0] for r in hook.requests] == ["↩️ mlship rollback MANUAL"]


def test_a_canary_split_deploy_is_reported_as_canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        notify.deployed(settings(tmp_path, format="json"), deploy_result(weights={"blue": 90, "green": 10}))
    assert hook.requests[0].body["verdict"] == "canary"
    assert hook.requests[0].body["details"]["weights"] == {"blue": 90, "green": 10}


def test_a_shadow_is_reported_as_a_shadow_not_as_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        notify.deployed(settings(tmp_path, format="json"), deploy_result("shadow"))
        notify.deployed(settings(tmp_path, format="json"), deploy_result("stop-shadow"))
    started, stopped = (r.body for r in hook.requests)
    assert started["verdict"] == "shadow" and "receives copies of live traffic; green stays live" in started["summary"]
    assert stopped["verdict"] == "stopped" and stopped["summary"].startswith("stop-shadow: the shadow ended")


@pytest.mark.parametrize(
    ("kind", "error", "event", "verdict", "also_rollback"),
    [
        (
            "deploy",
            PipelineRejected("deploy of card-fraud v7 rolled back: smoke test failed"),
            "deploy",
            "automatic",
            True,
        ),
        ("deploy", InfraError("kubectl is missing"), "deploy", "error", False),
        ("rollback", PipelineRejected("rollback of card-fraud v6 rolled back"), "rollback", "fail", False),
    ],
)
def test_guard_tells_of_a_refused_or_broken_deploy_and_reraises(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    error: Exception,
    event: str,
    verdict: str,
    also_rollback: bool,
) -> None:
    def action(_: Settings) -> int:
        raise error

    events = ["rollback"] if also_rollback else [event]  # a rolled-back deploy also counts as a rollback
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        with pytest.raises(type(error)):
            notify.guard(kind, action, env="production", model="models:/card-fraud/7")(
                settings(tmp_path, format="json", events=events)
            )
    body = hook.requests[0].body
    assert (body["event"], body["verdict"], body["env"]) == (event, verdict, "production")
    assert body["summary"] == str(error) and body["details"]["exit_code"] == error.exit_code  # type: ignore[attr-defined]


def test_guard_keeps_usage_errors_and_success_to_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_usage(_: Settings) -> int:
        raise ConfigError("--weight must be 1..99")

    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        with pytest.raises(ConfigError):
            notify.guard("deploy", bad_usage, env="staging")(settings(tmp_path))
        assert notify.guard("deploy", lambda _s: 0, env="staging")(settings(tmp_path, format="json")) == 0
    assert hook.requests == []
    assert notify.settings_from_env().format == "json", "the guard hands the settings to the router it starts"


def test_canary_decision_is_sent_only_when_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = analyse(Arm("blue", 480, 5000), Arm("green", 700, 5000), mde=0.05)
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        assert not notify.canary(settings(tmp_path), report, applied=False, env="staging")
        assert notify.canary(settings(tmp_path, format="json"), report, applied=True, env="staging")
    body = hook.requests[0].body
    assert (body["event"], body["verdict"], body["details"]["state"]) == ("canary", "pass", "promote")
    assert body["details"]["treatment"] == {"successes": 700, "n": 5000}


def test_the_router_tells_of_its_failover_from_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real watch loop: live unreachable, standby ready → failover recorded and sent."""

    async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        standby = await asyncio.start_server(ready, "127.0.0.1", 0)
        port = standby.sockets[0].getsockname()[1]
        router = Router(tmp_path / "route.json")
        backends = {"green": "127.0.0.1:1", "blue": f"127.0.0.1:{port}"}
        router.set_route(Route(backends=backends, weights={"green": 100}, standby="blue"))
        watcher = asyncio.get_running_loop().create_task(router.watch(interval_s=0.02))
        for _ in range(200):
            if router.failover is not None:
                break
            await asyncio.sleep(0.02)
        watcher.cancel()
        standby.close()

    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        monkeypatch.setenv(notify.FORMAT_ENV, "json")
        monkeypatch.setenv(notify.ENV_ENV, "staging")
        asyncio.run(scenario())
        for _ in range(250):
            if hook.requests:
                break
            asyncio.run(asyncio.sleep(0.02))
    body = hook.requests[0].body
    assert (body["event"], body["verdict"], body["env"]) == ("failover", "automatic", "staging")
    assert body["details"]["from"] == "green" and body["details"]["to"] == "blue"
    assert body["summary"] == "live moved green → blue: green is unreachable"


def test_router_env_round_trips_and_bad_values_fall_back(tmp_path: Path) -> None:
    env = notify.router_env(settings(tmp_path, format="json", events=["failover"], timeout_s=2), "production")
    cfg = notify.settings_from_env(env)
    assert (cfg.format, cfg.events, cfg.timeout_s) == ("json", ["failover"], 2.0)
    assert notify.settings_from_env({notify.FORMAT_ENV: "xml"}) == NotifySettings()


@pytest.mark.parametrize("status", [500, 404])
def test_a_non_2xx_answer_is_one_warning_without_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    with recorder(lambda _r: (status, {"error": "nope"}, {})) as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url + SECRET_PATH)
        assert notify.deployed(settings(tmp_path), deploy_result()) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"mlship: warning: deploy notification not sent: the webhook answered HTTP {status}")
    assert "s3cr3t" not in err and "127.0.0.1" not in err


def test_a_closed_port_and_a_timeout_are_warnings_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = closed_port_url() + "?token=s3cr3t"
    monkeypatch.setenv(notify.WEBHOOK_ENV, url)
    assert notify.deployed(settings(tmp_path), deploy_result()) is False
    err = capsys.readouterr().err
    assert err.startswith("mlship: warning: deploy notification not sent: ConnectError")
    assert "s3cr3t" not in err

    import threading
    import time

    answer = threading.Event()

    def slow(_r: Recorded) -> tuple[int, Any, dict[str, str]]:
        answer.wait(60)  # answers only once the test has its result: without the timeout, 60 s
        return 200, {}, {}

    with recorder(slow) as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        started = time.monotonic()
        try:
            assert notify.deployed(settings(tmp_path, timeout_s=0.3), deploy_result()) is False
            took = time.monotonic() - started
        finally:
            answer.set()
        # 0.3 s with the timeout, 60 s without: 20 s cannot be reached by load alone.
        assert took < 20.0, "the timeout bounds the wait"
    assert "Timeout" in capsys.readouterr().err


def test_the_url_never_comes_from_a_file_and_child_processes_do_not_inherit_it(tmp_path: Path) -> None:
    from mlship.redaction import env_for_child

    with pytest.raises(ConfigError, match="MLSHIP_WEBHOOK_URL"):
        settings(tmp_path, url="https://hooks.example/x")
    env = {notify.WEBHOOK_ENV: "https://hooks.example/x", "PATH": "/bin"}
    assert notify.WEBHOOK_ENV not in env_for_child(environ=env), "a model server has no use for it"
    assert env_for_child([notify.WEBHOOK_ENV], environ=env)[notify.WEBHOOK_ENV] == env[notify.WEBHOOK_ENV]


def test_mlflow_run_link_only_for_a_server_and_without_credentials() -> None:
    assert notify.mlflow_run_url("https://u:p@mlflow.test/", "r1") == "https://mlflow.test/#/runs/r1"
    assert notify.mlflow_run_url("sqlite:///x.db", "r1") is None
    assert notify.mlflow_run_url("http://mlflow.test", None) is None
    assert notify.ci_run_url({"CI_PIPELINE_URL": "https://gitlab.test/p/-/pipelines/9"}) == (
        "https://gitlab.test/p/-/pipelines/9"
    )
    json.dumps(notify.Notice(event="gate", verdict="pass", summary="s").to_json())


def test_a_rollback_command_is_a_rollback_whatever_it_took(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlship rollback --to N` is a full deploy of an older release; aborting a canary switches back."""
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
        notify.deployed(settings(tmp_path, format="json"), deploy_result("deploy"), kind="rollback")
        notify.deployed(settings(tmp_path, format="json"), deploy_result("abort-canary"))
    assert [(r.body["event"], r.body["verdict"]) for r in hook.requests] == [("rollback", "manual")] * 2


def test_a_name_that_does_not_resolve_or_a_resolver_that_hangs_is_a_bounded_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import time

    monkeypatch.setenv(notify.WEBHOOK_ENV, "http://mlship-webhook.invalid/hook")  # RFC 2606: never resolves
    assert notify.deployed(settings(tmp_path, timeout_s=2), deploy_result()) is False
    assert "notification not sent: " in capsys.readouterr().err

    import threading

    gave_up = threading.Event()

    def hanging_resolver(*_args: Any, **_kwargs: Any) -> Any:
        gave_up.wait(60)  # hangs until the test has its result: without the bound, 60 s
        raise OSError("resolver gave up")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)  # httpx's timeout does not cover it
    started = time.monotonic()
    try:
        assert notify.deployed(settings(tmp_path, timeout_s=0.2), deploy_result()) is False
        took = time.monotonic() - started
    finally:
        gave_up.set()
    assert took < 20.0  # 0.2 s with the bound, 60 s without: 20 s cannot be reached by load alone
    assert "notification not sent: no answer within 0.2 s" in capsys.readouterr().err
