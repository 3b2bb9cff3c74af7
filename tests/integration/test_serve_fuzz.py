"""Schemathesis fuzzes the server from its own OpenAPI document: no input may cause a 5xx.

The server runs for real (uvicorn on a loopback port, in a thread) on a real MLflow model;
schemathesis generates valid and invalid bodies for every operation from the schema that
the model signature produced.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from mlship.serving.app import create_app
from mlship.serving.model import load, resolve_source
from mlship.settings import settings_from_mapping
from tests.serving_support import free_port, serving_model


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    import uvicorn

    model = serving_model()
    cfg = settings_from_mapping({"serve": {"prediction_log_sample": 0.0, "max_body_bytes": 65536}}, root=model.root)
    app = create_app(load(resolve_source(str(model.model_dir), cfg), cfg), settings=cfg, log_stream=io.StringIO())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    return schemathesis.openapi.from_url(live_url + "/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_server_fail(api_schema: Any, live_url: str, mode: GenerationMode) -> None:
    """Every operation, schema-valid and schema-violating inputs: 4xx at worst, never 5xx."""
    strategy = api_schema.as_strategy(generation_mode=mode)
    answered: list[int] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(base_url=live_url, checks=[not_a_server_error])
        answered.append(response.status_code)

    fuzz()
    assert answered and all(code < 500 for code in answered)
    if mode is GenerationMode.POSITIVE:
        assert 200 in answered  # valid bodies were really predicted, not all refused


def test_the_document_describes_the_model_input(api_schema: Any, live_url: str) -> None:
    doc = httpx.get(live_url + "/openapi.json").json()
    record = doc["components"]["schemas"]["Record"]
    assert set(record["required"]) == {
        "merchant_category",
        "country",
        "device_type",
        "amount",
        "hour",
        "account_age_days",
        "num_tx_24h",
    }
    assert {op for path in doc["paths"].values() for op in path} == {"get", "post"}
