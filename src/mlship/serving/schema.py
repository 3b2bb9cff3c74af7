"""The `/predict` request schema, derived from the model's MLflow signature.

Three body shapes are accepted, so clients of `mlflow models serve` switch unchanged:
`{"records": [...]}`, `{"dataframe_records": [...]}` and
`{"dataframe_split": {"columns": [...], "data": [[...]]}}`. Numeric columns take JSON
integers or finite floats, string columns take strings, booleans take booleans; a missing
or wrongly typed field is a 422 whose message names it. Unknown extra fields are ignored
(an id column sent along does no harm). Validation runs in pydantic's compiled core,
straight from the request bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

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
