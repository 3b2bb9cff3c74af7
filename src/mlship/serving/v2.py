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

import math
import struct
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import ClientDisconnect

from mlship import __version__
from mlship.serving.columns import Columns

if TYPE_CHECKING:
    from mlship.serving.app import ServerState
    from mlship.serving.model import Column, ServedModel
    from mlship.serving.schema import RequestSchema

PLATFORM = "mlflow_sklearn"
OUTPUTS = ("label", "probabilities")

_DATATYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "string": "BYTES",
    "boolean": "BOOL",
}
_INTEGERS = {f"{sign}INT{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)}
_NUMERIC = _INTEGERS | {"FP16", "FP32", "FP64"}
_ACCEPTS = {"number": _NUMERIC, "string": {"BYTES"}, "boolean": {"BOOL"}}
DATATYPES = sorted(_NUMERIC | {"BYTES", "BOOL"})


class V2Error(Exception):
    """A request the protocol answers with `{"error": message}` and this status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None
    """Absent when the tensor comes as binary data (`parameters.binary_data_size`)."""


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", title="inference_request")
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


def datatype(column: Column) -> str:
    """The tensor datatype of a signature column (anything unusual travels as BYTES)."""
    return _DATATYPE.get(column.mlflow_type, "BYTES")


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


HEADER_LENGTH = "inference-header-content-length"
"""The binary tensor data extension's header: the JSON part's length; tensor bytes follow it."""
EXTENSIONS = ["binary_tensor_data"]

# Binary tensor data extension (KServe's and Triton's "Binary Tensor Data Extension" document):
# tensor data is little-endian, row-major, without padding; BOOL is one byte (0 or 1); a BYTES
# element is a 4-byte little-endian unsigned length followed by that many bytes. An input
# carries `binary_data_size` (bytes) in its parameters instead of `data`, the bytes follow the
# JSON header in the order of the inputs, and the header's length is the
# `Inference-Header-Content-Length` HTTP header. Outputs are returned as binary when the
# output asks for it (`binary_data: true`) or the request does (`binary_data_output: true`).
_NUMPY = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "<i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "<u1",
    "BOOL": "<u1",
}
_RANGES = {
    f"{sign}INT{bits}": ((0, 2**bits - 1) if sign else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    for sign in ("", "U")
    for bits in (8, 16, 32, 64)
}
_NUMBER_TYPES = {int, float}


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data after it (empty without the extension's header)."""
    if header_length is None:
        return raw, memoryview(b"")
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > len(raw):
        raise V2Error(
            f"Inference-Header-Content-Length {header_length[:40]!r} is not the length of the JSON header "
            f"(a number of bytes at most the body's {len(raw)})"
        )
    n = int(value)
    return raw[:n], memoryview(raw)[n:]


def parse(
    raw: bytes, model: ServedModel, schema: RequestSchema, header_length: str | None = None
) -> tuple[InferenceRequest, Columns]:
    """Request bytes → the request and its columns (the signature's), or V2Error.

    Tensors given as JSON are checked column by column (types, integers' range and
    fractions, finiteness); tensors given as binary data go straight into numpy.
    """
    header, binary = split_body(raw, header_length)
    try:
        request = InferenceRequest.model_validate_json(header)
    except PydanticValidationError as exc:
        err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        hint = ""
        if header_length is None and err["type"] == "json_invalid" and "trailing" in err["msg"]:
            hint = " (binary tensor data after the JSON needs the Inference-Header-Content-Length header)"
        raise V2Error(f"{where}: {err['msg']}{hint}") from None
    columns = {c.name: c for c in model.columns}
    seen: dict[str, Any] = {}
    from_json: dict[str, list[Any]] = {}
    rows_n: int | None = None
    offset = 0
    for tensor in request.inputs:
        column = columns.get(tensor.name)
        if column is None:
            raise V2Error(f"unknown input {tensor.name!r}; the model's inputs: {', '.join(columns)}")
        if tensor.name in seen:
            raise V2Error(f"input {tensor.name!r} is given twice")
        n = _rows_of(tensor)
        if rows_n is not None and n != rows_n:
            raise V2Error(f"input {tensor.name!r} has {n} rows, the others {rows_n}")
        rows_n = n
        allowed = _ACCEPTS.get(column.kind)
        if allowed is not None and tensor.datatype not in allowed:
            want = datatype(column)
            raise V2Error(f"input {tensor.name!r} has datatype {tensor.datatype}; the model takes {want}")
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise V2Error(f"input {tensor.name!r}: binary_data_size must be a number of bytes, not {size!r}")
            if tensor.data is not None:
                raise V2Error(f"input {tensor.name!r} has both data and binary_data_size; give one")
            chunk = binary[offset : offset + size]
            if len(chunk) < size:
                raise V2Error(
                    f"input {tensor.name!r}: binary_data_size is {size} but {len(binary) - offset} bytes of binary "
                    "data are left (is Inference-Header-Content-Length the JSON header's length?)"
                )
            offset += size
            seen[tensor.name] = _from_binary(tensor, column, chunk, n)
            continue
        if tensor.data is None:
            raise V2Error(
                f"input {tensor.name!r} has no data: give data, or binary_data_size with the binary tensor extension"
            )
        values = _flatten(tensor.data)
        if len(values) != n:
            raise V2Error(f"input {tensor.name!r}: shape {tensor.shape} needs {n} values, data has {len(values)}")
        if tensor.datatype in _INTEGERS:
            _check_integers(tensor, values)
        from_json[tensor.name] = values
        seen[tensor.name] = _json_column(column, values)
    if offset != len(binary):
        raise V2Error(
            f"the body has {len(binary)} bytes of binary data; the inputs' binary_data_size add up to {offset}"
        )
    missing = [name for name in columns if name not in seen]
    if missing:
        raise V2Error(f"missing input(s) {', '.join(missing)}: one tensor per feature of the model")
    if not rows_n:
        raise V2Error("the inputs hold no rows")
    for out in request.outputs or []:
        if out.name not in OUTPUTS:
            raise V2Error(f"unknown output {out.name!r}; the model's outputs: {', '.join(OUTPUTS)}")
    if any(value is None for value in seen.values()):
        # a value the columnar check did not accept: the schema's own validation names it
        lists = {name: from_json.get(name) or list(_plain_list(values)) for name, values in seen.items()}
        records = [{name: values[i] for name, values in lists.items()} for i in range(rows_n)]
        _validated(records, schema)
        raise V2Error("the inputs do not fit the model's signature")  # pragma: no cover - _validated raised
    return request, Columns(rows_n, {c.name: seen[c.name] for c in model.columns})


def _plain_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _check_integers(tensor: RequestInput, values: list[Any]) -> None:
    """An integer tensor holds whole numbers within its datatype's range (JSON has no such limit)."""
    if any(_fractional(v) for v in values):
        raise V2Error(f"input {tensor.name!r} is {tensor.datatype} but holds a number with a fraction")
    lo, hi = _RANGES[tensor.datatype]
    if not values:
        return
    try:
        inside = lo <= min(values) and max(values) <= hi  # exact: Python compares int and float exactly
    except TypeError:  # a value that is not a number: the type check names it
        return
    if not inside:
        row, value = next((i, v) for i, v in enumerate(values) if type(v) in _NUMBER_TYPES and not lo <= v <= hi)
        raise V2Error(
            f"input {tensor.name!r}, row {row}: {value} is outside the range of {tensor.datatype} [{lo}, {hi}]"
        )


def _json_column(column: Column, values: list[Any]) -> Any:
    """A JSON tensor's values as the model's column, or None when one needs the schema's closer look."""
    types = set(map(type, values))
    if column.kind == "number":
        if not types <= _NUMBER_TYPES:
            return None
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        return array if bool(np.isfinite(array).all()) else None
    if column.kind == "string":
        return values if types <= {str} else None
    if column.kind == "boolean":
        return values if types <= {bool} else None
    return values


def _from_binary(tensor: RequestInput, column: Column, chunk: memoryview, n: int) -> Any:
    """Little-endian tensor bytes → the model's column (numbers straight into a float64 array)."""
    name, dtype = tensor.name, tensor.datatype
    if dtype == "BYTES":
        return _bytes_elements(name, chunk, n)
    code = _NUMPY.get(dtype)
    if code is None:
        raise V2Error(f"input {name!r}: datatype {dtype} is not one of {', '.join(DATATYPES)}")
    width = np.dtype(code).itemsize
    if len(chunk) != n * width:
        raise V2Error(f"input {name!r}: {n} {dtype} values take {n * width} bytes, binary_data_size is {len(chunk)}")
    array = np.frombuffer(chunk, dtype=code)
    if dtype == "BOOL":
        if n and int(array.max()) > 1:
            raise V2Error(f"input {name!r}, row {int(np.argmax(array > 1))}: a BOOL byte is 0 or 1")
        return array.astype(bool).tolist()
    if column.kind != "number":
        return array.tolist()
    numbers = array if array.dtype == np.float64 else array.astype(np.float64)
    finite = np.isfinite(numbers)
    if not finite.all():
        raise V2Error(f"input {name!r}, row {int(np.argmin(finite))}: Input should be a finite number")
    return numbers


def _bytes_elements(name: str, chunk: memoryview, n: int) -> list[str]:
    """BYTES tensor data (each element a 4-byte little-endian length, then the bytes) as UTF-8 text."""
    data = chunk.tobytes()
    unpack = _LENGTH.unpack_from
    out: list[str] = []
    pos, end = 0, len(data)
    for row in range(n):
        if pos + 4 > end:
            raise V2Error(f"input {name!r}, row {row}: BYTES data ends before the element's 4-byte length")
        (length,) = unpack(data, pos)
        pos += 4
        if pos + length > end:
            raise V2Error(f"input {name!r}, row {row}: BYTES element of {length} bytes runs past binary_data_size")
        try:
            out.append(data[pos : pos + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise V2Error(f"input {name!r}, row {row}: BYTES element is not UTF-8 text") from None
        pos += length
    if pos != end:
        raise V2Error(f"input {name!r}: {end - pos} bytes after its {n} BYTES elements")
    return out


_LENGTH = struct.Struct("<I")


def _rows_of(tensor: RequestInput) -> int:
    """Shape `[n]` or `[n, 1]`: one value per row of one feature."""
    if len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1):
        return tensor.shape[0]
    raise V2Error(f"input {tensor.name!r} has shape {tensor.shape}; a feature tensor is [n] or [n, 1]")


def _flatten(data: list[Any]) -> list[Any]:
    """Tensor data may be flat (row-major) or nested; rows of `[n, 1]` come as `[[x], [y]]` too."""
    if not any(type(item) is list for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _fractional(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and not value.is_integer()


def _validated(records: list[dict[str, Any]], schema: RequestSchema) -> list[dict[str, Any]]:
    """The same per-value validation `/predict` applies (the server's schema, from the model signature)."""
    try:
        return schema.rows.validate_python(records)
    except PydanticValidationError as exc:
        err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        loc = list(err["loc"])
        if len(loc) >= 2:
            raise V2Error(f"input {loc[1]!r}, row {loc[0]}: {err['msg']}") from None
        raise V2Error(f"row {loc[0] if loc else '?'}: {err['msg']}") from None


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
            parts += [_LENGTH.pack(len(encoded)), encoded]
        return b"".join(parts)
    return np.asarray(data).astype(_NUMPY[dtype], copy=False).tobytes()


def _error(message: str, status: int = 400) -> Response:
    return Response(orjson.dumps({"error": message}), status, media_type="application/json")


def _ok(payload: Any) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), 200, media_type="application/json")


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Register the V2 endpoints on the server's app (they share its state, batcher and metrics)."""
    from mlship.serving.app import CLIENT_CLOSED, SYNTHETIC_HEADER, BodyTooLarge, _read_body
    from mlship.serving.batching import BatcherClosed

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
            raw = await _read_body(request, limit)
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
