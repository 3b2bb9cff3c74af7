"""The local router: owns the live port and forwards each HTTP/1.1 request to a color.

Raw asyncio streams (uvloop when installed) keep it far cheaper than the model servers
behind it. The route (backends + weights + standby) is one immutable object replaced in a
single assignment, so a switch is atomic: a request goes wholly to the old color or wholly
to the new one. Per-color counters (requests, errors, latency histogram, requests in
flight) are the signal the blue-green controller verifies a release on and drains a color by.

Failover: the route may name a `standby`, the previous color kept warm for the rollback
window. A request the live color cannot answer is sent to the standby instead, and when
the live color fails its `/ready` probes while the standby answers them, the router makes
the standby live and records why (`failover` in the state); the controller then adopts it.

Limits: request bodies over `max_body` get 413 before any of the body is read; a request
head must arrive within the header timeout, a body within the body timeout, and a kept-alive
connection that stays silent is closed after the idle timeout. Fair share: at most
`max_per_address` connections from one client address (more get 429), at most
`max_connections` in all; past half of that the idle timeout shrinks with the load, and at
the cap a new client takes the place of an idle connection (waiting for its next request)
of the address holding the most, so idle sockets cannot lock others out. Only when every
connection is busy with a request does a newcomer get 503 ("saturated"). Error bodies say
what is wrong, never how (no addresses, no exception text).

Admin API (JSON, another loopback port, `authorization: Bearer <token>` where the token is
the content of a 0600 file): `GET /state`, `POST /route` with `{"backends": {"blue":
"127.0.0.1:9001"}, "weights": {"blue": 100}, "standby": null}`. The route is also
persisted, so a restarted router serves the same color.

Run as `python -m mlship.deploy.router --port 8000 --admin-port 8001 --route-file F --token-file T`;
with `--supervise` the process is a supervisor that runs the router as its child and
restarts it whenever it dies, so the live port heals without waiting for an mlship command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httptools

from mlship import notify
from mlship.deploy import synthetic
from mlship.traffic.copier import ShadowCopier, split_response
from mlship.traffic.sticky import BUCKETS, KEY_HASH_HEADER, body_field, key_bucket, key_hash, parse_sticky

BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
"""Upper bounds of the latency histogram (ms); the last bucket is everything slower."""

MAX_HEAD = 64 * 1024
BACKEND_TIMEOUT_S = 30.0
MAX_BODY = 1_000_000
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 1024
MAX_PER_ADDRESS = 256
"""Connections one client address may hold (a quarter of the router): one local user cannot take it all."""
PRESSURE = 0.5
"""Share of `max_connections` in use past which the idle timeout shrinks (linearly, to MIN_IDLE_S at the cap)."""
MIN_IDLE_S = 1.0
SATURATED_FOR_S = 60.0
"""A router that refused a client for want of a free connection this recently counts as saturated in `status`."""
PROBE_INTERVAL_S = 0.25
FAILOVER_AFTER = 2
"""Consecutive failed /ready probes of the live color (connection refused: it is gone) before the standby takes over."""
FAILOVER_AFTER_SLOW = 8
"""The same when the live color still accepts connections but does not answer /ready with 200
(slow, stuck, or saying not ready): more patience, so a busy machine does not flap colors."""


@dataclass(frozen=True)
class Limits:
    """What one client may cost the router."""

    max_body: int = MAX_BODY
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    max_per_address: int = MAX_PER_ADDRESS

    def idle_timeout(self, connections: int) -> float:
        """The keep-alive idle timeout with `connections` open: the full one up to PRESSURE, then less."""
        load = connections / self.max_connections if self.max_connections else 1.0
        if load <= PRESSURE:
            return self.idle_timeout_s
        return max(MIN_IDLE_S, self.idle_timeout_s * (1.0 - load) / (1.0 - PRESSURE))


@dataclass(frozen=True)
class Route:
    """Where requests go: color → "host:port", color → weight (live = 100), and the warm standby.

    `sticky` ("header:NAME" or "field:NAME") routes a split by a request key's stable bucket
    instead of at random; `shadow` names a color that gets a copy of a `sample` share of the
    live /predict requests (its answers are compared, never returned).
    """

    backends: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    standby: str | None = None
    sticky: str | None = None
    shadow: str | None = None
    sample: float = 1.0
    shadow_address: str | None = None
    """Where the shadow color's process listens, when its name is also the standby's (the release parked behind it)."""

    def split(self) -> bool:
        """More than one color shares live traffic (a canary or A/B split)."""
        return sum(1 for c, w in self.weights.items() if w > 0 and c in self.backends) > 1

    def pick(self, bucket: int | None = None) -> str | None:
        """The color for one request: by `bucket` (0..9999, a sticky key's) when given, else at random.

        Buckets are laid out over the colors in name order, so a key keeps its color as long
        as the weights stay the same.
        """
        live = sorted((c, w) for c, w in self.weights.items() if w > 0 and c in self.backends)
        if not live:
            return None
        if len(live) == 1:
            return live[0][0]
        total = sum(w for _, w in live)
        x = random.random() * total if bucket is None else (bucket + 0.5) * total / BUCKETS
        for color, weight in live:
            x -= weight
            if x < 0:
                return color
        return live[-1][0]

    def fallback(self, color: str) -> str | None:
        """Where a request `color` could not answer goes: the standby, if it is another color."""
        if self.standby and self.standby != color and self.standby in self.backends:
            return self.standby
        return None

    def live(self) -> str | None:
        """The color with all the traffic (None during a canary split or with nothing live)."""
        full = [c for c, w in self.weights.items() if w >= 100 and c in self.backends]
        return full[0] if len(full) == 1 else None

    def shadow_backend(self) -> str | None:
        """Where copies go: the shadow color's address, when it is not itself taking live traffic."""
        if not self.shadow or self.weights.get(self.shadow, 0) > 0:
            return None
        return self.shadow_address or self.backends.get(self.shadow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": dict(self.backends),
            "weights": dict(self.weights),
            "standby": self.standby,
            "sticky": self.sticky,
            "shadow": self.shadow,
            "sample": self.sample,
            "shadow_address": self.shadow_address,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Route:
        """A route from JSON; ValueError for a sticky key or sample the router cannot use."""
        backends = {str(k): str(v) for k, v in (raw.get("backends") or {}).items()}
        weights = {str(k): int(v) for k, v in (raw.get("weights") or {}).items()}
        standby = raw.get("standby")
        sticky = raw.get("sticky") or None
        parse_sticky(sticky)
        sample = float(raw.get("sample", 1.0) if raw.get("sample") is not None else 1.0)
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"shadow sample {sample} is not in (0, 1]")
        shadow = raw.get("shadow")
        address = raw.get("shadow_address")
        return cls(
            backends=backends,
            weights=weights,
            standby=str(standby) if standby else None,
            sticky=str(sticky) if sticky else None,
            shadow=str(shadow) if shadow else None,
            sample=sample,
            shadow_address=str(address) if address else None,
        )


@dataclass
class Counters:
    """Requests, errors (5xx or unreachable backend), a latency histogram and requests in flight."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
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
        return {
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "buckets": list(self.buckets),
        }


class BackendError(Exception):
    """The color could not be reached or answered garbage."""


class ClientError(Exception):
    """The client sent something the router refuses: answered with `status` and closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Conn:
    """One client connection's place in the router's accounting."""

    __slots__ = ("address", "open", "writer")

    def __init__(self, address: str, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self.writer = writer
        self.open = True


class Router:
    """Proxy state: the current route, per-color counters, the file the route persists in."""

    def __init__(self, route_file: Path | None, *, token: str | None = None, limits: Limits | None = None) -> None:
        self.route_file = route_file
        self.route = Route()
        self.token = token
        self.limits = limits or Limits()
        self.counters: dict[str, Counters] = {}
        self.connections = 0
        self.per_address: dict[str, int] = {}
        self.open: dict[_Conn, None] = {}
        self.idle: dict[_Conn, None] = {}
        """Connections waiting for their next request head, oldest first (the ones a newcomer may replace)."""
        self.refused_connections = 0
        self.refused_address = 0
        self.evicted_idle = 0
        self.saturated_at: float | None = None
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
            "connections": self.connections,
            "refused_connections": self.refused_connections,
            "refused_address": self.refused_address,
            "evicted_idle": self.evicted_idle,
            "idle_connections": len(self.idle),
            "idle_timeout_s": round(self.limits.idle_timeout(self.connections), 3),
            "busiest": max(self.per_address.items(), key=lambda kv: kv[1], default=None),
            "saturated_at": self.saturated_at,
            "failover": self.failover,
            "limits": self.limits.__dict__,
            "shadow": self.copier.stats.to_dict() if self.copier is not None else None,
        }

    def count(self, color: str, status: int, seconds: float) -> None:
        self.counters.setdefault(color, Counters()).observe(status, seconds)

    def _flight(self, color: str, delta: int) -> None:
        self.counters.setdefault(color, Counters()).in_flight += delta

    # Proxy ---------------------------------------------------------------------------------

    def _admit(self, writer: asyncio.StreamWriter) -> _Conn | tuple[int, str]:
        """Count a new client in, or say why not: (429, …) for its address's share, (503, …) when saturated."""
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.per_address.get(address, 0) >= self.limits.max_per_address and not self._evict(address):
            self.refused_address += 1
            detail = "this client address holds the most connections the router allows one address; reuse or close them"
            return 429, detail
        if self.connections >= self.limits.max_connections and not self._evict(None):
            self.refused_connections += 1
            self.saturated_at = time.time()
            return 503, "the router is saturated (every connection is busy with a request); retry shortly"
        self.connections += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        conn = _Conn(address, writer)
        self.open[conn] = None
        return conn

    def _release(self, conn: _Conn) -> None:
        """Count a connection out (once)."""
        if not conn.open:
            return
        conn.open = False
        self.idle.pop(conn, None)
        self.open.pop(conn, None)
        self.connections -= 1
        left = self.per_address.get(conn.address, 1) - 1
        if left > 0:
            self.per_address[conn.address] = left
        else:
            self.per_address.pop(conn.address, None)

    def _evict(self, address: str | None) -> bool:
        """Close the oldest idle connection of `address` (None: of the address holding the most); False if none.

        Closing a persistent connection between requests is what RFC 9112 §9.5 allows a server
        to do at any time; the client opens a new one.
        """
        if not self.idle:
            return False
        if address is None:
            address = max({c.address for c in self.idle}, key=lambda a: self.per_address.get(a, 0))
        victim = next((c for c in self.idle if c.address == address), None)
        if victim is None:
            return False
        self._close(victim)  # its reader sees EOF: the connection ends quietly
        self.evicted_idle += 1
        return True

    async def close_connections(self, grace_s: float) -> None:
        """On shutdown: close idle connections at once, busy ones after their request (≤ `grace_s`), then the rest.

        Each connection's task then ends on its own (EOF), instead of being cancelled by the loop's teardown.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.open and loop.time() < deadline:
            for conn in list(self.idle):
                self._close(conn)
            await asyncio.sleep(0.02)
        for conn in list(self.open):
            self._close(conn)
        await asyncio.sleep(0.05)

    def _close(self, conn: _Conn) -> None:
        self._release(conn)
        with contextlib.suppress(Exception):
            conn.writer.close()

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self._admit(writer)
        if not isinstance(conn, _Conn):
            status, detail = conn
            with contextlib.suppress(Exception):
                writer.write(_simple(status, _detail(detail), close=True, extra="retry-after: 1\r\n"))
                await writer.drain()
                await _linger(reader, writer)
            return
        pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        first = True
        try:
            while True:
                try:
                    request = await self._next_request(reader, conn, first=first)
                except ClientError as exc:
                    writer.write(_simple(exc.status, _detail(exc.detail), close=True))
                    await writer.drain()
                    await _linger(reader, writer)
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
                    writer.write(_simple(503, _detail("no model version is live here; see `mlship status`")))
                    await writer.drain()
                    break
                response, ok = await self._answer(pool, color, head, body)
                writer.write(response)
                await writer.drain()
                if not ok:
                    _drop(pool, color)
                elif (copier := self.copier) is not None and not synthetic and _copyable(head) and copier.wanted():
                    with contextlib.suppress(ValueError, IndexError):
                        copier.offer(head, body, *split_response(response))
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            pass
        finally:
            self._release(conn)
            for color in list(pool):
                _drop(pool, color)
            with contextlib.suppress(Exception):
                writer.close()

    async def _next_request(
        self, reader: asyncio.StreamReader, conn: _Conn, *, first: bool
    ) -> tuple[bytes, bytes, bool, bool] | None:
        """The next request within the limits; None when the client closed, stayed idle or was evicted."""
        idle = self.limits.idle_timeout(self.connections)
        wait = min(self.limits.header_timeout_s, idle) if first else idle
        self.idle[conn] = None  # until its head arrives, a newcomer may take its place
        try:
            head = await asyncio.wait_for(_read_head(reader), wait)
        except TimeoutError:
            if first:
                raise ClientError(408, "the request head did not arrive in time") from None
            return None  # an idle keep-alive connection: close it quietly
        except ValueError:
            raise ClientError(431, "the request head is too large") from None
        finally:
            self.idle.pop(conn, None)
        if head is None or not conn.open:
            return None
        try:
            reading = _read_body(reader, head, self.limits.max_body, self.token)
            return await asyncio.wait_for(reading, self.limits.body_timeout_s)
        except TimeoutError:
            raise ClientError(408, "the request body did not arrive in time") from None

    async def _answer(
        self,
        pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        color: str,
        head: bytes,
        body: bytes,
    ) -> tuple[bytes, bool]:
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
                _drop(pool, candidate)
                self.count(candidate, 502, time.perf_counter() - started)  # the color failed, whoever answers
                continue
            finally:
                self._flight(candidate, -1)
            self.count(candidate, status, time.perf_counter() - started)
            if not reusable:
                _drop(pool, candidate)
            return response, True
        detail = f"the model server for {tried} did not answer; retry, or see `mlship status`"
        return _simple(502, _detail(detail)), False

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

    # Failover ------------------------------------------------------------------------------

    async def watch(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        """Probe the live color's /ready; after FAILOVER_AFTER failures make a ready standby live."""
        failures = 0
        while True:
            await asyncio.sleep(interval_s)
            route = self.route
            live = route.live()
            if live is None or route.fallback(live) is None:
                failures = 0
                continue
            why = await _probe(route.backends[live])
            self.probes += 1
            if why is None:
                failures = 0
                continue
            failures += 1
            standby = route.fallback(live)
            needed = FAILOVER_AFTER if why == "is unreachable" else FAILOVER_AFTER_SLOW
            if failures < needed or standby is None or await _probe(route.backends[standby]) is not None:
                continue
            if self.route is not route:  # the controller switched meanwhile: its route wins
                continue
            record = {"from": live, "to": standby, "reason": f"{live} {why}", "at": time.time()}
            self.set_route(Route(backends=dict(route.backends), weights={standby: 100}), failover=record)
            print(f"router: failover {live} → {standby}: {live} {why}", file=sys.stderr, flush=True)
            notify.failover(record)  # from a daemon thread: the watch loop and requests never wait for it
            failures = 0

    # Admin ---------------------------------------------------------------------------------

    def authorized(self, head: bytes) -> bool:
        if self.token is None:
            return False
        given = _headers(head, lower_values=False).get(b"authorization", b"")
        return hmac.compare_digest(given, b"Bearer " + self.token.encode())

    async def serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader, 1_000_000), self.limits.header_timeout_s)
            except (ClientError, TimeoutError):
                return
            if request is None:
                return
            head, body, _ = request
            method, path = head.split(b" ", 2)[:2]
            if not self.authorized(head):
                writer.write(_simple(401, _detail("the admin endpoint needs the token from router.token")))
            elif method == b"GET" and path == b"/state":
                writer.write(_simple(200, json.dumps(self.state()).encode()))
            elif method == b"POST" and path == b"/route":
                try:
                    route = Route.from_dict(json.loads(body))
                    # a route that keeps the failed-over color live (tidying up) keeps the record of why
                    kept = self.failover if self.failover and route.live() == self.failover.get("to") else None
                    self.set_route(route, failover=kept)
                    writer.write(_simple(200, json.dumps(self.state()).encode()))
                except (ValueError, TypeError, AttributeError):
                    writer.write(_simple(400, _detail("a route is {backends, weights, standby}")))
            else:
                writer.write(_simple(404, _detail("GET /state or POST /route")))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


LINGER_S = 1.0
LINGER_BYTES = 1 << 20


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


async def _probe(backend: str, timeout_s: float = 1.0) -> str | None:
    """None if `backend` answers GET /ready with 200, else why not."""
    host, _, port = backend.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, ValueError, TimeoutError):
        return "is unreachable"
    try:
        writer.write(b"GET /ready HTTP/1.1\r\nhost: router\r\nx-mlship-synthetic: probe\r\nconnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        status = int(line.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError):
        return "does not answer /ready"
    finally:
        with contextlib.suppress(Exception):
            writer.close()
    return None if status == 200 else f"answers /ready with {status}"


def _sticky(spec: str, head: bytes, body: bytes) -> tuple[bytes, int | None]:
    """The request's routing key → (head carrying the key's hash, bucket); no key: (head, None)."""
    kind, name = parse_sticky(spec) or ("", "")
    if kind == "header":
        raw = _headers(head, lower_values=False).get(name.encode())
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


def _drop(pool: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]], color: str) -> None:
    conn = pool.pop(color, None)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn[1].close()


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


def _detail(text: str) -> bytes:
    return json.dumps({"detail": text}).encode()


def _simple(status: int, body: bytes, *, close: bool = False, extra: str = "") -> bytes:
    connection = "connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{connection}{extra}\r\n"
    ).encode() + body


def _headers(head: bytes, *, lower_values: bool = True) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip().lower() if lower_values else value.strip()
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


async def _read_request(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bytes, bool] | None:
    """One client request: (head, body, keep-alive?); ClientError for a body over `max_body`."""
    head = await _read_head(reader)
    if head is None:
        return None
    head, body, keep_alive, _ = await _read_body(reader, head, max_body)
    return head, body, keep_alive


# Strict request parsing (RFC 9112) -----------------------------------------------------------
#
# The router is a proxy: where it and the color behind it could read one byte stream as
# different requests (request smuggling), or where a client could make it loop or buffer
# without bound, it refuses. The request line and field lines are parsed by llhttp (the
# parser of Node.js, via httptools, which uvicorn also uses), in its strict mode; the rules
# below are checked again here, on the fields llhttp hands over, so each one is visible.

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


def parse_head(head: bytes, token: str | None = None) -> Framing:
    """Check one request head (ending in CRLF CRLF) against RFC 9112; ClientError says why not.

    Also takes mlship's own fields out of the head (`mlship.deploy.synthetic`): the synthetic
    marker is kept only with a proof made with `token`, the proof and the key hash never.
    """
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
    length: int | None = 0
    if codings:
        if version == b"1.0":  # RFC 9112 §6.1: a 1.0 message with transfer-encoding has faulty framing
            raise ClientError(400, "an HTTP/1.0 request cannot use transfer-encoding")
        if lengths:  # RFC 9112 §6.3 item 3: both is how requests are smuggled
            raise ClientError(400, "a request cannot have both transfer-encoding and content-length")
        if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:  # RFC 9112 §6.3 item 4, §6.1
            raise ClientError(400, "transfer-encoding must end with chunked, once")
        if len(codings) > 1:  # RFC 9112 §6.1: a coding the server does not understand is 501
            raise ClientError(501, "the router only understands transfer-encoding: chunked")
        length = None
    elif lengths:
        # RFC 9112 §6.3 item 5 / RFC 9110 §8.6: Content-Length = 1*DIGIT; several differing values
        # (or a list) make the length unknowable: 400
        first = lengths[0]
        if not first.isdigit() or (len(lengths) > 1 and any(v != first for v in lengths)):
            raise ClientError(400, "the content-length header is not one number")
        length = int(first)
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


async def _read_body(
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
    try:
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            return status, head + await _relay_chunked(reader), reusable
        if b"content-length" in headers:
            return status, head + await reader.readexactly(int(headers[b"content-length"])), reusable
    except (ValueError, asyncio.LimitOverrunError):
        raise BackendError("sent a malformed body") from None
    return status, head + await reader.read(), False


async def run(
    port: int,
    admin_port: int,
    route_file: Path | None,
    host: str = "127.0.0.1",
    *,
    token: str | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish (≤ 2 s)."""
    router = Router(route_file, token=token, limits=limits)
    proxy = await asyncio.start_server(router.serve_client, host, port, limit=MAX_HEAD, backlog=1024)
    admin = await asyncio.start_server(router.serve_admin, "127.0.0.1", admin_port, limit=MAX_HEAD)
    watcher = asyncio.get_running_loop().create_task(router.watch())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"router listening on {host}:{port}, admin on 127.0.0.1:{admin_port}", file=sys.stderr, flush=True)
    await stop.wait()
    watcher.cancel()
    proxy.close()
    admin.close()
    await router.close_connections(2.0)


RESTART_DELAY_S = 0.2
MAX_RESTARTS = 20
"""Restarts within RESTART_WINDOW_S after which the supervisor gives up (a router that cannot run)."""
RESTART_WINDOW_S = 60.0


def supervise(argv: list[str]) -> int:
    """Run the router as a child and restart it whenever it dies, until SIGTERM/SIGINT.

    A child that exits 3 (it cannot listen: the port was taken) is not restarted in a loop:
    the supervisor gives up after MAX_RESTARTS restarts in RESTART_WINDOW_S.
    """
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts: list[float] = []
    while not stopping:
        child = subprocess.Popen([sys.executable, "-m", "mlship.deploy.router", *argv])
        code = child.wait()
        if stopping:
            break
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
        print(f"router supervisor: the router exited ({code}); restarting it", file=sys.stderr, flush=True)
        if len(restarts) > MAX_RESTARTS:
            print("router supervisor: the router keeps dying; giving up", file=sys.stderr, flush=True)
            return 3
        time.sleep(RESTART_DELAY_S)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlship.deploy.router", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--route-file", type=Path, default=None)
    parser.add_argument("--token-file", type=Path, default=None, help="0600 file holding the admin token")
    parser.add_argument("--max-body", type=int, default=MAX_BODY)
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S)
    parser.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S)
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--max-per-address", type=int, default=MAX_PER_ADDRESS)
    parser.add_argument("--supervise", action="store_true", help="run the router as a child, restart it if it dies")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if args.supervise:
        return supervise([a for a in raw if a != "--supervise"])
    token = args.token_file.read_text().strip() if args.token_file else None
    limits = Limits(
        args.max_body,
        args.header_timeout,
        args.body_timeout,
        args.idle_timeout,
        args.max_connections,
        args.max_per_address,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    try:
        asyncio.run(run(args.port, args.admin_port, args.route_file, args.host, token=token, limits=limits))
    except OSError as exc:
        print(f"router: cannot listen: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
