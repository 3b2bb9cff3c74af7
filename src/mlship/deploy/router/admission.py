"""What one client may cost the router, and the fair share of its connections.

Request bodies over `max_body` get 413 before any of the body is read; a request head must
arrive within the header timeout, a body within the body timeout, and a kept-alive
connection that stays silent is closed after the idle timeout. Fair share: at most
`max_per_address` connections from one client address (more get 429), at most
`max_connections` in all; past half of that the idle timeout shrinks with the load, and at
the cap a new client takes the place of an idle connection (waiting for its next request)
of the address holding the most, so idle sockets cannot lock others out. Only when every
connection is busy with a request does a newcomer get 503 ("saturated").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

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


class Conn:
    """One client connection's place in the router's accounting."""

    __slots__ = ("address", "open", "writer")

    def __init__(self, address: str, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self.writer = writer
        self.open = True


class Admission:
    """The open client connections, per address and idle, and who was refused or evicted."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.connections = 0
        self.per_address: dict[str, int] = {}
        self.open: dict[Conn, None] = {}
        self.idle: dict[Conn, None] = {}
        """Connections waiting for their next request head, oldest first (the ones a newcomer may replace)."""
        self.refused_connections = 0
        self.refused_address = 0
        self.evicted_idle = 0
        self.saturated_at: float | None = None

    def state(self) -> dict[str, Any]:
        """The connection figures of the router's state (admin API, `mlship status`)."""
        return {
            "connections": self.connections,
            "refused_connections": self.refused_connections,
            "refused_address": self.refused_address,
            "evicted_idle": self.evicted_idle,
            "idle_connections": len(self.idle),
            "idle_timeout_s": round(self.limits.idle_timeout(self.connections), 3),
            "busiest": max(self.per_address.items(), key=lambda kv: kv[1], default=None),
            "saturated_at": self.saturated_at,
        }

    def admit(self, writer: asyncio.StreamWriter) -> Conn | tuple[int, str]:
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
        conn = Conn(address, writer)
        self.open[conn] = None
        return conn

    def release(self, conn: Conn) -> None:
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

    async def close_all(self, grace_s: float) -> None:
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

    def _close(self, conn: Conn) -> None:
        self.release(conn)
        with contextlib.suppress(Exception):
            conn.writer.close()
