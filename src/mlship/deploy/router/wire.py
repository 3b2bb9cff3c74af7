"""HTTP/1.1 on the wire for the router: its own answers, reading heads, relaying a color's response.

Error bodies say what is wrong, never how (no addresses, no exception text).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

Pool = dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]]
"""One client connection's kept-alive connections to the colors, by color."""

LINGER_S = 1.0
LINGER_BYTES = 1 << 20

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class BackendError(Exception):
    """The color could not be reached or answered garbage."""


class ClientError(Exception):
    """The client sent something the router refuses: answered with `status` and closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def detail_body(text: str) -> bytes:
    """The JSON body of one of the router's own answers: `{"detail": text}`."""
    return json.dumps({"detail": text}).encode()


def simple_response(status: int, body: bytes, *, close: bool = False, extra: str = "") -> bytes:
    """A whole JSON response with a content-length; `extra` holds more header lines (each ending in CRLF)."""
    connection = "connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{connection}{extra}\r\n"
    ).encode() + body


def header_fields(head: bytes, *, lower_values: bool = True) -> dict[bytes, bytes]:
    """A head's fields by lower-cased name (the last of a repeated name), values stripped."""
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip().lower() if lower_values else value.strip()
    return out


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One head up to CRLF CRLF; None at a clean EOF, ValueError past the reader's limit."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("header too large") from None
    return head


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close after an early answer without a reset: stop writing, then read and drop what the
    client still sends (bounded in time and bytes; nothing is kept), so it reads the answer."""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + LINGER_S
        dropped = 0
        while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            dropped += len(chunk)


def drop(pool: Pool, color: str) -> None:
    """Close and forget the pooled connection to `color`, if there is one."""
    conn = pool.pop(color, None)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn[1].close()


async def _relay_chunked(reader: asyncio.StreamReader) -> bytes:
    """A color's chunked response, framing kept as sent (the client de-chunks it)."""
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            trailer = b""
            while True:
                t = await reader.readuntil(b"\r\n")
                trailer += t
                if t == b"\r\n":
                    break
            parts.append(line + trailer)
            return b"".join(parts)
        parts.append(line + await reader.readexactly(size + 2))


async def read_response(reader: asyncio.StreamReader, request_head: bytes) -> tuple[int, bytes, bool]:
    """One backend response: (status, raw bytes to relay, can the connection be reused?)."""
    head = await read_head(reader)
    if head is None:
        raise BackendError("closed the connection")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BackendError("sent a malformed status line") from None
    headers = header_fields(head)
    reusable = b"close" not in headers.get(b"connection", b"")
    if request_head.startswith(b"HEAD ") or status in (204, 304) or 100 <= status < 200:
        return status, head, reusable
    try:
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            return status, head + await _relay_chunked(reader), reusable
        if b"content-length" in headers:
            return status, head + await reader.readexactly(int(headers[b"content-length"])), reusable
    except (ValueError, asyncio.LimitOverrunError):
        raise BackendError("sent a malformed body") from None
    return status, head + await reader.read(), False
