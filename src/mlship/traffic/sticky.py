"""Sticky routing keys: one key always lands on one color while the weights stay the same.

A route's `sticky` spec names where a request's key is (`header:NAME` or `field:NAME`, a field
of the first /predict record). The key is hashed (sha256) to a stable bucket 0..9999 that the
router lays out over the colors, and to a short id the color's access log records instead of
the raw key. The router picks colors by it; the deploy controller checks a spec with it.
"""

from __future__ import annotations

import hashlib

import orjson

KEY_HASH_HEADER = "x-mlship-key-hash"
"""The sticky key's hash, forwarded to the color so its access log can record it (never the raw key)."""
BUCKETS = 10_000
"""Buckets a key hashes to (0..9999): a split's weights are laid out over them."""


def key_hash(key: str) -> str:
    """A stable, non-reversible id of a routing key (16 hex digits of sha256)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def key_bucket(key: str) -> int:
    """The key's stable bucket in 0..9999 (sha256, so the same on every machine and run)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % BUCKETS


def parse_sticky(spec: str | None) -> tuple[str, str] | None:
    """`header:X-User-Id` → ("header", "x-user-id"); `field:customer_id` → ("field", "customer_id")."""
    if not spec:
        return None
    kind, sep, name = spec.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in ("header", "field") or not name:
        raise ValueError(f"sticky key {spec!r} is not header:NAME or field:NAME")
    return kind, name.lower() if kind == "header" else name


def body_field(body: bytes, name: str) -> str | None:
    """The value of `name` in the first record of a /predict body ({"records": [...]}, or one record)."""
    try:
        raw = orjson.loads(body)
    except ValueError:
        return None
    record = raw
    if isinstance(raw, dict) and isinstance(raw.get("records"), list):
        record = raw["records"][0] if raw["records"] else None
    if not isinstance(record, dict) or record.get(name) is None:
        return None
    return str(record[name])
