"""Failover: probe the live color's /ready and make the warm standby live when it stops answering.

The route may name a `standby`, the previous color kept warm for the rollback window. When
the live color fails its `/ready` probes while the standby answers them, the router makes the
standby live and records why (`failover` in its state); the controller then adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, Protocol

from mlship import notify
from mlship.deploy.router.route import Route

PROBE_INTERVAL_S = 0.25
FAILOVER_AFTER = 2
"""Consecutive failed /ready probes of the live color (connection refused: it is gone) before the standby takes over."""
FAILOVER_AFTER_SLOW = 8
"""The same when the live color still accepts connections but does not answer /ready with 200
(slow, stuck, or saying not ready): more patience, so a busy machine does not flap colors."""


class Switchable(Protocol):
    """What the watcher needs of a router: its route, a probe count, and the switch."""

    route: Route
    probes: int

    def set_route(self, route: Route, *, failover: dict[str, Any] | None = None) -> None: ...


async def watch_live(router: Switchable, interval_s: float = PROBE_INTERVAL_S) -> None:
    """Probe the live color's /ready; after FAILOVER_AFTER failures make a ready standby live."""
    failures = 0
    while True:
        await asyncio.sleep(interval_s)
        route = router.route
        live = route.live()
        if live is None or route.fallback(live) is None:
            failures = 0
            continue
        why = await probe(route.backends[live])
        router.probes += 1
        if why is None:
            failures = 0
            continue
        failures += 1
        standby = route.fallback(live)
        needed = FAILOVER_AFTER if why == "is unreachable" else FAILOVER_AFTER_SLOW
        if failures < needed or standby is None or await probe(route.backends[standby]) is not None:
            continue
        if router.route is not route:  # the controller switched meanwhile: its route wins
            continue
        record = {"from": live, "to": standby, "reason": f"{live} {why}", "at": time.time()}
        router.set_route(Route(backends=dict(route.backends), weights={standby: 100}), failover=record)
        print(f"router: failover {live} → {standby}: {live} {why}", file=sys.stderr, flush=True)
        notify.failover(record)  # from a daemon thread: the watch loop and requests never wait for it
        failures = 0


async def probe(backend: str, timeout_s: float = 1.0) -> str | None:
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
