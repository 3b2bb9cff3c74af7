"""V2 (Open Inference Protocol) request bytes → the model's input columns, or a V2Error naming the problem.

The JSON header is validated by pydantic models of the protocol's request; each input tensor
is one feature, `[n]` or `[n, 1]`, of a datatype the signature's column accepts. Tensors given
as JSON are checked column by column (types, integers' range and fractions, finiteness);
tensors given as binary data (the binary tensor data extension) go straight into numpy.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from pydantic import ValidationError as PydanticValidationError

from mlship.serving.columns import Columns

if TYPE_CHECKING:
    from mlship.serving.model import Column, ServedModel
    from mlship.serving.schema import RequestSchema

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


def datatype(column: Column) -> str:
    """The tensor datatype of a signature column (anything unusual travels as BYTES)."""
    return _DATATYPE.get(column.mlflow_type, "BYTES")


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


HEADER_LENGTH = "inference-header-content-length"
"""The binary tensor data extension's header: the JSON part's length; tensor bytes follow it."""

# Binary tensor data extension (KServe's and Triton's "Binary Tensor Data Extension" document):
# tensor data is little-endian, row-major, without padding; BOOL is one byte (0 or 1); a BYTES
# element is a 4-byte little-endian unsigned length followed by that many bytes. An input
# carries `binary_data_size` (bytes) in its parameters instead of `data`, the bytes follow the
# JSON header in the order of the inputs, and the header's length is the
# `Inference-Header-Content-Length` HTTP header. Outputs are returned as binary when the
# output asks for it (`binary_data: true`) or the request does (`binary_data_output: true`).
NUMPY_DTYPES = {
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
    code = NUMPY_DTYPES.get(dtype)
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
    unpack = LENGTH_PREFIX.unpack_from
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


LENGTH_PREFIX = struct.Struct("<I")


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
