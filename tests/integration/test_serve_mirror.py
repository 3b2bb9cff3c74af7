"""The server-side shadow (kubernetes): a live `mlship serve` copies /predict to a candidate one."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mlship.errors import ConfigError
from mlship.serving.app import create_app
from mlship.serving.mirror import shadow_from_env
from mlship.settings import settings_from_mapping
from tests.support.serving import ServingModel, serving_model, start_server


def test_shadow_from_env_reads_url_and_sample_and_refuses_malformed_values() -> None:
    assert shadow_from_env({}) is None
    assert shadow_from_env({"MLSHIP_SHADOW_URL": "http://app-preview.ns.svc.cluster.local"}) == (
        "app-preview.ns.svc.cluster.local:80",
        1.0,
    )
    assert shadow_from_env({"MLSHIP_SHADOW_URL": "http://127.0.0.1:9/", "MLSHIP_SHADOW_SAMPLE": "0.1"}) == (
        "127.0.0.1:9",
        0.1,
    )
    for bad in (
        {"MLSHIP_SHADOW_URL": "https://x"},
        {"MLSHIP_SHADOW_URL": "http://x/predict"},
        {"MLSHIP_SHADOW_URL": "http://x", "MLSHIP_SHADOW_SAMPLE": "0"},
        {"MLSHIP_SHADOW_URL": "http://x", "MLSHIP_SHADOW_SAMPLE": "lots"},
    ):
        with pytest.raises(ConfigError, match="MLSHIP_SHADOW"):
            shadow_from_env(bad)


def test_without_a_shadow_the_server_has_no_shadow_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_SHADOW_URL", raising=False)
    model = serving_model()
    settings = settings_from_mapping({}, root=tmp_path)
    with TestClient(create_app(model.model_dir, settings=settings, log_stream=io.StringIO())) as client:
        assert client.get("/shadow").status_code == 404


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return serving_model()


@pytest.fixture
def servers(model: ServingModel, tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSHIP_SHADOW")}
    candidate, candidate_url = start_server(["--model", str(model.model_dir)], cwd=tmp_path, env=env)
    live_env = {**env, "MLSHIP_SHADOW_URL": candidate_url, "MLSHIP_SHADOW_SAMPLE": "1"}
    try:
        live, live_url = start_server(["--model", str(model.model_dir)], cwd=tmp_path, env=live_env)
    except BaseException:
        candidate.kill()
        raise
    yield live_url, candidate_url
    for proc in (live, candidate):
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_live_server_copies_real_predictions_and_reports_the_comparison(
    model: ServingModel, servers: tuple[str, str]
) -> None:
    live_url, candidate_url = servers
    rows = model.example
    with httpx.Client(timeout=10.0) as client:
        direct = client.post(f"{candidate_url}/predict", json={"records": rows}).json()
        for _ in range(25):
            answer = client.post(f"{live_url}/predict", json={"records": rows})
            assert answer.status_code == 200
            assert answer.json()["probabilities"] == direct["probabilities"]
        smoke = client.post(f"{live_url}/predict", json={"records": rows[:1]}, headers={"x-mlship-synthetic": "smoke"})
        assert smoke.status_code == 200
        stats: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = client.get(f"{live_url}/shadow").json()
            if stats["requests"] >= 25:
                break
            time.sleep(0.1)
    assert stats["offered"] == 25 and stats["requests"] == 25, "25 real requests copied, the synthetic one not"
    assert stats["compared_rows"] == 25 * len(rows) and stats["agreement"] == 1.0
    assert stats["abs_diff"]["max"] == 0.0 and stats["errors"] == 0 and stats["dropped"] == 0
    assert stats["target"] == candidate_url.removeprefix("http://")
    assert stats["latency_ms"]["p99"] is not None


def test_access_lines_carry_the_sticky_key_hash_the_router_sends(tmp_path: Path) -> None:
    model = serving_model()
    stream = io.StringIO()
    settings = settings_from_mapping({}, root=tmp_path)
    with TestClient(create_app(model.model_dir, settings=settings, log_stream=stream)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.post("/predict", json={"records": model.example[:1]}, headers={"x-mlship-key-hash": "0123abcd"})
        client.post("/predict", json={"records": model.example[:1]})
    lines = [json.loads(ln) for ln in stream.getvalue().splitlines() if '"access"' in ln and "/predict" in ln]
    assert [ln.get("key_hash") for ln in lines] == ["0123abcd", None]
