"""The registry against a real `mlflow server` on loopback, as a team's CI would use it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlship.errors import InfraError
from mlship.model.train import train
from mlship.registry import ModelNotFound, Registry
from mlship.settings import load_settings
from tests.conftest import make_project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),  # noqa: SIM115
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # an upper bound: the server imports all of mlflow
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("mlflow server did not become healthy in 240 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_train_register_promote_resolve_against_a_server(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    root = make_project(tmp_path / "p", rows=1200, model_name="fraud-srv")
    settings = load_settings(cwd=root)
    assert settings.resolved_tracking_uri == mlflow_server
    first, second = train(settings), train(settings)
    registry = Registry.from_settings(settings)
    v1 = registry.register(first.run_id, "fraud-srv", alias="challenger")
    v2 = registry.register(second.run_id, "fraud-srv", alias="challenger")
    assert (v1.version, v2.version) == ("1", "2")
    registry.set_alias("fraud-srv", "champion", "1")

    champion = registry.resolve("models:/fraud-srv@champion")
    assert champion.uri == "models:/fraud-srv/1" and champion.run_id == first.run_id
    assert registry.resolve("models:/fraud-srv@challenger").version == "2"
    versions = registry.versions("fraud-srv")
    assert [(v.version, v.aliases) for v in versions] == [("2", ("challenger",)), ("1", ("champion",))]
    assert versions[0].metrics["roc_auc"] == pytest.approx(second.metrics["roc_auc"])
    model = registry.load_model(champion)
    assert hasattr(model, "predict_proba")
    # the alias moved, the pinned reference did not
    registry.set_alias("fraud-srv", "champion", "2")
    assert registry.resolve(champion.uri).version == "1"
    with pytest.raises(ModelNotFound, match="has no alias 'staging'"):
        registry.resolve("models:/fraud-srv@staging")
    assert not (root / ".mlship" / "mlflow.db").exists()  # nothing went to the embedded store


def test_unreachable_server_is_an_infrastructure_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    settings = load_settings(cwd=tmp_path)
    with pytest.raises(InfraError, match="unreachable") as info:
        Registry.from_settings(settings)
    assert info.value.exit_code == 3


def test_connecting_does_not_leak_the_uri_into_the_environment(tmp_path: Path) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a later Settings must not see it."""
    settings = load_settings(cwd=tmp_path)
    Registry.from_settings(settings)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    other = load_settings(cwd=tmp_path / "elsewhere")
    assert other.resolved_tracking_uri.endswith("/elsewhere/.mlship/mlflow.db")
