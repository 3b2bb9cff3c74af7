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
from tests.support.serving import free_port, serving_model


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


def test_the_v2_operations_are_in_the_document_and_fuzzed(api_schema: Any, live_url: str) -> None:
    """The Open Inference Protocol operations, schema-valid and schema-violating bodies: 4xx at worst,
    the errors in the protocol's `{"error": ...}` body, and some requests really inferred."""
    doc = httpx.get(live_url + "/openapi.json").json()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/v2_inference_request"
    }
    names = doc["components"]["schemas"]["v2_request_input"]["properties"]["name"]["enum"]
    assert set(names) == set(doc["components"]["schemas"]["Record"]["required"])
    v2 = api_schema.include(path_regex="^/v2")
    answered: list[tuple[str, int]] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=v2.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(base_url=live_url, checks=[not_a_server_error])
            if case.path.endswith("/infer") and response.status_code >= 400:
                assert set(response.json()) == {"error"}
            answered.append((case.path, response.status_code))

        fuzz()
    assert answered and all(code < 500 for _, code in answered)
    assert {path for path, _ in answered} >= {"/v2/models/{name}/infer", "/v2/health/ready", "/v2/models/{name}"}
    assert any(path.endswith("/infer") and code == 400 for path, code in answered)
