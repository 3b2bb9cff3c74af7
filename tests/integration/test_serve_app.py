"""The server in-process (`create_app` under Starlette's TestClient) on a real MLflow model."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlship.registry import ModelNotFound, load_model_dir
from mlship.serving.app import create_app
from mlship.serving.model import ServedModel, load, resolve_source
from mlship.settings import Settings, settings_from_mapping
from tests.support.serving import ServingModel, serving_model


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return serving_model()


def settings_for(root: Path, **serve: Any) -> Settings:
    return settings_from_mapping({"serve": {"prediction_log_sample": 1.0, **serve}}, root=root)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready: {client.get('/ready').json()}")


@pytest.fixture
def client(model: ServingModel, tmp_path: Path) -> Iterator[TestClient]:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    app = create_app(served, settings=settings, color="blue", git_sha="abc123", log_stream=io.StringIO())
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def expected_probabilities(model: ServingModel, rows: list[dict[str, Any]]) -> list[float]:
    estimator = load_model_dir(model.model_dir)
    return [float(p) for p in estimator.predict_proba(pd.DataFrame(rows))[:, 1]]


def test_predict_matches_the_model_in_all_three_shapes(client: TestClient, model: ServingModel) -> None:
    rows = model.example
    want = expected_probabilities(model, rows)
    columns = list(rows[0])
    bodies = [
        {"records": rows},
        {"dataframe_records": rows},
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
    ]
    for body in bodies:
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        out = response.json()
        assert out["probabilities"] == pytest.approx(want, abs=1e-12)
        assert out["predictions"] == [int(p >= 0.5) for p in want]
        assert out["model"] == {"name": "card-fraud", "version": model.version}


def test_bad_input_is_422_naming_the_field(client: TestClient, model: ServingModel) -> None:
    row = {**model.example[0], "amount": "lots"}
    response = client.post("/predict", json={"records": [row]})
    assert response.status_code == 422
    assert response.json()["message"].startswith("records.0.amount:")
    missing = {k: v for k, v in model.example[0].items() if k != "country"}
    response = client.post("/predict", json={"records": [missing]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "records", 0, "country"]
    assert client.post("/predict", content=b"{oops").status_code == 422


def test_oversized_bodies_are_413(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_body_bytes=2048)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    with TestClient(create_app(served, settings=settings, log_stream=io.StringIO())) as c:
        wait_ready(c)
        big = {"records": model.example * 40}
        assert c.post("/predict", json=big).status_code == 413
        # without a content-length (chunked), the limit still holds while reading
        chunks = iter([json.dumps(big).encode()[i : i + 500] for i in range(0, len(json.dumps(big)), 500)])
        assert c.post("/predict", content=chunks).status_code == 413
        assert c.post("/predict", json={"records": model.example[:1]}).status_code == 200


def test_version_health_and_metrics(client: TestClient, model: ServingModel) -> None:
    version = client.get("/version").json()
    assert version == {
        "name": "card-fraud",
        "version": model.version,
        "run_id": model.run_id,
        "git_sha": "abc123",
        "color": "blue",
        "model": {"name": "card-fraud", "version": model.version},
    }
    assert client.get("/health").json() == {"status": "ok"}
    client.post("/predict", json={"records": model.example})
    client.post("/predict", json={"records": [{"amount": 1}]})
    text = client.get("/metrics").text
    assert 'mlship_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
    assert 'mlship_requests_total{endpoint="/predict",method="POST",status="422"} 1.0' in text
    assert 'mlship_errors_total{endpoint="/predict",kind="client"} 1.0' in text
    assert "mlship_request_latency_seconds_bucket" in text
    assert f'mlship_model_info{{color="blue",name="card-fraud",version="{model.version}"}} 1.0' in text
    predicted = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("mlship_predictions_total{")
    )
    assert predicted == len(model.example)  # the warm-up is not counted


def test_every_request_is_one_json_access_line(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    stream = io.StringIO()
    with TestClient(create_app(served, settings=settings, color="green", log_stream=stream)) as c:
        wait_ready(c)
        c.post("/predict", json={"records": model.example[:1]})
        c.get("/nowhere")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [e for e in events if e["event"] == "access"]
    predict = next(e for e in access if e["path"] == "/predict")
    assert predict["status"] == 200 and predict["method"] == "POST"
    assert predict["color"] == "green" and predict["model_version"] == model.version
    assert predict["latency_ms"] > 0
    assert any(e["path"] == "/nowhere" and e["status"] == 404 for e in access)
    assert [e["event"] for e in events if e["event"] != "access"] == ["ready", "stopped"]


def test_sampled_predictions_are_logged_for_drift(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    with TestClient(create_app(served, settings=settings, color="blue", log_stream=io.StringIO())) as c:
        wait_ready(c)
        out = c.post("/predict", json={"records": model.example}).json()
    path = tmp_path / ".mlship" / "predictions" / "blue.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["inputs"] for line in lines] == model.example  # sample rate 1.0, warm-up excluded
    assert [line["probability"] for line in lines] == out["probabilities"]
    assert [line["prediction"] for line in lines] == out["predictions"]
    assert {line["model_version"] for line in lines} == {model.version}


def test_a_reference_loads_in_the_background_and_ready_tells_the_truth(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(model.root, prediction_log_sample=0.0)
    app = create_app("models:/card-fraud@challenger", settings=settings, log_stream=io.StringIO())
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # liveness at once
        first = c.get("/ready")
        if first.status_code == 503:
            assert first.json() == {"ready": False, "reason": "loading the model"}
            assert c.post("/predict", json={"records": model.example}).status_code == 503
        wait_ready(c)
        assert c.get("/version").json()["version"] == model.version  # the alias, pinned
        assert c.post("/predict", json={"records": model.example}).status_code == 200
        schema = c.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == {"records", "dataframe_records", "dataframe_split"}
        assert "amount" in schema["components"]["schemas"]["Record"]["properties"]


def test_an_unknown_reference_fails_when_the_app_is_created(model: ServingModel) -> None:
    settings = settings_for(model.root)
    with pytest.raises(ModelNotFound):
        create_app("models:/card-fraud/99", settings=settings)
    with pytest.raises(ModelNotFound):
        create_app("models:/card-fraud@nobody", settings=settings)


def test_a_model_that_cannot_predict_never_gets_ready(model: ServingModel, tmp_path: Path) -> None:
    class Broken:
        classes_ = (0, 1)

        def predict_proba(self, frame: Any) -> Any:
            raise RuntimeError("weights are corrupt")

    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    broken = ServedModel(estimator=Broken(), columns=served.columns, name="card-fraud", version="9")
    fatal: list[BaseException] = []
    with TestClient(create_app(broken, settings=settings, on_fatal=fatal.append, log_stream=io.StringIO())) as c:
        deadline = time.monotonic() + 10
        while not fatal and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "cannot load or warm the model: weights are corrupt"
        assert c.post("/predict", json={"records": model.example}).status_code == 503
        assert c.get("/health").status_code == 200
    assert isinstance(fatal[0], RuntimeError)


def test_a_model_error_on_one_request_is_a_500_and_the_server_carries_on(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)

    class Picky:
        classes_ = (0, 1)

        def predict_proba(self, frame: Any) -> Any:
            if (frame["amount"] < 0).any():
                raise ValueError("negative amount")
            return served.estimator.predict_proba(frame)

    picky = ServedModel(
        estimator=Picky(), columns=served.columns, name="card-fraud", version="1", example=served.example
    )
    with TestClient(create_app(picky, settings=settings, log_stream=io.StringIO())) as c:
        wait_ready(c)
        bad = c.post("/predict", json={"records": [{**model.example[0], "amount": -1}]})
        assert bad.status_code == 500
        assert bad.json() == {"detail": "prediction failed: ValueError"}
        assert c.post("/predict", json={"records": model.example}).status_code == 200
        assert 'mlship_errors_total{endpoint="/predict",kind="server"} 1.0' in c.get("/metrics").text


def test_an_unwritable_default_prediction_log_does_not_stop_serving(model: ServingModel, tmp_path: Path) -> None:
    blocker = tmp_path / ".mlship"
    blocker.write_text("a file where the state folder should be")
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    stream = io.StringIO()
    with TestClient(create_app(served, settings=settings, log_stream=stream)) as c:
        wait_ready(c)
        assert c.post("/predict", json={"records": model.example}).status_code == 200
    assert '"event":"prediction_log_disabled"' in stream.getvalue()


def test_a_multiclass_model_returns_every_class_probability(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from mlship.serving.model import Column

    estimator = LogisticRegression().fit([[0.0], [1.0], [2.0], [0.1], [1.1], [2.1]], ["a", "b", "c", "a", "b", "c"])

    class Frame:
        def predict_proba(self, frame: Any) -> Any:
            return estimator.predict_proba(frame[["x"]].to_numpy())

        classes_ = estimator.classes_

    served = ServedModel(estimator=Frame(), columns=[Column("x", "double")], name="m", version="1")
    settings = settings_for(tmp_path, prediction_log_sample=0.0)
    with TestClient(create_app(served, settings=settings, log_stream=io.StringIO())) as c:
        wait_ready(c)  # warm-up from a neutral row: this model logged no example
        out = c.post("/predict", json={"records": [{"x": 0.0}, {"x": 2.0}]}).json()
    assert out["predictions"] == ["a", "c"]
    assert len(out["probabilities"][0]) == 3
    assert sum(out["probabilities"][0]) == pytest.approx(1.0)


def test_mlships_own_requests_are_answered_but_kept_out_of_the_prediction_log(
    model: ServingModel, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    with TestClient(create_app(served, settings=settings, color="blue", log_stream=io.StringIO())) as c:
        wait_ready(c)
        for kind in ("smoke", "verify"):
            synthetic = c.post("/predict", json={"records": model.example}, headers={"x-mlship-synthetic": kind})
            assert synthetic.status_code == 200 and len(synthetic.json()["predictions"]) == len(model.example)
        real = c.post("/predict", json={"records": model.example[:1]}).json()
        text = c.get("/metrics").text
    path = tmp_path / ".mlship" / "predictions" / "blue.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["inputs"] for line in lines] == model.example[:1], "only the real request is logged"
    assert [line["probability"] for line in lines] == real["probabilities"]
    assert 'mlship_synthetic_total{endpoint="/predict"} 2.0' in text


def test_warm_up_503s_are_not_errors(model: ServingModel, tmp_path: Path) -> None:
    class Broken:
        classes_ = (0, 1)

        def predict_proba(self, frame: Any) -> Any:
            raise RuntimeError("never warms")

    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    broken = ServedModel(estimator=Broken(), columns=served.columns, name="card-fraud", version="9")
    with TestClient(create_app(broken, settings=settings, log_stream=io.StringIO())) as c:
        for _ in range(3):
            assert c.get("/ready").status_code == 503
        assert c.post("/predict", json={"records": model.example}).status_code == 503
        text = c.get("/metrics").text
    assert 'mlship_requests_total{endpoint="/ready",method="GET",status="503"} 3.0' in text
    assert 'kind="server"' not in text, "a server that says 'not ready yet' is not failing"


def test_a_client_that_disconnects_mid_body_is_a_client_error(client: TestClient) -> None:
    import asyncio

    app = client.app
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"5000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
    text = client.get("/metrics").text
    assert 'mlship_errors_total{endpoint="/predict",kind="client"} 1.0' in text
    assert 'kind="server"' not in text
