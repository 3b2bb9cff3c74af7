"""The `/predict` request schema, derived from the model's MLflow signature.

Three body shapes are accepted, so clients of `mlflow models serve` switch unchanged:
`{"records": [...]}`, `{"dataframe_records": [...]}` and
`{"dataframe_split": {"columns": [...], "data": [[...]]}}`. Numeric columns take JSON
integers or finite floats, string columns take strings, booleans take booleans; a missing
or wrongly typed field is a 422 whose message names it. Unknown extra fields are ignored
(an id column sent along does no harm).

The hot path (`parse_columns`) parses the body once with orjson and checks it column by
column (the set of value types a column holds, then one numpy array per numeric column),
making no per-row object. Anything it does not accept as valid — a wrong type, a missing
field, a malformed body, a number JSON cannot hold — is handed to the pydantic model of
the same schema, which raises the error naming the record and field: the fast path decides
only what is valid, so it can never be more lenient than the schema, and the errors are
the schema's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from mlship.serving.columns import Columns

if TYPE_CHECKING:
    from mlship.serving.model import Column

SHAPES = ("records", "dataframe_records", "dataframe_split")
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Cell = StrictStr | StrictInt | StrictFloat | StrictBool | None
_TYPED_DICT: Any = TypedDict  # called with a runtime field mapping: a dynamic type mypy cannot follow
_LIST: Any = list


class InvalidRequest(Exception):
    """A body that does not fit the schema: FastAPI-style error entries, the first one named."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(self.message)

    @property
    def message(self) -> str:
        first = self.errors[0] if self.errors else {"loc": ["body"], "msg": "invalid request"}
        return f"{_dotted(list(first['loc']))}: {first['msg']}"


@dataclass(frozen=True)
class RequestSchema:
    """Validators for one model's input, and the JSON schema the OpenAPI document shows."""

    columns: list[Column]
    body: type[BaseModel]
    rows: TypeAdapter[list[dict[str, Any]]]

    def parse(self, raw: bytes) -> list[dict[str, Any]]:
        """Request bytes → validated rows (dicts of the signature's columns only)."""
        return list(self.parse_columns(raw).rows())

    def parse_columns(self, raw: bytes) -> Columns:
        """Request bytes → validated columns, or InvalidRequest naming the record and field."""
        fast = self._fast(raw)
        if fast is not None:
            return fast
        return self.columns_of(self._parse_rows(raw))

    def columns_of(self, rows: list[dict[str, Any]]) -> Columns:
        """Validated rows → columns (numbers as one float64 array each)."""
        data: dict[str, Any] = {}
        for col in self.columns:
            values = [row[col.name] for row in rows]
            data[col.name] = np.asarray(values, dtype=np.float64) if col.kind == "number" else values
        return Columns(len(rows), data)

    def _fast(self, raw: bytes) -> Columns | None:
        """The columns when the body is valid as it stands, else None (the schema then says why)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(body) is not dict:
            return None
        given = [name for name in SHAPES if body.get(name) is not None]
        if len(given) != 1:
            return None
        value = body[given[0]]
        if given[0] == "dataframe_split":
            return self._fast_split(value)
        if type(value) is not list or not value or not all(type(r) is dict for r in value):
            return None
        data: dict[str, Any] = {}
        try:
            for col in self.columns:
                column = _fast_column(col.kind, list(map(itemgetter(col.name), value)))
                if column is None:
                    return None
                data[col.name] = column
        except KeyError:
            return None
        return Columns(len(value), data)

    def _fast_split(self, split: Any) -> Columns | None:
        if type(split) is not dict:
            return None
        names, data = split.get("columns"), split.get("data")
        if type(names) is not list or not names or not all(type(n) is str for n in names):
            return None
        if type(data) is not list or not data or not all(type(r) is list and len(r) == len(names) for r in data):
            return None
        if not {type(cell) for row in data for cell in row} <= _CELL_TYPES:
            return None
        where = {name: i for i, name in enumerate(names)}  # a repeated column: the last one, as dict(zip) does
        out: dict[str, Any] = {}
        for col in self.columns:
            i = where.get(col.name)
            if i is None:
                return None
            column = _fast_column(col.kind, list(map(itemgetter(i), data)))
            if column is None:
                return None
            out[col.name] = column
        return Columns(len(data), out)

    def _parse_rows(self, raw: bytes) -> list[dict[str, Any]]:
        try:
            request = self.body.model_validate_json(raw)
        except PydanticValidationError as exc:
            raise InvalidRequest(_errors(exc, prefix=("body",))) from None
        given = [name for name in SHAPES if getattr(request, name) is not None]
        if len(given) != 1:
            msg = "give exactly one of " + ", ".join(SHAPES) + (f" (got {', '.join(given)})" if given else "")
            raise InvalidRequest([{"loc": ["body"], "msg": msg, "type": "value_error"}])
        value: Any = getattr(request, given[0])
        if given[0] == "dataframe_split":
            return self._split_rows(value)
        rows: list[dict[str, Any]] = value
        return rows

    def _split_rows(self, split: Any) -> list[dict[str, Any]]:
        columns: list[str] = split.columns
        for i, row in enumerate(split.data):
            if len(row) != len(columns):
                loc = ["body", "dataframe_split", "data", i]
                msg = f"row has {len(row)} values for {len(columns)} columns"
                raise InvalidRequest([{"loc": loc, "msg": msg, "type": "value_error"}])
        records = [dict(zip(columns, row, strict=True)) for row in split.data]
        try:
            return self.rows.validate_python(records)
        except PydanticValidationError as exc:
            raise InvalidRequest(_errors(exc, prefix=("body", "dataframe_split", "data"))) from None

    def openapi(self) -> dict[str, Any]:
        """The request body's JSON schema, its definitions under OpenAPI's components."""
        return self.body.model_json_schema(ref_template="#/components/schemas/{model}")


_CELL_TYPES = {str, int, float, bool, type(None)}
_NUMBER_TYPES = {int, float}


def _fast_column(kind: str, values: list[Any]) -> Any:
    """One column's values as the schema would accept them, or None when any value needs a closer look."""
    types = set(map(type, values))
    if kind == "number":
        if not types <= _NUMBER_TYPES:
            return None
        array = np.array(values, dtype=np.float64)
        return array if bool(np.isfinite(array).all()) else None
    if kind == "string":
        return values if types <= {str} else None
    if kind == "boolean":
        return values if types <= {bool} else None
    return values


def build_schema(columns: list[Column]) -> RequestSchema:
    """One TypedDict per model (fast to validate, no model instances) wrapped in the body model."""
    fields = {c.name: Annotated[_python_type(c.kind), Field(description=c.mlflow_type)] for c in columns}
    record: Any = _TYPED_DICT("Record", fields)
    record.__pydantic_config__ = ConfigDict(extra="ignore")
    rows_type: Any = Annotated[_LIST[record], Field(min_length=1)]

    class DataframeSplit(BaseModel):
        model_config = ConfigDict(extra="ignore")
        columns: Annotated[list[StrictStr], Field(min_length=1)]
        data: Annotated[list[list[Cell]], Field(min_length=1)]

    class PredictRequest(BaseModel):
        """Exactly one of the three shapes."""

        model_config = ConfigDict(extra="ignore", title="PredictRequest")
        records: rows_type | None = None
        dataframe_records: rows_type | None = None
        dataframe_split: DataframeSplit | None = None

    rows: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(_LIST[record])
    return RequestSchema(columns=columns, body=PredictRequest, rows=rows)


def _python_type(kind: str) -> Any:
    if kind == "number":
        return Number
    if kind == "string":
        return StrictStr
    if kind == "boolean":
        return StrictBool
    return Any


def _errors(exc: PydanticValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = list(err["loc"])
        if err["type"] == "json_invalid":
            loc = []
        out.append({"loc": [*prefix, *loc], "msg": err["msg"], "type": err["type"]})
    return out


def _dotted(loc: list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:] or ["body"]
    return ".".join(parts)
