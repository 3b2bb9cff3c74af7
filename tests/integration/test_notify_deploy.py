"""Deploy-side notifications through the real processes: `mlship rollback` tells the webhook, and the
supervised router process tells it of the failover it makes on its own when the live color dies."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship import notify
from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.local import free_port
from mlship.settings import load_settings
from tests.support.deploy_doubles.harness import fake_controller, fake_release, served_version
from tests.support.http_recorder import recorder

register_all(app)
runner = CliRunner()


def test_rollback_and_the_routers_failover_reach_the_webhook(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy = {"port": free_port(), "verify_window_s": 1.0, "smoke_latency_ms": 5000.0, "max_p99_ms": 5000.0}
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in deploy.items())
    (project / "pyproject.toml").write_text(
        f'[tool.mlship]\nmodel_name = "card-fraud"\n[tool.mlship.notify]\nformat = "json"\n[tool.mlship.deploy]\n{body}'
    )
    settings = load_settings(cwd=project)
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url + "/hook")
        for name, value in notify.router_env(settings, "staging").items():  # what `mlship deploy` hands its router
            monkeypatch.setenv(name, value)
        target, ctl = fake_controller(settings)
        try:
            ctl.deploy(fake_release("1"))
            ctl.deploy(fake_release("2"))
            result = runner.invoke(app, ["rollback"])
            assert result.exit_code == 0, result.output
            assert served_version(target.live_url()) == "1"
            rollback = [r.body for r in hook.requests if r.body["event"] == "rollback"]
            assert len(rollback) == 1 and rollback[0]["verdict"] == "manual"
            assert rollback[0]["version"] == "1" and rollback[0]["details"]["live"] == "blue"

            os.kill(int(target._load()["colors"]["blue"]["pid"]), signal.SIGKILL)  # the live color dies
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(r.body["event"] == "failover" for r in hook.requests):
                time.sleep(0.1)
            failover = [r.body for r in hook.requests if r.body["event"] == "failover"]
            assert len(failover) == 1, [r.body["event"] for r in hook.requests]
            assert failover[0]["verdict"] == "automatic" and failover[0]["env"] == "staging"
            assert (failover[0]["details"]["from"], failover[0]["details"]["to"]) == ("blue", "green")
            assert served_version(target.live_url()) == "2", "the router really moved live traffic"
        finally:
            ctl.down()  # also stops the retirement `mlship rollback` scheduled (target.down() left it running)
