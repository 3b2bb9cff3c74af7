"""Strict request parsing (RFC 9112): a request head checked, a body read within its limits.

The router is a proxy: where it and the color behind it could read one byte stream as
different requests (request smuggling), or where a client could make it loop or buffer
without bound, it refuses. The request line and field lines are parsed by llhttp (the
parser of Node.js, via httptools, which uvicorn also uses), in its strict mode; the rules
below are checked again here, on the fields llhttp hands over, so each one is visible.
"""

from __future__ import annotations

import asyncio
import re
from typing import NamedTuple

import httptools

from mlship.deploy import synthetic
from mlship.deploy.router.wire import ClientError, read_head
from mlship.traffic.sticky import KEY_HASH_HEADER

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*)\r\n"
)
"""RFC 9112 §7.1: chunk-size = 1*HEXDIG, then chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ), CRLF."""
_FIELD_LINE = re.compile(_TOKEN + rb":[\t -~\x80-\xff]*\r\n")
"""RFC 9112 §5: field-name ":" OWS field-value OWS, no whitespace before the colon (used for trailer lines)."""
CHUNK_LINE_MAX = 4096
"""Longest chunk-size line (size and extensions) the router reads; longer is a 400, never a buffer that grows."""
TRAILER_MAX = 16 * 1024
"""Largest trailer section of a chunked request (the trailers are dropped: RFC 9112 §7.1.2 allows it)."""
_STRIPPED = (b"transfer-encoding:", b"upgrade:")
_SYNTHETIC = synthetic.SYNTHETIC_HEADER.encode()
_PROOF = synthetic.PROOF_HEADER.encode()
_KEY_HASH = KEY_HASH_HEADER.encode()
_MARKS = (_SYNTHETIC, _PROOF, _KEY_HASH)
"""Fields only mlship sets: stripped from every client request (a proven synthetic marker is put back)."""
_MARK_PREFIXES = tuple(m + b":" for m in _MARKS)


_FRAMING = re.compile(
    rb"\r\n(content-length|transfer-encoding|host|connection|"
    + b"|".join(re.escape(m) for m in _MARKS)
    + rb"):[ \t]*([^\r]*)"
)
"""The fields the router reads or rewrites (the others pass through as they came), found in the
lower-cased head once llhttp has validated it: every line is then `name:value` with a token
name, no whitespace before the colon, no CR or LF inside. One C-level scan, no per-field
Python callback (8 callbacks cost more than the whole old parse)."""


class _Heads:
    """llhttp's one callback the router uses: how many request heads it completed."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads = 0

    def on_headers_complete(self) -> None:
        self.heads += 1


class Framing(NamedTuple):
    """A request head the router accepted: the head to forward, how its body is framed, keep-alive."""

    head: bytes
    length: int | None
    """The body's content-length; None: chunked (the forwarded head gets a content-length once it is read)."""
    keep_alive: bool
    synthetic: bool = False
    """The deploy's own request (marked, with the router's proof): kept out of shadow copies."""


def _malformed(exc: Exception) -> ClientError:
    why = "".join(c for c in str(exc)[:80] if c.isprintable()) or "unparsable"
    return ClientError(400, f"the request is not valid HTTP/1.1 ({why})")


def _check_syntax(head: bytes) -> tuple[bytes, bool]:
    """(HTTP version, an upgrade request?) of a head llhttp accepts as exactly one request head."""
    fields = _Heads()
    parser = httptools.HttpRequestParser(fields)
    upgrade = False
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        # llhttp stops after the head of a CONNECT or of an `upgrade` request. The router
        # does not tunnel (501); an upgrade request is served as plain HTTP/1.1 without the
        # Upgrade field (RFC 9110 §7.8: a server MAY ignore it).
        if parser.get_method() == b"CONNECT":
            raise ClientError(501, "the router does not tunnel (CONNECT)") from None
        upgrade = True
    except httptools.HttpParserError as exc:
        # among others: whitespace between a field name and its colon (RFC 9112 §5.1),
        # obs-fold (§5.2), bare CR or LF (§2.2), a content-length that is not 1*DIGIT or
        # appears twice (§6.3 item 5), transfer-encoding with content-length (§6.3 item 3)
        raise _malformed(exc) from None
    if fields.heads != 1:
        raise ClientError(400, "the request is not valid HTTP/1.1 (incomplete head)")
    end = head.find(b"\r\n")
    version = head[end - 3 : end]  # llhttp checked the request line ends in HTTP/<digit>.<digit>
    if version not in (b"1.1", b"1.0"):
        raise ClientError(505, "the router speaks HTTP/1.1 (and 1.0)")
    return version, upgrade


def _body_length(version: bytes, lengths: list[bytes], codings: list[bytes]) -> int | None:
    """The body's length from its content-length / transfer-encoding fields; None: chunked."""
    if codings:
        if version == b"1.0":  # RFC 9112 §6.1: a 1.0 message with transfer-encoding has faulty framing
            raise ClientError(400, "an HTTP/1.0 request cannot use transfer-encoding")
        if lengths:  # RFC 9112 §6.3 item 3: both is how requests are smuggled
            raise ClientError(400, "a request cannot have both transfer-encoding and content-length")
        if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:  # RFC 9112 §6.3 item 4, §6.1
            raise ClientError(400, "transfer-encoding must end with chunked, once")
        if len(codings) > 1:  # RFC 9112 §6.1: a coding the server does not understand is 501
            raise ClientError(501, "the router only understands transfer-encoding: chunked")
        return None
    if lengths:
        # RFC 9112 §6.3 item 5 / RFC 9110 §8.6: Content-Length = 1*DIGIT; several differing values
        # (or a list) make the length unknowable: 400
        first = lengths[0]
        if not first.isdigit() or (len(lengths) > 1 and any(v != first for v in lengths)):
            raise ClientError(400, "the content-length header is not one number")
        return int(first)
    return 0


def parse_head(head: bytes, token: str | None = None) -> Framing:
    """Check one request head (ending in CRLF CRLF) against RFC 9112; ClientError says why not.

    Also takes mlship's own fields out of the head (`mlship.deploy.synthetic`): the synthetic
    marker is kept only with a proof made with `token`, the proof and the key hash never.
    """
    version, upgrade = _check_syntax(head)
    hosts = 0
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    marks: dict[bytes, list[bytes]] = {}
    for name, raw in _FRAMING.findall(head.lower()):
        value = raw.rstrip(b" \t")
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.extend(c.strip() for c in value.split(b",") if c.strip())
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            connection.extend([c.strip() for c in value.split(b",")] if b"," in value else (value,))
        else:
            marks.setdefault(name, []).append(value)
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        raise ClientError(400, "an HTTP/1.1 request needs exactly one host header")  # RFC 9112 §3.2
    # RFC 9112 §9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive"
    keep_alive = b"close" not in connection and (version == b"1.1" or b"keep-alive" in connection)
    length = _body_length(version, lengths, codings)
    proven = False
    if length is None or upgrade or marks:
        purpose, given = marks.get(_SYNTHETIC, []), marks.get(_PROOF, [])
        proven = len(purpose) == 1 and len(given) == 1 and synthetic.valid(token, purpose[0], given[0])
        stripped = _STRIPPED + _MARK_PREFIXES if marks else _STRIPPED
        lines = head[:-4].split(b"\r\n")
        kept = [lines[0], *(ln for ln in lines[1:] if not ln.lower().startswith(stripped))]
        if proven:
            kept.append(_SYNTHETIC + b": " + purpose[0])
        head = b"\r\n".join(kept) + b"\r\n\r\n"
    return Framing(head, length, keep_alive, proven)


async def read_body(
    reader: asyncio.StreamReader, head: bytes, max_body: int, token: str | None = None
) -> tuple[bytes, bytes, bool, bool]:
    """(head to forward, body, keep-alive?, synthetic?) after a strict parse of `head`.

    A declared length over `max_body` is refused (413) before a byte of the body is read; a
    chunked body at the first chunk that crosses it. Chunked bodies are de-chunked (the
    backend gets a content-length).
    """
    framing = parse_head(head, token)
    if framing.length is None:
        body = await _read_chunked_request(reader, max_body)
        head = framing.head[:-2] + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    else:
        if framing.length > max_body:
            raise ClientError(413, f"the request body is larger than {max_body} bytes")
        head = framing.head
        body = await reader.readexactly(framing.length) if framing.length else b""
    return head, body, framing.keep_alive, framing.synthetic


async def _read_line(reader: asyncio.StreamReader, limit: int, what: str) -> bytes:
    """One CRLF-ended line of at most `limit` bytes; longer is a 400 (never an unhandled overrun)."""
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise ClientError(400, f"the {what} is longer than {limit} bytes") from None
    if len(line) > limit:
        raise ClientError(400, f"the {what} is longer than {limit} bytes")
    return line


async def _read_chunked_request(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A chunked request body (RFC 9112 §7.1), de-chunked; 413 at the first chunk past `limit`."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = await _read_line(reader, CHUNK_LINE_MAX, "chunk-size line")
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise ClientError(400, "a chunk-size line is not hex digits with optional extensions")
        size = int(match.group(1), 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise ClientError(413, f"the request body is larger than {limit} bytes")
        data = await reader.readexactly(size + 2)
        if data[-2:] != b"\r\n":
            raise ClientError(400, "a chunk is longer than its chunk-size says")
        parts.append(data[:-2])
    seen = 0
    while True:  # the trailer section (§7.1.2): field lines up to an empty line, bounded, dropped
        line = await _read_line(reader, TRAILER_MAX - seen, "trailer section")
        if line == b"\r\n":
            return b"".join(parts)
        seen += len(line)
        if _FIELD_LINE.fullmatch(line) is None:
            raise ClientError(400, "a trailer line is not a field line")


async def read_request(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bytes, bool] | None:
    """One client request: (head, body, keep-alive?); ClientError for a body over `max_body`."""
    head = await read_head(reader)
    if head is None:
        return None
    head, body, keep_alive, _ = await read_body(reader, head, max_body)
    return head, body, keep_alive
