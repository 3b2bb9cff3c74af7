"""Hostile files: caps on CSV headers and lines, wrong delimiters, truncation, and report text from data.

A file from outside decides the column names that reports echo, so every such name is made one
bounded line (mlship.report_text) and every cap refuses with one exit-2 line naming it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from mlship.batch.report import BatchSummary, PartStats
from mlship.batch.report import render_markdown as batch_markdown
from mlship.data.io import MAX_HEADER_BYTES, MAX_LINE_BYTES, LineCapped, read_table
from mlship.data.validation import ExpectationOutcome, ValidationReport, render_markdown, validate_frame, write_report
from mlship.errors import ConfigError
from mlship.report_text import MAX_TEXT, cell, code, one_line

EVIL = "evil\n| injected | row |\n# Pwned <img src=x>"


def test_report_text_is_one_bounded_line_and_cells_cannot_break_a_table() -> None:
    assert one_line("a\nb\r\tc\x1b") == "a\\nb\\r\\tc\\x1b"
    long = one_line("x" * 10_000)
    assert long.startswith("x" * MAX_TEXT) and long.endswith("… (10,000 characters)") and len(long) < MAX_TEXT + 30
    assert cell(EVIL) == "evil\\n\\| injected \\| row \\|\\n# Pwned &lt;img src=x&gt;"
    assert code("a`b\nc") == "`a'b\\nc`"


def _outcome(observed: list[str], sample: list[object]) -> ExpectationOutcome:
    return ExpectationOutcome(
        "expect_table_columns_to_match_set",
        None,
        "critical",
        False,
        {"column_set": ["a"]},
        observed=observed,
        sample=sample,
    )


def test_a_newline_in_a_column_name_cannot_inject_rows_into_validate_md() -> None:
    report = ValidationReport("in\n# x.csv", "suite.json", 3, 2, [_outcome(["a", EVIL], [EVIL])])
    md = render_markdown(report)
    table = [line for line in md.splitlines() if line.startswith("| expect_table_columns_to_match_set")]
    assert len(table) == 1 and table[0].endswith(" |")
    assert "unexpected: evil\\n\\| injected" in table[0]
    assert not any(line.startswith(("| injected", "# Pwned", "# x.csv")) for line in md.splitlines())
    assert "<img" not in md


def test_a_column_name_just_under_the_header_cap_gives_bounded_reports(tmp_path: Path) -> None:
    """A 200 KB column name passes the header cap; the reports keep ~200 characters of it, not 200 KB each."""
    name = "c" * 200_000
    df = pd.DataFrame({"a": [1, 2, 3], name: [1, 2, 3]})
    suite = {
        "name": "s",
        "expectations": [{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a"]}}],
    }
    report = validate_frame(df, suite, data="wide.csv", suite_name="s.json")
    js, md = write_report(report, tmp_path)
    assert not report.valid
    assert md.stat().st_size < 5_000 and js.stat().st_size < 5_000
    assert "(200,000 characters)" in md.read_text() and "(200,000 characters)" in js.read_text()


def test_batch_md_escapes_reasons_and_paths() -> None:
    stats = PartStats(rows=4, refused={f"{EVIL}: missing or not a finite number": 4})
    summary = BatchSummary(
        verdict="REFUSED: 4 rows",
        model_uri="m",
        input="in`\n# x",
        output="o",
        bad_rows_policy="refuse",
        parts=1,
        parts_scored=0,
        parts_skipped=0,
        parts_refused=["in"],
        stats=stats,
        seconds=1.0,
        scoring_seconds=1.0,
        rows_this_run=4,
        drift=None,
        drift_note="none",
    )
    md = batch_markdown(summary)
    assert "| evil\\n\\| injected \\| row \\|\\n# Pwned &lt;img src=x&gt;: missing or not a finite number | 4 |" in md
    assert "- input: `in'\\n# x` -> output: `o`" in md
    assert not any(line.startswith(("| injected", "# Pwned", "# x")) for line in md.splitlines())


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x" * (MAX_HEADER_BYTES + 1), r"the CSV header is longer than 256 KiB \(the cap on a header line\)"),
        (
            "a,b\n1,2\n3," + "4" * (MAX_LINE_BYTES + 1) + "\n5,6\n",
            r"line 3 is longer than 1 MiB \(the cap on a CSV line\)",
        ),
        ("a,b\n1,2\n" + "4" * (MAX_LINE_BYTES + 1), r"its last line is longer than 1 MiB \(the cap on a CSV line\)"),
        ("a;b;c\n1;2;3\n", r"looks semicolon-delimited: its header is one comma-separated column \(a;b;c\)"),
        ("a\tb\n1\t2\n", r"looks tab-delimited"),
        ("a,b,c\n1,2,3\n4,5", r"is truncated: its last line stops mid-row \(2 of 3 fields, no final newline\)"),
        ('a,b,c\n1,2,3\n4,5,"six', r"is truncated: its last line stops mid-row"),
    ],
    ids=["header cap", "line cap", "last line cap", "semicolon", "tab", "cut mid-row", "cut mid-quote"],
)
def test_hostile_csvs_are_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        read_table(_csv(tmp_path / "x.csv", text))
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1,2\n3,4",  # no final newline, but a whole last row
        'a,b\n1,"two\nlines"\n3,4\n',  # a quoted newline inside a row
        "a\n1\n2\n",  # one column, no other delimiter in sight
        "a,b\r\n1,2\r\n",  # CRLF
        "a,b",  # a header and nothing else
    ],
    ids=["no final newline", "quoted newline", "one column", "crlf", "header only"],
)
def test_sound_csvs_still_read(tmp_path: Path, text: str) -> None:
    df = read_table(_csv(tmp_path / "ok.csv", text))
    assert list(df.columns) in (["a", "b"], ["a"])


def test_the_line_cap_holds_across_read_boundaries_and_names_the_line() -> None:
    """pandas reads in blocks: a line split over many small reads is still measured whole."""
    body = b"a,b\n" + b"1,2\n" * 5 + b"9" * 1000 + b"\n1,2\n"
    capped = LineCapped(io.BytesIO(body), "t.csv", cap=999)
    with pytest.raises(ConfigError, match=r"t\.csv: line 7 is longer than"):
        while capped.read(7):
            pass
    with pytest.raises(ConfigError, match=r"t\.csv: line 7 is longer than"):
        LineCapped(io.BytesIO(body), "t.csv", cap=999).read()  # one block holding the whole line
    fine = LineCapped(io.BytesIO(body), "t.csv", cap=1000)
    assert b"".join(iter(lambda: fine.read(7), b"")) == body


def test_a_parquet_schema_over_the_header_cap_is_refused(tmp_path: Path) -> None:
    wide = pd.DataFrame({f"{i:06d}" + "n" * 1000: [1] for i in range(MAX_HEADER_BYTES // 1000 + 1)})
    wide.to_parquet(tmp_path / "wide.parquet")
    with pytest.raises(ConfigError, match=r"wide\.parquet: its column names take [\d,]+ bytes, over the 256 KiB cap"):
        read_table(tmp_path / "wide.parquet")
