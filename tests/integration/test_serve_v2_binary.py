"""The V2 binary tensor data extension, built byte by byte from the documented layout (KServe's and
Triton's "Binary Tensor Data Extension": a JSON header whose length is the
`Inference-Header-Content-Length` header, then each binary input's bytes in input order; numbers
little-endian, row-major; BOOL one byte; BYTES a 4-byte little-endian length then the bytes),
and the real client (`tritonclient.http`, whose default is binary data) against `mlship serve`."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlship.serving.app import create_app
from mlship.serving.model import load, resolve_source
from tests.integration.test_serve_app import settings_for, wait_ready
from tests.integration.test_serve_v2 import tensors
from tests.support.serving import ServingModel, serving_model, start_server

INFER = "/v2/models/card-fraud/infer"


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


def encode(datatype: str, values: list[Any]) -> bytes:
    """One tensor's bytes as the extension document lays them out, written out by hand."""
    if datatype == "BYTES":
        out = b""
        for value in values:
            raw = value.encode("utf-8")
            out += struct.pack("<I", len(raw)) + raw
        return out
    if datatype == "FP64":
        return b"".join(struct.pack("<d", float(v)) for v in values)
    if datatype == "INT64":
        return b"".join(struct.pack("<q", int(v)) for v in values)
    if datatype == "BOOL":
        return bytes(1 if v else 0 for v in values)
    raise AssertionError(datatype)


def binary_request(
    rows: list[dict[str, Any]], types: dict[str, str], *, parameters: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The whole body: JSON header (inputs with binary_data_size, no data), then the tensors' bytes."""
    inputs, chunks = [], []
    for name, datatype in types.items():
        chunk = encode(datatype, [row[name] for row in rows])
        chunks.append(chunk)
        inputs.append(
            {"name": name, "shape": [len(rows)], "datatype": datatype, "parameters": {"binary_data_size": len(chunk)}}
        )
    header = json.dumps({"id": "bin-1", "inputs": inputs, **({"parameters": parameters} if parameters else {})})
    body = header.encode() + b"".join(chunks)
    length = str(len(header.encode()))
    return body, {"Inference-Header-Content-Length": length, "content-type": "application/octet-stream"}


def model_types(client: TestClient) -> dict[str, str]:
    return {t["name"]: t["datatype"] for t in client.get("/v2/models/card-fraud").json()["inputs"]}


def split_response(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_the_server_advertises_the_extension(client: TestClient) -> None:
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]


def test_a_binary_request_built_byte_by_byte_gives_the_json_answer(client: TestClient, model: ServingModel) -> None:
    rows = model.example
    types = model_types(client)
    assert set(types.values()) == {"BYTES", "FP64", "INT64"}, "the demo model's signature: strings, doubles, longs"
    expected = client.post(INFER, json=tensors(client, rows)).json()["outputs"]
    body, headers = binary_request(rows, types)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json"), "JSON outputs unless asked for binary"
    assert response.json()["outputs"] == expected and response.json()["id"] == "bin-1"


def test_binary_outputs_follow_the_header_as_little_endian_bytes(client: TestClient, model: ServingModel) -> None:
    rows = model.example
    expected = {o["name"]: o for o in client.post(INFER, json=tensors(client, rows)).json()["outputs"]}
    body, headers = binary_request(rows, model_types(client), parameters={"binary_data_output": True})
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    head, tail = split_response(response)
    label, proba = head["outputs"]
    assert "data" not in label and label["parameters"]["binary_data_size"] == 8 * len(rows)
    assert proba["parameters"]["binary_data_size"] == 8 * len(rows)
    assert len(tail) == 16 * len(rows)
    labels = list(struct.unpack(f"<{len(rows)}q", tail[: 8 * len(rows)]))
    probabilities = list(struct.unpack(f"<{len(rows)}d", tail[8 * len(rows) :]))
    assert labels == expected["label"]["data"] and probabilities == expected["probabilities"]["data"]
    # one output as binary, the other as JSON: per-output `binary_data`
    mixed = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    del mixed["parameters"]  # no request-wide binary_data_output: each output says for itself
    mixed["outputs"] = [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]
    header = json.dumps(mixed).encode()
    again = client.post(
        INFER,
        content=header + body[int(headers["Inference-Header-Content-Length"]) :],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    head, tail = split_response(again)
    assert [o["name"] for o in head["outputs"]] == ["probabilities", "label"]
    assert head["outputs"][1]["data"] == expected["label"]["data"]
    assert list(struct.unpack(f"<{len(rows)}d", tail)) == expected["probabilities"]["data"]


def test_json_and_binary_inputs_mix_and_int64_goes_in_as_numbers(client: TestClient, model: ServingModel) -> None:
    rows = [{**r, "hour": int(r["hour"])} for r in model.example]
    expected = client.post(INFER, json=tensors(client, rows)).json()["outputs"]
    types = {"amount": "FP64", "hour": "INT64"}
    body, headers = binary_request(rows, types)
    header_length = int(headers["Inference-Header-Content-Length"])
    request = json.loads(body[:header_length])
    request["inputs"] += [t for t in tensors(client, rows)["inputs"] if t["name"] not in types]
    header = json.dumps(request).encode()
    response = client.post(
        INFER, content=header + body[header_length:], headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == expected


def test_malformed_binary_requests_are_400_naming_the_input(client: TestClient, model: ServingModel) -> None:
    rows = model.example[:2]
    types = model_types(client)
    body, headers = binary_request(rows, types)
    length = int(headers["Inference-Header-Content-Length"])
    request = json.loads(body[:length])
    amount = next(i for i, t in enumerate(request["inputs"]) if t["name"] == "amount")

    def with_amount(change: dict[str, Any], tail: bytes | None = None) -> tuple[bytes, dict[str, str]]:
        changed = json.loads(body[:length])
        changed["inputs"][amount] = {**changed["inputs"][amount], **change}
        header = json.dumps(changed).encode()
        return header + (body[length:] if tail is None else tail), {"Inference-Header-Content-Length": str(len(header))}

    nan_tail = body[length:].replace(struct.pack("<d", rows[0]["amount"]), struct.pack("<d", float("nan")), 1)
    cases: dict[str, tuple[bytes, dict[str, str], str]] = {
        "no header length": (body, {}, "needs the Inference-Header-Content-Length header"),
        "header length past the body": (body, {"Inference-Header-Content-Length": str(len(body) + 1)}, "JSON header"),
        "header length not a number": (body, {"Inference-Header-Content-Length": "12a"}, "JSON header"),
        "too few bytes": (body[:-3], headers, "bytes of binary data are left"),
        "bytes left over": (body + b"\x00", headers, "binary_data_size add up to"),
        "size not a multiple": (*with_amount({"parameters": {"binary_data_size": 12}}), "input 'amount'"),
        "size negative": (*with_amount({"parameters": {"binary_data_size": -8}}), "input 'amount'"),
        "data and size": (*with_amount({"data": [1.0, 2.0]}), "input 'amount' has both"),
        "neither": (*with_amount({"parameters": {}}), "input 'amount' has no data"),
        "not finite": (*with_amount({}, nan_tail), "input 'amount', row 0: Input should be a finite number"),
    }
    country = next(i for i, t in enumerate(request["inputs"]) if t["name"] == "country")
    offset = sum(t["parameters"]["binary_data_size"] for t in request["inputs"][:country])
    bad_utf8 = bytearray(body[length:])
    bad_utf8[offset + 4] = 0xFF
    cases["BYTES not UTF-8"] = (body[:length] + bytes(bad_utf8), headers, "input 'country', row 0: BYTES element")
    long_len = bytearray(body[length:])
    long_len[offset : offset + 4] = struct.pack("<I", 10_000)
    cases["BYTES length too long"] = (body[:length] + bytes(long_len), headers, "input 'country', row 0")
    for case, (content, sent, says) in cases.items():
        response = client.post(INFER, content=content, headers=sent)
        assert response.status_code == 400, (case, response.text)
        assert says in response.json()["error"], (case, response.json())


@pytest.mark.parametrize(
    ("datatype", "value", "row"),
    [
        ("INT64", 2**63, 1),  # one past the largest int64
        ("INT64", -(2**63) - 1, 1),
        ("INT64", 10**30, 1),
        ("INT32", 2**31, 1),
        ("UINT8", -1, 1),
    ],
)
def test_integers_out_of_their_datatypes_range_are_400_naming_the_input(
    client: TestClient, model: ServingModel, datatype: str, value: int, row: int
) -> None:
    """JSON integers have no range; an INT64 tensor does (before: accepted and rounded to a float)."""
    rows = model.example[:2]
    request = tensors(client, rows)
    for t in request["inputs"]:
        if t["name"] == "hour":
            t.update(datatype=datatype, data=[5, value])
    response = client.post(INFER, content=json.dumps(request).encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith(f"input 'hour', row {row}: {value} is outside the range of {datatype}"), error
    for t in request["inputs"]:
        if t["name"] == "hour":
            t["data"] = [5, 2**63 - 1 if datatype == "INT64" else 7]
    assert client.post(INFER, content=json.dumps(request).encode()).status_code == 200, "the bound itself is in range"


def test_tritonclient_infers_against_mlship_serve(model: ServingModel, tmp_path: Path) -> None:
    """The real client, with its default binary data both ways, against the real command on loopback."""
    httpclient = pytest.importorskip("tritonclient.http")
    proc, url = start_server(["--model", str(model.model_dir), "--prediction-log", str(tmp_path / "p.jsonl")], tmp_path)
    try:
        triton = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
        assert triton.is_server_ready() and triton.is_model_ready("card-fraud")
        meta = triton.get_model_metadata("card-fraud")
        rows = model.example
        inputs = []
        for spec in meta["inputs"]:
            values = [row[spec["name"]] for row in rows]
            dtype = {"BYTES": object, "FP64": np.float64, "INT64": np.int64}[spec["datatype"]]
            array = np.array(values, dtype=dtype)
            tensor = httpclient.InferInput(spec["name"], [len(rows)], spec["datatype"])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in ("label", "probabilities")]
        result = triton.infer("card-fraud", inputs, outputs=outputs)
        expected = httpx.post(url + "/predict", json={"records": rows}).json()
        assert result.as_numpy("label").tolist() == expected["predictions"]
        assert result.as_numpy("probabilities").tolist() == expected["probabilities"]
        plain = triton.infer("card-fraud", inputs)  # outputs not named: the client asks for all as binary
        assert plain.as_numpy("probabilities").tolist() == expected["probabilities"]
        triton.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
