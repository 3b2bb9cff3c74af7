"""The local router: owns the live port and forwards each HTTP/1.1 request to a color.

Raw asyncio streams (uvloop when installed) keep it far cheaper than the model servers
behind it. The route (backends + weights) is one immutable object replaced in a single
assignment, so a switch is atomic: a request goes wholly to the old color or wholly to
the new one. Per-color counters (requests, errors, latency histogram) are the signal the
blue-green controller verifies a release on. Admin API (JSON, another loopback port):
`GET /state`, `POST /route` with `{"backends": {"blue": "127.0.0.1:9001"}, "weights":
{"blue": 100}}`. The route is also persisted, so a restarted router serves the same color.

Run as `python -m mlship.deploy.router --port 8000 --admin-port 8001 --route-file F`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
"""Upper bounds of the latency histogram (ms); the last bucket is everything slower."""

MAX_HEAD = 64 * 1024
BACKEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Route:
    """Where requests go: color → "host:port", and color → weight (live color = 100)."""

    backends: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)

    def pick(self) -> str | None:
        live = [(c, w) for c, w in self.weights.items() if w > 0 and c in self.backends]
        if not live:
            return None
        if len(live) == 1:
            return live[0][0]
        total = sum(w for _, w in live)
        x = random.random() * total
        for color, weight in live:
            x -= weight
            if x < 0:
                return color
        return live[-1][0]

    def to_dict(self) -> dict[str, Any]:
        return {"backends": dict(self.backends), "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Route:
        backends = {str(k): str(v) for k, v in (raw.get("backends") or {}).items()}
        weights = {str(k): int(v) for k, v in (raw.get("weights") or {}).items()}
        return cls(backends=backends, weights=weights)


@dataclass
class Counters:
    """Requests, errors (5xx or unreachable backend) and a latency histogram for one color."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def observe(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        ms = seconds * 1000.0
        for i, bound in enumerate(BUCKETS_MS):
            if ms <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "buckets": list(self.buckets)}


class BackendError(Exception):
    """The color could not be reached or answered garbage."""


class Router:
    """Proxy state: the current route, per-color counters, the file the route persists in."""

    def __init__(self, route_file: Path | None) -> None:
        self.route_file = route_file
        self.route = Route()
        self.counters: dict[str, Counters] = {}
        self.started = time.time()
        if route_file is not None and route_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                self.route = Route.from_dict(json.loads(route_file.read_text()))

    def set_route(self, route: Route) -> None:
        if self.route_file is not None:
            tmp = self.route_file.with_name(f".{self.route_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(route.to_dict()))
            os.replace(tmp, self.route_file)
        self.route = route  # one assignment: the switch

    def state(self) -> dict[str, Any]:
        return {
            "route": self.route.to_dict(),
            "counters": {c: k.to_dict() for c, k in self.counters.items()},
            "buckets_ms": list(BUCKETS_MS),
            "pid": os.getpid(),
            "started": self.started,
        }

    def count(self, color: str, status: int, seconds: float) -> None:
        self.counters.setdefault(color, Counters()).observe(status, seconds)

    # Proxy ---------------------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                head, body, keep_alive = request
                color = self.route.pick()
                if color is None:
                    writer.write(_simple(503, b'{"detail":"no live color"}'))
                    await writer.drain()
                    break
                started = time.perf_counter()
                try:
                    status, response, reusable = await self._forward(pool, color, head, body)
                except BackendError as exc:
                    self.count(color, 502, time.perf_counter() - started)
                    writer.write(_simple(502, json.dumps({"detail": f"{color}: {exc}"}).encode()))
                    await writer.drain()
                    _drop(pool, color)
                    if not keep_alive:
                        break
                    continue
                self.count(color, status, time.perf_counter() - started)
                if not reusable:
                    _drop(pool, color)
                writer.write(response)
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            for color in list(pool):
                _drop(pool, color)
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(
        self,
        pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        color: str,
        head: bytes,
        body: bytes,
    ) -> tuple[int, bytes, bool]:
        """Send one request to `color`; a pooled connection the backend closed is retried once fresh."""
        for attempt in (0, 1):
            conn = pool.get(color)
            fresh = conn is None
            if conn is None:
                host, _, port = self.route.backends.get(color, "").rpartition(":")
                try:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5.0)
                except (OSError, ValueError, TimeoutError) as exc:
                    raise BackendError(f"unreachable ({exc.__class__.__name__})") from None
                pool[color] = conn
            r, w = conn
            try:
                w.write(head + body)
                await w.drain()
                return await asyncio.wait_for(_read_response(r, head), BACKEND_TIMEOUT_S)
            except (ConnectionError, asyncio.IncompleteReadError, BackendError, TimeoutError) as exc:
                _drop(pool, color)
                if fresh or attempt == 1 or isinstance(exc, TimeoutError):
                    raise BackendError(str(exc) or exc.__class__.__name__) from None
        raise BackendError("unreachable")

    # Admin ---------------------------------------------------------------------------------

    async def serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            head, body, _ = request
            method, path = head.split(b" ", 2)[:2]
            if method == b"GET" and path == b"/state":
                writer.write(_simple(200, json.dumps(self.state()).encode()))
            elif method == b"POST" and path == b"/route":
                try:
                    self.set_route(Route.from_dict(json.loads(body)))
                    writer.write(_simple(200, json.dumps(self.state()).encode()))
                except (ValueError, TypeError, AttributeError) as exc:
                    writer.write(_simple(400, json.dumps({"detail": str(exc)}).encode()))
            else:
                writer.write(_simple(404, b'{"detail":"GET /state or POST /route"}'))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _drop(pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]], color: str) -> None:
    conn = pool.pop(color, None)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn[1].close()


def _simple(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 502: "Bad Gateway", 503: "Service Unavailable"}
    return (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _headers(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip().lower()
    return out


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("header too large") from None
    return head


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bool] | None:
    """One client request: (head, body, keep-alive?). Chunked request bodies are de-chunked."""
    head = await _read_head(reader)
    if head is None:
        return None
    headers = _headers(head)
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body = await _read_chunked(reader, keep_framing=False)
        lines = [
            ln
            for ln in head[:-4].split(b"\r\n")
            if not ln.lower().startswith((b"transfer-encoding:", b"content-length:"))
        ]
        head = b"\r\n".join([*lines, b"content-length: " + str(len(body)).encode()]) + b"\r\n\r\n"
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0") or b"0"))
    http10 = head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
    connection = headers.get(b"connection", b"")
    keep_alive = (b"keep-alive" in connection) if http10 else (b"close" not in connection)
    return head, body, keep_alive


async def _read_chunked(reader: asyncio.StreamReader, *, keep_framing: bool) -> bytes:
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
            if keep_framing:
                parts.append(line + trailer)
            return b"".join(parts)
        data = await reader.readexactly(size + 2)
        parts.append(line + data if keep_framing else data[:-2])


async def _read_response(reader: asyncio.StreamReader, request_head: bytes) -> tuple[int, bytes, bool]:
    """One backend response: (status, raw bytes to relay, can the connection be reused?)."""
    head = await _read_head(reader)
    if head is None:
        raise BackendError("closed the connection")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BackendError("sent a malformed status line") from None
    headers = _headers(head)
    reusable = b"close" not in headers.get(b"connection", b"")
    if request_head.startswith(b"HEAD ") or status in (204, 304) or 100 <= status < 200:
        return status, head, reusable
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        return status, head + await _read_chunked(reader, keep_framing=True), reusable
    if b"content-length" in headers:
        return status, head + await reader.readexactly(int(headers[b"content-length"])), reusable
    return status, head + await reader.read(), False


async def run(port: int, admin_port: int, route_file: Path | None, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish (≤ 2 s)."""
    router = Router(route_file)
    proxy = await asyncio.start_server(router.serve_client, host, port, limit=MAX_HEAD, backlog=1024)
    admin = await asyncio.start_server(router.serve_admin, "127.0.0.1", admin_port, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"router listening on {host}:{port}, admin on 127.0.0.1:{admin_port}", file=sys.stderr, flush=True)
    await stop.wait()
    proxy.close()
    admin.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proxy.wait_closed(), 2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlship.deploy.router", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--route-file", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    try:
        asyncio.run(run(args.port, args.admin_port, args.route_file, args.host))
    except OSError as exc:
        print(f"router: cannot listen: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
