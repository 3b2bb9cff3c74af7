"""The real router process with its default limits under a flood of idle sockets from one address.

The finding this guards: 1,024 idle keep-alive sockets from one local user filled the router
and every well-formed client got 503 (562 of 562). Here 1,100 sockets from 127.0.0.2 (any
local user can bind a 127/8 address) go idle — half silent from the start, half after one
request — while 127.0.0.1 sends 200 requests; it must get 200 answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlship.deploy.targets.local import free_port

FLOOD = 1100
REQUESTS = 200


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    writer.close()


async def _idle(port: int, source: str, one_request: bool) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        if one_request:
            writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(1), 5)
    except (OSError, TimeoutError):
        return None
    return writer


@pytest.mark.slow
def test_a_flood_of_idle_sockets_from_one_address_leaves_another_address_0_failures(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port, admin = free_port(), free_port()
        route = tmp_path / "route.json"
        route.write_text(
            json.dumps(
                {"backends": {"blue": f"127.0.0.1:{backend.sockets[0].getsockname()[1]}"}, "weights": {"blue": 100}}
            )
        )
        token = tmp_path / "router.token"
        token.write_text("t")
        token.chmod(0o600)
        argv = [sys.executable, "-m", "mlship.deploy.router", "--port", str(port), "--admin-port", str(admin)]
        router = subprocess.Popen([*argv, "--route-file", str(route), "--token-file", str(token)])
        held: list[asyncio.StreamWriter] = []
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}/x")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, "the router did not start"
                    await asyncio.sleep(0.1)
                for i in range(0, FLOOD, 50):  # bounded: FLOOD sockets, opened 50 at a time
                    batch = [_idle(port, "127.0.0.2", one_request=(i // 50) % 2 == 1) for _ in range(50)]
                    held += [w for w in await asyncio.gather(*batch) if w is not None]
                statuses = []
                for _ in range(REQUESTS):  # a new connection each time, like the finding's clients
                    async with httpx.AsyncClient(timeout=10) as fresh:
                        try:
                            statuses.append((await fresh.get(f"http://127.0.0.1:{port}/x")).status_code)
                        except httpx.HTTPError as exc:
                            statuses.append(exc.__class__.__name__)
                state = (
                    await client.get(f"http://127.0.0.1:{admin}/state", headers={"authorization": "Bearer t"})
                ).json()
            assert statuses == [200] * REQUESTS, {s: statuses.count(s) for s in set(statuses)}
            print(
                f"127.0.0.1: {statuses.count(200)} of {REQUESTS} answered 200; router: {state['connections']} open, "
                f"busiest {state['busiest']}, {state['refused_address']} refused for the address share, "
                f"{state['evicted_idle']} idle evicted, {state['refused_connections']} refused saturated"
            )
            assert state["busiest"] is None or state["busiest"][1] <= 256
        finally:
            for w in held:
                w.close()
            router.terminate()
            router.wait(10)
            backend.close()

    asyncio.run(scenario())
