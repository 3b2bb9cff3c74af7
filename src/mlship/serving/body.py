"""What every prediction endpoint (`/predict` and V2's infer) shares about a request: its headers and its body.

The body is read whole, refused before it is all read when it is over `serve.max_body_bytes`.
"""

from __future__ import annotations

from starlette.requests import Request

SYNTHETIC_HEADER = "x-mlship-synthetic"
"""mlship's own requests (smoke, verification, readiness probes) carry it: answered like any
other, counted apart in the metrics, and kept out of the prediction log (drift sees real traffic)."""
KEY_HASH_HEADER = b"x-mlship-key-hash"
"""A sticky canary's routing key, hashed by the router: logged so `mlship abtest` can count per key."""

CLIENT_CLOSED = 499
"""The client went away before its body arrived (nginx's code): a client error, not the server's."""


class BodyTooLarge(Exception):
    """The request body is over `serve.max_body_bytes`."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (before reading it all) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
