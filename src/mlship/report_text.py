"""Text from the data (column names, cell values) made safe for one report line or markdown cell.

A column name is whatever the file's header says: a CSV header can hold a newline, a `|`, HTML,
or megabytes. Reports and console tables echo it, so every such string goes through here:
control characters become visible escapes (a newline cannot end a table row or a log line),
and its length is bounded (a 16 MB header must not become a 16 MB report).
"""

from __future__ import annotations

import re

MAX_TEXT = 200
"""Characters of one data-derived string kept in a report (the rest is counted, not shown)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(text: object, limit: int = MAX_TEXT) -> str:
    """`text` on one line (control characters escaped: `\\n`, `\\x1b`) and at most about `limit` characters."""
    raw = str(text)
    short = raw if len(raw) <= limit else raw[:limit]
    escaped = _CONTROL.sub(_escape, short)
    if len(raw) > limit:
        escaped += f"… ({len(raw):,} characters)"
    return escaped


def cell(value: object, limit: int = MAX_TEXT) -> str:
    """A markdown table cell: one line, bounded, with `|` and HTML markup escaped."""
    text = one_line(value, limit)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def code(value: object, limit: int = MAX_TEXT) -> str:
    """Inline code (a path, a URI): one line, bounded, backticks replaced so the span cannot end early."""
    return "`" + one_line(value, limit).replace("`", "'") + "`"


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(char, f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
