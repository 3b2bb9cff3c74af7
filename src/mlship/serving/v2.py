"""The Open Inference Protocol (KServe "V2") beside `/predict`, for clients of KServe, MLServer and Triton.

`GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]` (metadata),
`.../ready` and `POST .../infer`. Inputs are one tensor per feature, named after it, with the
datatype the signature gives (FP64/FP32, INT64/INT32, BYTES, BOOL) and shape `[n]` or `[n, 1]`;
outputs are `label` (the predicted class) and `probabilities` (the positive class's probability,
shape `[n]`, for a binary model; `[n, k]` otherwise) — the numbers `/predict` gives, computed by
the same batcher, counted in the same metrics and sampled into the same prediction log.
Errors are the protocol's `{"error": "..."}`: 400 for a request that does not fit the model
(where `/predict` says 422), 404 for another model or version, 413 over the body limit, 503
while the model is not ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect

from mlship import __version__
from mlship.serving.batching import BatcherClosed
from mlship.serving.body import CLIENT_CLOSED, SYNTHETIC_HEADER, BodyTooLarge, read_body
from mlship.serving.v2_tensors import (
    DATATYPES,
    HEADER_LENGTH,
    LENGTH_PREFIX,
    NUMPY_DTYPES,
    OUTPUTS,
    InferenceRequest,
    V2Error,
    datatype,
    parse,
)

if TYPE_CHECKING:
    from mlship.serving.model import ServedModel
    from mlship.serving.state import ServerState

PLATFORM = "mlflow_sklearn"
EXTENSIONS = ["binary_tensor_data"]


def _label_datatype(classes: list[Any]) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def metadata(model: ServedModel) -> dict[str, Any]:
    """`$metadata_model_response`: variable batch dimension -1, one tensor per feature."""
    classes = model.classes
    proba_shape = [-1] if len(classes) == 2 else [-1, len(classes)]
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [{"name": c.name, "datatype": datatype(c), "shape": [-1]} for c in model.columns],
        "outputs": [
            {"name": "label", "datatype": _label_datatype(classes), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": proba_shape},
        ],
    }


def response(request: InferenceRequest, model: ServedModel, labels: Any, probabilities: Any) -> Response:
    """`$inference_response`: the requested outputs (all by default), data flattened row-major;
    outputs asked for as binary data follow the JSON header as raw little-endian bytes."""
    n = len(labels)
    classes = model.classes
    label_type = _label_datatype(classes)
    proba = np.asarray(probabilities, dtype=np.float64)
    tensors: dict[str, dict[str, Any]] = {
        "label": {"name": "label", "datatype": label_type, "shape": [n], "data": labels},
        "probabilities": {
            "name": "probabilities",
            "datatype": "FP64",
            "shape": [n] if len(classes) == 2 else [n, len(classes)],
            "data": proba.ravel(),
        },
    }
    default = (request.parameters or {}).get("binary_data_output") is True
    wanted = {o.name: (o.parameters or {}).get("binary_data", default) for o in request.outputs or []}
    if not request.outputs:
        wanted = dict.fromkeys(OUTPUTS, default)
    outputs, chunks = [], []
    for name, binary in wanted.items():
        tensor = tensors[name]
        if binary is True:
            chunk = _to_binary(tensor["datatype"], tensor["data"])
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, 200, media_type="application/json")
    return Response(
        header + b"".join(chunks),
        200,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _to_binary(dtype: str, data: Any) -> bytes:
    if dtype == "BYTES":
        parts = []
        for value in data:
            encoded = str(value).encode("utf-8")
            parts += [LENGTH_PREFIX.pack(len(encoded)), encoded]
        return b"".join(parts)
    return np.asarray(data).astype(NUMPY_DTYPES[dtype], copy=False).tobytes()


def _error(message: str, status: int = 400) -> Response:
    return Response(orjson.dumps({"error": message}), status, media_type="application/json")


def _ok(payload: Any) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), 200, media_type="application/json")


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Register the V2 endpoints on the server's app (they share its state, batcher and metrics)."""
    limit = state.settings.serve.max_body_bytes
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": 'The request does not fit the model: `{"error": "..."}`.'},
        404: {"description": "No such model or version on this server."},
        503: {"description": "The model is not loaded and warmed yet."},
    }

    def served(name: str, version: str | None) -> ServedModel:
        model = state.model
        if not state.ready or model is None:
            raise V2Error(state.failure or "the model is not ready yet", 503)
        if name != model.name:
            raise V2Error(f"unknown model {name!r}; this server serves {model.name!r}", 404)
        if version is not None and version != model.version:
            raise V2Error(f"unknown version {version!r} of {name!r}; this server serves version {model.version}", 404)
        return model

    @app.get("/v2", summary="V2 server metadata.", tags=["v2"])
    async def server_metadata() -> Response:
        return _ok({"name": "mlship", "version": __version__, "extensions": EXTENSIONS})

    @app.get("/v2/health/live", summary="V2 server live: 200 while the process is up.", tags=["v2"])
    async def live() -> Response:
        return _ok({"live": True})

    @app.get("/v2/health/ready", summary="V2 server ready: 200 once the model is warmed, else 503.", tags=["v2"])
    async def ready() -> Response:
        if state.ready:
            return _ok({"ready": True})
        return Response(orjson.dumps({"ready": False}), 503, media_type="application/json")

    async def model_metadata(name: str, version: str | None) -> Response:
        try:
            return _ok(metadata(served(name, version)))
        except V2Error as exc:
            return _error(exc.message, exc.status)

    async def model_ready(name: str, version: str | None) -> Response:
        try:
            served(name, version)
        except V2Error as exc:
            if exc.status == 503:
                return Response(orjson.dumps({"name": name, "ready": False}), 503, media_type="application/json")
            return _error(exc.message, exc.status)
        return _ok({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        try:
            model = served(name, version)
        except V2Error as exc:
            return _error(exc.message, exc.status)
        batcher, schema = state.batcher, state.schema
        if batcher is None or schema is None:  # pragma: no cover - ready implies both
            return _error("the model is not ready yet", 503)
        batcher.arriving += 1
        try:
            raw = await read_body(request, limit)
        except BodyTooLarge:
            return _error(f"request body is larger than {limit} bytes", 413)
        except ClientDisconnect:
            return _error("the client closed the connection before its body arrived", CLIENT_CLOSED)
        finally:
            batcher.arriving -= 1
        try:
            parsed, rows = parse(raw, model, schema, request.headers.get(HEADER_LENGTH))
            if SYNTHETIC_HEADER in request.headers:
                rows = rows.not_logged()
            labels, probabilities = await batcher.predict(rows)
        except V2Error as exc:
            return _error(exc.message, exc.status)
        except BatcherClosed:
            return _error("the server is shutting down", 503)
        except Exception as exc:  # noqa: BLE001 - a model error is this request's 500, not the server's end
            state.access.write({"event": "prediction_failed", "error": f"{type(exc).__name__}: {exc}"})
            return _error(f"prediction failed: {type(exc).__name__}", 500)
        return response(parsed, model, labels, probabilities)

    meta = {"summary": "V2 model metadata: inputs from the signature, outputs.", "tags": ["v2"], "responses": errors}
    ready_doc = {"summary": "V2 model ready.", "tags": ["v2"], "responses": errors}
    infer_doc = {
        "summary": "V2 inference: one tensor per feature; outputs label and probabilities.",
        "tags": ["v2"],
        "responses": {**errors, 413: {"description": f"Body larger than serve.max_body_bytes ({limit} bytes)."}},
    }

    @app.get("/v2/models/{name}", **meta)  # type: ignore[arg-type]
    async def metadata_any(name: str) -> Response:
        return await model_metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", **meta)  # type: ignore[arg-type]
    async def metadata_version(name: str, version: str) -> Response:
        return await model_metadata(name, version)

    @app.get("/v2/models/{name}/ready", **ready_doc)  # type: ignore[arg-type]
    async def ready_any(name: str) -> Response:
        return await model_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", **ready_doc)  # type: ignore[arg-type]
    async def ready_version(name: str, version: str) -> Response:
        return await model_ready(name, version)

    @app.post("/v2/models/{name}/infer", **infer_doc)  # type: ignore[arg-type]
    async def infer_any(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", **infer_doc)  # type: ignore[arg-type]
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)


INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


def document(doc: dict[str, Any], model: ServedModel) -> None:
    """Give the infer operations their request body (the protocol's request, names and datatypes from
    the model) and name the served model and version in the path parameters, so a client generated
    from the document, or a fuzzer, reaches the model rather than a 404."""
    request_input = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": [c.name for c in model.columns]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": {"type": "object"},
            "data": {
                "type": "array",
                "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
            },
        },
    }
    body = {
        "type": "object",
        "title": "inference_request",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/v2_request_input"}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    }
    doc.setdefault("components", {}).setdefault("schemas", {}).update(
        {"v2_request_input": request_input, "v2_inference_request": body}
    )
    for path in INFER_PATHS:
        doc["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/v2_inference_request"}}},
        }
    served = {"name": model.name, "version": model.version}
    for path, operations in doc["paths"].items():
        if not path.startswith("/v2/models/"):
            continue
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "path" and param.get("name") in served:
                    param["schema"] = {**param.get("schema", {}), "enum": [served[param["name"]]]}


def endpoint_label(path: str) -> str | None:
    """The metrics label of a V2 path (the model name and version templated), or None for another path."""
    if not path.startswith("/v2"):
        return None
    parts = path.split("/")
    if path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        return path
    if len(parts) >= 4 and parts[2] == "models":
        rest = parts[4:]
        if rest[:1] == ["versions"] and len(rest) >= 2:
            rest = ["versions", "{version}", *rest[2:]]
        tail = "/".join(rest)
        label = "/v2/models/{name}" + (f"/{tail}" if tail else "")
        if label in _LABELS:
            return label
    return None


_LABELS = frozenset(
    {
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/infer",
    }
)
