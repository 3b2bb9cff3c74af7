"""Serving throughput and latency: `mlship serve` vs `mlflow models serve`, same model, same load.

    uv run python benchmarks/serving.py [--duration 8] [--connections 1,4,16,64] [--rate 500]

One trained model (the synthetic card-fraud data, the default gradient-boosting pipeline)
is exported to a model directory; both servers load that directory. The load generator is
a separate process running raw asyncio (uvloop) HTTP/1.1 keep-alive clients that post
pre-encoded one-record bodies, so it spends microseconds per request and is not the
bottleneck (its own ceiling is measured first against a static endpoint). Two loads:
  closed loop  N connections, each sending its next request as soon as the answer arrives
               (throughput and latency at that concurrency);
  open loop    a fixed rate (default 500 requests/s) whatever the server's speed, so a slow
               server cannot hide its queueing (latency measured from the scheduled send time).
A failed request is a connection error or any non-200 answer. Loopback only, bounded load.
Results go to benchmarks/results/serving.json.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
RECORDS = [
    {
        "merchant_category": "grocery",
        "country": "US",
        "device_type": "mobile",
        "amount": 12.5,
        "hour": 9,
        "account_age_days": 400,
        "num_tx_24h": 2,
    },
    {
        "merchant_category": "online_gaming",
        "country": "BR",
        "device_type": "desktop",
        "amount": 950.0,
        "hour": 3,
        "account_age_days": 12,
        "num_tx_24h": 9,
    },
]


# Load generator (runs in its own process) ------------------------------------------------------


def _request(port: int, path: str, body: bytes | None) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(
    port: int, requests: list[bytes], deadline: float, lat: list[float], fails: list[int], schedule: Any
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while True:
            planned = schedule() if schedule else time.perf_counter()
            if planned is None or planned >= deadline:
                return
            now = time.perf_counter()
            if planned > now:
                await asyncio.sleep(planned - now)
            writer.write(requests[i % len(requests)])
            i += 1
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                fails[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            lat.append(time.perf_counter() - planned)
            if status != 200:
                fails[0] += 1
    finally:
        writer.close()


async def _load(
    port: int, path: str, bodies: list[bytes | None], connections: int, duration: float, rate: float
) -> dict[str, Any]:
    requests = [_request(port, path, b) for b in bodies]
    warm_until = time.perf_counter() + min(1.0, duration / 4)
    lat: list[float] = []
    fails = [0]
    # warm-up (not counted)
    await asyncio.gather(*(_connection(port, requests, warm_until, [], [0], None) for _ in range(connections)))
    start = time.perf_counter()
    deadline = start + duration
    schedule = None
    if rate > 0:  # open loop: one shared clock hands out send times at a fixed rate
        counter = iter(range(10**9))
        interval = 1.0 / rate

        def schedule() -> float:
            return start + next(counter) * interval

    await asyncio.gather(*(_connection(port, requests, deadline, lat, fails, schedule) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    lat.sort()
    n = len(lat)

    def pct(q: float) -> float:
        return round(lat[min(n - 1, int(q * n))] * 1000, 2) if n else float("nan")

    return {
        "connections": connections,
        "target_rate": rate or None,
        "requests": n,
        "failed": fails[0],
        "seconds": round(elapsed, 2),
        "throughput_rps": round(n / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if n else None,
    }


def _load_process(args: tuple[int, str, list[bytes | None], int, float, float], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_load(*args)))


def run_load(
    port: int, path: str, bodies: list[bytes | None], connections: int, duration: float, rate: float = 0.0
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=((port, path, bodies, connections, duration, rate), queue))
    proc.start()
    result = queue.get(timeout=duration + 120)
    proc.join()
    return result
