"""Shadow copies: send live /predict requests to a candidate and compare its answers.

Used by the local router (copies to the shadow color) and by the model server itself on
Kubernetes (`mlship.serving.mirror`, copies to the preview Service). The client only ever
gets the live answer: a copy is offered to a bounded queue *after* the live answer is
written, with `put_nowait`, so it costs the request path one queue insert; when the queue
is full the copy is dropped and counted. A few worker tasks send the copies and compare
(`mlship.traffic.compare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from mlship.traffic.compare import ShadowStats

SHADOW_HEADER = "x-mlship-shadow"
"""Marks a copy (with x-mlship-synthetic) so the candidate does not count it as real traffic."""
QUEUE_SIZE = 1024
WORKERS = 4
COPY_TIMEOUT_S = 10.0


def split_response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a raw HTTP/1.1 response as the router relays it (content-length or chunked)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body, data = b"", rest
        while data:
            line, _, data = data.partition(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            body, data = body + data[:size], data[size + 2 :]
        return status, body
    return status, rest


def copy_head(head: bytes, host: str) -> bytes:
    """The request head for the copy: marked synthetic + shadow, to `host`, kept alive."""
    lines = [
        ln
        for ln in head[:-4].split(b"\r\n")
        if not ln.lower().startswith((b"host:", b"connection:", b"x-mlship-synthetic:", SHADOW_HEADER.encode() + b":"))
    ]
    extra = [b"host: " + host.encode(), b"x-mlship-synthetic: shadow", SHADOW_HEADER.encode() + b": 1"]
    return b"\r\n".join([*lines, *extra]) + b"\r\n\r\n"


class ShadowCopier:
    """The bounded queue and the workers that send copies to `backend` ("host:port") and compare."""

    def __init__(self, backend: str, sample: float, *, queue_size: int = QUEUE_SIZE, workers: int = WORKERS) -> None:
        self.backend = backend
        self.sample = sample
        self.stats = ShadowStats(target=backend, sample=sample)
        self.queue: asyncio.Queue[tuple[bytes, bytes, int, bytes]] = asyncio.Queue(queue_size)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random()

    def wanted(self) -> bool:
        """Copy this request? All of them at sample 1.0, else a random `sample` share."""
        return self.sample >= 1.0 or self._random.random() < self.sample

    def offer(self, head: bytes, body: bytes, live_status: int, live_body: bytes) -> None:
        """Queue one copy without waiting; a full queue drops it (counted): the client never waits."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._work()) for _ in range(self._workers)]
        self.stats.offered += 1
        try:
            self.queue.put_nowait((head, body, live_status, live_body))
        except asyncio.QueueFull:
            self.stats.dropped += 1

    async def _work(self) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        host, _, port = self.backend.rpartition(":")
        while True:
            head, body, live_status, live_body = await self.queue.get()
            started = time.perf_counter()
            status: int | None = None
            answer = b""
            for attempt in (0, 1):
                try:
                    async with asyncio.timeout(COPY_TIMEOUT_S):  # cheaper than wait_for: no task per copy
                        if conn is None:
                            conn = await asyncio.open_connection(host, int(port))
                        conn[1].write(copy_head(head, self.backend) + body)
                        await conn[1].drain()
                        status, answer, reusable = await _read_answer(conn[0])
                    if not reusable:
                        _close(conn)
                        conn = None
                    break
                except Exception:  # noqa: BLE001 - whatever the candidate did, it is its error; a worker never dies
                    if conn is not None:
                        _close(conn)
                    conn = None
                    status = None
                    if attempt == 1:
                        break
            self.stats.record(body, live_status, live_body, status, answer, time.perf_counter() - started)

    def cancel(self) -> None:
        """Stop the workers (copies still queued are abandoned: the shadow ended)."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    with contextlib.suppress(Exception):
        conn[1].close()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, reusable) of one response with a content-length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    reusable = b"close" not in headers.get(b"connection", b"")
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return status, body, reusable
            body += (await reader.readexactly(size + 2))[:-2]
    if b"content-length" in headers:
        return status, await reader.readexactly(int(headers[b"content-length"])), reusable
    return status, await reader.read(), False
