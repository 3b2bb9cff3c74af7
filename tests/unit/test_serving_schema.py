"""The /predict body schema derived from a model signature: what it accepts and how it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlship.serving.model import Column
from mlship.serving.schema import InvalidRequest, build_schema

COLUMNS = [
    Column("country", "string"),
    Column("amount", "double"),
    Column("hour", "long"),
    Column("flagged", "boolean"),
]
ROW = {"country": "US", "amount": 12.5, "hour": 9, "flagged": False}


def parse(body: Any) -> list[dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return build_schema(COLUMNS).parse(raw)


def refusal(body: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse(body)
    return info.value.message


def test_the_three_body_shapes_give_the_same_rows() -> None:
    split = {"columns": list(ROW), "data": [list(ROW.values())]}
    expected = [{**ROW, "hour": 9.0}]
    assert parse({"records": [ROW]}) == expected
    assert parse({"dataframe_records": [ROW]}) == expected
    assert parse({"dataframe_split": split}) == expected


def test_numbers_accept_ints_and_floats_and_extra_fields_are_dropped() -> None:
    rows = parse({"records": [{**ROW, "amount": 3, "hour": 7.0, "transaction_id": "t-1"}]})
    assert rows == [{"country": "US", "amount": 3.0, "hour": 7.0, "flagged": False}]


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({**ROW, "amount": "12.5"}, "records.0.amount"),  # a string for a number
        ({**ROW, "amount": True}, "records.0.amount"),  # a boolean is not a number
        ({**ROW, "country": 7}, "records.0.country"),  # a number for a string
        ({k: v for k, v in ROW.items() if k != "hour"}, "records.0.hour"),  # missing
        ({**ROW, "flagged": "yes"}, "records.0.flagged"),
        ({**ROW, "amount": None}, "records.0.amount"),
    ],
)
def test_a_wrong_or_missing_field_is_named(row: dict[str, Any], named: str) -> None:
    assert refusal({"records": [row]}).startswith(named + ":")


def test_non_finite_numbers_are_refused() -> None:
    assert "finite" in refusal(b'{"records": [{"country": "US", "amount": NaN, "hour": 1, "flagged": false}]}')
    assert "finite" in refusal(b'{"records": [{"country": "US", "amount": 1e999, "hour": 1, "flagged": false}]}')


def test_the_second_bad_row_is_named_by_index() -> None:
    assert refusal({"records": [ROW, {**ROW, "hour": "noon"}]}).startswith("records.1.hour:")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "Invalid JSON"),
        ({}, "exactly one of"),
        ({"records": [ROW], "dataframe_records": [ROW]}, "got records, dataframe_records"),
        ({"records": []}, "at least 1"),
        ({"records": ROW}, "records:"),
        ([ROW], "body:"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: Any, says: str) -> None:
    assert says in refusal(body)


def test_dataframe_split_errors_name_the_row_and_column() -> None:
    split = {"columns": list(ROW), "data": [list(ROW.values()), ["US", "x", 1, False]]}
    assert refusal({"dataframe_split": split}).startswith("dataframe_split.data.1.amount:")
    short = {"columns": list(ROW), "data": [["US", 1.0]]}
    assert refusal({"dataframe_split": short}) == "dataframe_split.data.0: row has 2 values for 4 columns"
    missing = {"columns": ["country", "amount", "hour"], "data": [["US", 1.0, 2]]}
    assert refusal({"dataframe_split": missing}).startswith("dataframe_split.data.0.flagged:")


def test_error_entries_follow_fastapi_and_are_json() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"records": [{**ROW, "amount": "x"}]})
    entry = info.value.errors[0]
    assert entry["loc"] == ["body", "records", 0, "amount"]
    assert entry["type"] == "float_type"
    json.dumps(info.value.errors)


def test_openapi_body_lists_every_column_with_its_type() -> None:
    doc = build_schema(COLUMNS).openapi()
    record = doc["$defs"]["Record"]
    assert record["required"] == ["country", "amount", "hour", "flagged"]
    assert record["properties"]["amount"]["type"] == "number"
    assert record["properties"]["country"]["type"] == "string"
    assert record["properties"]["flagged"]["type"] == "boolean"
    assert set(doc["properties"]) == {"records", "dataframe_records", "dataframe_split"}


def test_unknown_signature_types_accept_anything() -> None:
    schema = build_schema([Column("when", "datetime")])
    assert schema.parse(b'{"records": [{"when": "2024-01-01"}]}') == [{"when": "2024-01-01"}]


FAST_CASES: list[Any] = [
    {"records": [ROW, {**ROW, "amount": 3, "hour": 7.0, "extra": [1, {"x": None}]}]},
    {"dataframe_records": [ROW] * 3},
    {"dataframe_split": {"columns": [*ROW, "id"], "data": [[*ROW.values(), "t-1"], ["MX", 1, 2.5, True, None]]}},
    {"dataframe_split": {"columns": ["amount", *ROW], "data": [["x", *ROW.values()]]}},  # the last "amount" counts
    {"records": [{**ROW, "amount": 2**64}]},  # beyond int64: a float, as pydantic makes it
    {"records": [ROW], "dataframe_records": None},
    {"records": [{**ROW, "amount": "1"}]},
    {"records": [{**ROW, "flagged": 1}]},
    {"records": [{**ROW, "country": None}]},
    {"records": [{**ROW, "hour": True}]},
    {"records": [ROW, "row"]},
    {"records": [{k: v for k, v in ROW.items() if k != "amount"}]},
    {"dataframe_split": {"columns": list(ROW), "data": [[*ROW.values(), [1]]]}},
    {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())[:3]]}},
    {"dataframe_split": {"columns": ["country"], "data": [["US"]]}},
]


@pytest.mark.parametrize("body", FAST_CASES)
def test_the_columnar_path_accepts_exactly_what_the_schema_accepts(body: Any) -> None:
    """The fast path (orjson, one check per column) never accepts what the pydantic schema refuses,
    and what it accepts it gives exactly as the schema would (numbers as float64 arrays)."""
    import numpy as np

    schema = build_schema(COLUMNS)
    raw = json.dumps(body).encode()
    fast = schema._fast(raw)
    try:
        rows = schema._parse_rows(raw)
    except InvalidRequest:
        assert fast is None, "the fast path accepted a body the schema refuses"
        return
    assert fast is not None, "a valid body takes the columnar path"
    assert list(fast.rows()) == rows
    assert fast.data["amount"].dtype == np.float64 and isinstance(fast.data["country"], list)
