"""The Open Inference Protocol (V2) endpoints on a real MLflow model: shapes per the KServe spec,
the same probabilities as /predict, the same validation, counted and logged like /predict."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlship.serving.app import create_app
from mlship.serving.model import Column, ServedModel, load, resolve_source
from mlship.serving.v2 import endpoint_label
from tests.integration.test_serve_app import settings_for, wait_ready
from tests.support.serving import ServingModel, serving_model


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return serving_model()


@pytest.fixture
def client(model: ServingModel, tmp_path: Path) -> Iterator[TestClient]:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    with TestClient(create_app(served, settings=settings, color="blue", log_stream=io.StringIO())) as c:
        wait_ready(c)
        yield c


def tensors(client: TestClient, rows: list[dict[str, Any]], *, nested: bool = False) -> dict[str, Any]:
    """An inference request built the way a V2 client does: from the model metadata."""
    meta = client.get("/v2/models/card-fraud").json()
    inputs = []
    for spec in meta["inputs"]:
        data = [row[spec["name"]] for row in rows]
        shape = [len(rows), 1] if nested else [len(rows)]
        inputs.append(
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": shape,
                "data": [[v] for v in data] if nested else data,
            }
        )
    return {"id": "req-1", "inputs": inputs}


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "mlship" and isinstance(meta["version"], str)
    assert meta["extensions"] == ["binary_tensor_data"]


def test_model_metadata_lists_the_signature_as_tensors(client: TestClient, model: ServingModel) -> None:
    meta = client.get("/v2/models/card-fraud").json()
    assert meta["name"] == "card-fraud" and meta["versions"] == [model.version]
    assert meta["platform"] == "mlflow_sklearn"
    by_name = {t["name"]: t for t in meta["inputs"]}
    assert set(by_name) == set(model.example[0])
    assert by_name["country"] == {"name": "country", "datatype": "BYTES", "shape": [-1]}
    assert by_name["amount"]["datatype"] == "FP64"
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1]},
    ]
    assert client.get(f"/v2/models/card-fraud/versions/{model.version}").json() == meta
    assert client.get("/v2/models/card-fraud/ready").json() == {"name": "card-fraud", "ready": True}
    assert client.get(f"/v2/models/card-fraud/versions/{model.version}/ready").status_code == 200
    other = client.get("/v2/models/someone-else")
    assert other.status_code == 404 and "this server serves 'card-fraud'" in other.json()["error"]
    assert client.get("/v2/models/card-fraud/versions/999").status_code == 404


@pytest.mark.parametrize("nested", [False, True])
def test_infer_gives_the_same_probabilities_as_predict(client: TestClient, model: ServingModel, nested: bool) -> None:
    rows = model.example
    predicted = client.post("/predict", json={"records": rows}).json()
    response = client.post("/v2/models/card-fraud/infer", json=tensors(client, rows, nested=nested))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "card-fraud" and body["model_version"] == model.version and body["id"] == "req-1"
    label, proba = body["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [len(rows)], "data": predicted["predictions"]}
    assert proba["name"] == "probabilities" and proba["datatype"] == "FP64" and proba["shape"] == [len(rows)]
    assert proba["data"] == predicted["probabilities"], "bit-identical to /predict"
    versioned = client.post(f"/v2/models/card-fraud/versions/{model.version}/infer", json=tensors(client, rows))
    assert versioned.json()["outputs"] == body["outputs"]


def test_requested_outputs_only(client: TestClient, model: ServingModel) -> None:
    request = {**tensors(client, model.example[:2]), "outputs": [{"name": "probabilities"}]}
    body = client.post("/v2/models/card-fraud/infer", json=request).json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    bad = client.post("/v2/models/card-fraud/infer", json={**request, "outputs": [{"name": "logits"}]})
    assert bad.status_code == 400 and "unknown output 'logits'" in bad.json()["error"]


def with_input(request: dict[str, Any], name: str, **change: Any) -> dict[str, Any]:
    return {**request, "inputs": [{**t, **change} if t["name"] == name else t for t in request["inputs"]]}


def test_bad_requests_are_400_with_the_protocols_error_body(client: TestClient, model: ServingModel) -> None:
    good = tensors(client, model.example[:2])
    one = model.example[0]
    cases = {
        "not json": (b"{", "body"),
        "no inputs": ({"inputs": []}, "inputs"),
        "missing feature": (
            {"inputs": [t for t in good["inputs"] if t["name"] != "country"]},
            "missing input(s) country",
        ),
        "unknown feature": (
            {"inputs": [*good["inputs"], {"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]},
            "unknown input 'x'",
        ),
        "twice": ({"inputs": [*good["inputs"], good["inputs"][0]]}, "given twice"),
        "wrong datatype": (with_input(good, "amount", datatype="BYTES"), "the model takes FP64"),
        "string in numbers": (with_input(good, "amount", data=["a", "b"]), "input 'amount', row 0"),
        "too few values": (with_input(good, "amount", data=[one["amount"]]), "needs 2 values, data has 1"),
        "2-d shape": (with_input(good, "amount", shape=[1, 2]), "a feature tensor is [n] or [n, 1]"),
        "ragged rows": (with_input(good, "amount", shape=[3], data=[1.0, 2.0, 3.0]), "has 3 rows, the others 2"),
        "fraction in INT64": (with_input(good, "amount", datatype="INT64", data=[1.5, 2.0]), "with a fraction"),
        "zero rows": ({"inputs": [{**t, "shape": [0], "data": []} for t in good["inputs"]]}, "no rows"),
    }
    for case, (body, says) in cases.items():
        response = (
            client.post("/v2/models/card-fraud/infer", content=body)
            if isinstance(body, bytes)
            else client.post("/v2/models/card-fraud/infer", json=body)
        )
        assert response.status_code == 400, (case, response.text)
        assert set(response.json()) == {"error"} and says in response.json()["error"], (case, response.json())
    # the same row /predict refuses with 422 is refused here with 400
    bad = {**one, "amount": "lots"}
    assert client.post("/predict", json={"records": [bad]}).status_code == 422
    assert client.post("/v2/models/card-fraud/infer", json=tensors(client, [bad])).status_code == 400


def test_infer_is_counted_and_logged_like_predict(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    served = load(resolve_source(str(model.model_dir), settings), settings)
    with TestClient(create_app(served, settings=settings, color="green", log_stream=io.StringIO())) as c:
        wait_ready(c)
        out = c.post("/v2/models/card-fraud/infer", json=tensors(c, model.example)).json()
        c.post("/v2/models/card-fraud/infer", json={"inputs": []})
        c.post("/v2/models/card-fraud/infer", json=tensors(c, model.example[:1]), headers={"x-mlship-synthetic": "1"})
        text = c.get("/metrics").text
    assert 'mlship_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="200"} 2.0' in text
    assert 'mlship_errors_total{endpoint="/v2/models/{name}/infer",kind="client"} 1.0' in text
    predicted = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("mlship_predictions_total{")
    )
    assert predicted == len(model.example) + 1
    lines = [
        json.loads(line) for line in (tmp_path / ".mlship" / "predictions" / "green.jsonl").read_text().splitlines()
    ]
    assert [line["inputs"] for line in lines] == model.example, "sampled like /predict, synthetic rows kept out"
    assert [line["probability"] for line in lines] == out["outputs"][1]["data"]


def test_not_ready_is_503(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(model.root, prediction_log_sample=0.0)
    app = create_app("models:/card-fraud@challenger", settings=settings, log_stream=io.StringIO())
    state = app.state.mlship
    with TestClient(app) as c:
        state.ready = False  # as during the load and warm-up
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/models/card-fraud/ready").json() == {"name": "card-fraud", "ready": False}
        response = c.post("/v2/models/card-fraud/infer", json={"inputs": []})
        assert response.status_code == 503 and "error" in response.json()
        assert c.get("/v2/health/live").status_code == 200


def test_a_multiclass_model_gives_n_by_k_probabilities(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression().fit([[0.0], [1.0], [2.0], [0.1], [1.1], [2.1]], ["a", "b", "c", "a", "b", "c"])

    class Frame:
        def predict_proba(self, frame: Any) -> Any:
            return estimator.predict_proba(frame[["x"]].to_numpy())

        classes_ = estimator.classes_

    served = ServedModel(estimator=Frame(), columns=[Column("x", "double")], name="m", version="1")
    with TestClient(
        create_app(served, settings=settings_for(tmp_path, prediction_log_sample=0.0), log_stream=io.StringIO())
    ) as c:
        wait_ready(c)
        meta = c.get("/v2/models/m").json()
        body = c.post(
            "/v2/models/m/infer", json={"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [0.0, 2.0]}]}
        ).json()
        predicted = c.post("/predict", json={"records": [{"x": 0.0}, {"x": 2.0}]}).json()
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
    ]
    label, proba = body["outputs"]
    assert label["data"] == ["a", "c"] and proba["shape"] == [2, 3]
    assert proba["data"] == [p for row in predicted["probabilities"] for p in row]


def test_metrics_labels_stay_bounded() -> None:
    assert endpoint_label("/v2/models/anything/infer") == "/v2/models/{name}/infer"
    assert endpoint_label("/v2/models/a/versions/3/ready") == "/v2/models/{name}/versions/{version}/ready"
    assert endpoint_label("/v2/models/a") == "/v2/models/{name}"
    assert endpoint_label("/v2/health/live") == "/v2/health/live"
    assert endpoint_label("/v2/models/a/b/c") is None and endpoint_label("/v2x") is None
    assert endpoint_label("/predict") is None


def test_the_readme_example_infers(client: TestClient) -> None:
    """The curl body docs/serving.md shows is a valid request for the demo model's signature."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    found = re.search(r"/v2/models/card-fraud/infer -H 'content-type: application/json' -d '(.*?)'\n", readme, re.S)
    assert found is not None
    response = client.post("/v2/models/card-fraud/infer", content=found.group(1).encode())
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["label", "probabilities"]


def test_oversized_bodies_and_model_errors_answer_in_the_protocols_shape(model: ServingModel, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_body_bytes=2048)
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
        big = tensors(c, model.example[:1])
        big["inputs"][0]["data"] = ["x" * 4096]
        too_big = c.post("/v2/models/card-fraud/infer", json=big)
        assert too_big.status_code == 413 and "larger than 2048 bytes" in too_big.json()["error"]
        negative = tensors(c, [{**model.example[0], "amount": -1.0}])
        failed = c.post("/v2/models/card-fraud/infer", json=negative)
        assert failed.status_code == 500 and failed.json() == {"error": "prediction failed: ValueError"}
        assert c.post("/v2/models/card-fraud/infer", json=tensors(c, model.example)).status_code == 200, "carries on"


@pytest.mark.parametrize(
    ("classes", "datatype"),
    [([False, True], "BOOL"), ([0, 1], "INT64"), ([0.0, 1.0], "FP64"), (["no", "yes"], "BYTES")],
)
def test_the_label_datatype_follows_the_classes(classes: list[Any], datatype: str) -> None:
    from mlship.serving.v2 import _label_datatype

    assert _label_datatype(classes) == datatype
