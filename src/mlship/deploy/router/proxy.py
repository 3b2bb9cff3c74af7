"""The router's proxy: the current route, forwarding each request to a color, the admin API.

The route is one immutable object replaced in a single assignment, so a switch is atomic: a
request goes wholly to the old color or wholly to the new one. A request the color cannot
answer goes to the standby instead. A route with a shadow gets a copy of the live /predict
requests sent to it (`mlship.traffic.copier`) after the live answer went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

from mlship.deploy.router.admission import Admission, Conn, Limits
from mlship.deploy.router.counters import BUCKETS_MS, Counters
from mlship.deploy.router.failover import PROBE_INTERVAL_S, watch_live
from mlship.deploy.router.parse import read_body, read_request
from mlship.deploy.router.route import Route
from mlship.deploy.router.wire import (
    BackendError,
    ClientError,
    Pool,
    detail_body,
    drop,
    header_fields,
    linger,
    read_head,
    read_response,
    simple_response,
)
from mlship.traffic.copier import ShadowCopier, split_response
from mlship.traffic.sticky import KEY_HASH_HEADER, body_field, key_bucket, key_hash, parse_sticky

BACKEND_TIMEOUT_S = 30.0


class Router:
    """Proxy state: the current route, per-color counters, the file the route persists in."""

    def __init__(self, route_file: Path | None, *, token: str | None = None, limits: Limits | None = None) -> None:
        self.route_file = route_file
        self.route = Route()
        self.token = token
        self.limits = limits or Limits()
        self.admission = Admission(self.limits)
        self.counters: dict[str, Counters] = {}
        self.probes = 0  # /ready probes of the live color the watcher made (a quiet watcher is not a healthy one)
        self.failover: dict[str, Any] | None = None
        self.started = time.time()
        self.copier: ShadowCopier | None = None
        if route_file is not None and route_file.is_file():
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                raw = json.loads(route_file.read_text())
                self.route = Route.from_dict(raw)
                self.failover = raw.get("failover")
        self._shadow_to(self.route)

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return self.admission.connections

    @property
    def per_address(self) -> dict[str, int]:
        """Open client connections by client address."""
        return self.admission.per_address

    @property
    def idle(self) -> dict[Conn, None]:
        """Connections waiting for their next request head, oldest first."""
        return self.admission.idle

    def set_route(self, route: Route, *, failover: dict[str, Any] | None = None) -> None:
        """Persist, then switch (one assignment). A route from the controller clears a failover record."""
        if self.route_file is not None:
            tmp = self.route_file.with_name(f".{self.route_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**route.to_dict(), "failover": failover}))
            os.replace(tmp, self.route_file)
        self.failover = failover
        self._shadow_to(route)
        self.route = route  # one assignment: the switch

    def _shadow_to(self, route: Route) -> None:
        """Start copying to the route's shadow (fresh figures for a new target), or stop copying."""
        backend = route.shadow_backend()
        current = self.copier
        if current is not None and backend == current.backend and route.sample == current.sample:
            return
        if current is not None:
            current.cancel()
        self.copier = ShadowCopier(backend, route.sample) if backend else None

    def state(self) -> dict[str, Any]:
        return {
            "route": self.route.to_dict(),
            "counters": {c: k.to_dict() for c, k in self.counters.items()},
            "buckets_ms": list(BUCKETS_MS),
            "pid": os.getpid(),
            "started": self.started,
            **self.admission.state(),
            "failover": self.failover,
            "limits": self.limits.__dict__,
            "shadow": self.copier.stats.to_dict() if self.copier is not None else None,
        }

    def count(self, color: str, status: int, seconds: float) -> None:
        self.counters.setdefault(color, Counters()).observe(status, seconds)

    def _flight(self, color: str, delta: int) -> None:
        self.counters.setdefault(color, Counters()).in_flight += delta

    async def close_connections(self, grace_s: float) -> None:
        """On shutdown: close idle connections at once, busy ones after their request (≤ `grace_s`), then the rest."""
        await self.admission.close_all(grace_s)

    async def watch(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        """Probe the live color's /ready; after FAILOVER_AFTER failures make a ready standby live (`failover`)."""
        await watch_live(self, interval_s)

    # Proxy ---------------------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.admission.admit(writer)
        if not isinstance(conn, Conn):
            status, detail = conn
            with contextlib.suppress(Exception):
                writer.write(simple_response(status, detail_body(detail), close=True, extra="retry-after: 1\r\n"))
                await writer.drain()
                await linger(reader, writer)
            return
        pool: Pool = {}
        first = True
        try:
            while True:
                try:
                    request = await self._next_request(reader, conn, first=first)
                except ClientError as exc:
                    writer.write(simple_response(exc.status, detail_body(exc.detail), close=True))
                    await writer.drain()
                    await linger(reader, writer)
                    break
                first = False
                if request is None:
                    break
                head, body, keep_alive, synthetic = request
                route = self.route
                bucket = None
                if route.sticky and route.split():
                    head, bucket = _sticky(route.sticky, head, body)
                color = route.pick(bucket)
                if color is None:
                    writer.write(
                        simple_response(503, detail_body("no model version is live here; see `mlship status`"))
                    )
                    await writer.drain()
                    break
                response, ok = await self._answer(pool, color, head, body)
                writer.write(response)
                await writer.drain()
                if not ok:
                    drop(pool, color)
                elif (copier := self.copier) is not None and not synthetic and _copyable(head) and copier.wanted():
                    with contextlib.suppress(ValueError, IndexError):
                        copier.offer(head, body, *split_response(response))
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            pass
        finally:
            self.admission.release(conn)
            for color in list(pool):
                drop(pool, color)
            with contextlib.suppress(Exception):
                writer.close()

    async def _next_request(
        self, reader: asyncio.StreamReader, conn: Conn, *, first: bool
    ) -> tuple[bytes, bytes, bool, bool] | None:
        """The next request within the limits; None when the client closed, stayed idle or was evicted."""
        idle = self.limits.idle_timeout(self.admission.connections)
        wait = min(self.limits.header_timeout_s, idle) if first else idle
        self.admission.idle[conn] = None  # until its head arrives, a newcomer may take its place
        try:
            head = await asyncio.wait_for(read_head(reader), wait)
        except TimeoutError:
            if first:
                raise ClientError(408, "the request head did not arrive in time") from None
            return None  # an idle keep-alive connection: close it quietly
        except ValueError:
            raise ClientError(431, "the request head is too large") from None
        finally:
            self.admission.idle.pop(conn, None)
        if head is None or not conn.open:
            return None
        try:
            reading = read_body(reader, head, self.limits.max_body, self.token)
            return await asyncio.wait_for(reading, self.limits.body_timeout_s)
        except TimeoutError:
            raise ClientError(408, "the request body did not arrive in time") from None

    async def _answer(self, pool: Pool, color: str, head: bytes, body: bytes) -> tuple[bytes, bool]:
        """Forward to `color`; what it cannot answer goes to the standby; else a counted 502."""
        started = time.perf_counter()
        tried = color
        for candidate in (color, self.route.fallback(color)):
            if candidate is None:
                break
            tried = candidate
            self._flight(candidate, +1)
            try:
                status, response, reusable = await self._forward(pool, candidate, head, body)
            except BackendError:
                drop(pool, candidate)
                self.count(candidate, 502, time.perf_counter() - started)  # the color failed, whoever answers
                continue
            finally:
                self._flight(candidate, -1)
            self.count(candidate, status, time.perf_counter() - started)
            if not reusable:
                drop(pool, candidate)
            return response, True
        detail = f"the model server for {tried} did not answer; retry, or see `mlship status`"
        return simple_response(502, detail_body(detail)), False

    async def _forward(self, pool: Pool, color: str, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
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
                return await asyncio.wait_for(read_response(r, head), BACKEND_TIMEOUT_S)
            except (ConnectionError, asyncio.IncompleteReadError, BackendError, TimeoutError) as exc:
                drop(pool, color)
                if fresh or attempt == 1 or isinstance(exc, TimeoutError):
                    raise BackendError(str(exc) or exc.__class__.__name__) from None
        raise BackendError("unreachable")

    # Admin ---------------------------------------------------------------------------------

    def authorized(self, head: bytes) -> bool:
        if self.token is None:
            return False
        given = header_fields(head, lower_values=False).get(b"authorization", b"")
        return hmac.compare_digest(given, b"Bearer " + self.token.encode())

    async def serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """`GET /state`, `POST /route` (a token from a 0600 file as `authorization: Bearer`)."""
        try:
            try:
                request = await asyncio.wait_for(read_request(reader, 1_000_000), self.limits.header_timeout_s)
            except (ClientError, TimeoutError):
                return
            if request is None:
                return
            head, body, _ = request
            method, path = head.split(b" ", 2)[:2]
            if not self.authorized(head):
                writer.write(simple_response(401, detail_body("the admin endpoint needs the token from router.token")))
            elif method == b"GET" and path == b"/state":
                writer.write(simple_response(200, json.dumps(self.state()).encode()))
            elif method == b"POST" and path == b"/route":
                try:
                    route = Route.from_dict(json.loads(body))
                    # a route that keeps the failed-over color live (tidying up) keeps the record of why
                    kept = self.failover if self.failover and route.live() == self.failover.get("to") else None
                    self.set_route(route, failover=kept)
                    writer.write(simple_response(200, json.dumps(self.state()).encode()))
                except (ValueError, TypeError, AttributeError):
                    writer.write(simple_response(400, detail_body("a route is {backends, weights, standby}")))
            else:
                writer.write(simple_response(404, detail_body("GET /state or POST /route")))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _sticky(spec: str, head: bytes, body: bytes) -> tuple[bytes, int | None]:
    """The request's routing key → (head carrying the key's hash, bucket); no key: (head, None)."""
    kind, name = parse_sticky(spec) or ("", "")
    if kind == "header":
        raw = header_fields(head, lower_values=False).get(name.encode())
        key = raw.decode("latin-1") if raw else None
    else:
        key = body_field(body, name)
    if key is None:
        return head, None
    lines = [ln for ln in head[:-4].split(b"\r\n") if not ln.lower().startswith(KEY_HASH_HEADER.encode() + b":")]
    tagged = b"\r\n".join([*lines, f"{KEY_HASH_HEADER}: {key_hash(key)}".encode()]) + b"\r\n\r\n"
    return tagged, key_bucket(key)


def _copyable(head: bytes) -> bool:
    """Only predictions are copied: POST /predict (the caller leaves out the deploy's own requests)."""
    return head.startswith(b"POST /predict ")
