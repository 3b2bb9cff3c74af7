"""Shadow traffic: copy live /predict requests to a candidate and compare its answers.

Used by the local router (copies to the shadow color) and by the model server itself on
Kubernetes (`mlship.serving.mirror`, copies to the preview Service). The client only ever
gets the live answer: a copy is offered to a bounded queue *after* the live answer is
written, with `put_nowait`, so it costs the request path one queue insert; when the queue
is full the copy is dropped and counted. A few worker tasks send the copies and compare.

Comparison per copied request, over the rows both answered: agreement of the predicted
classes, absolute difference of the probabilities (mean and max exact; p99 over a bounded
reservoir), the candidate's errors and latency (p50/p99 over a reservoir), and the
`TOP_DISAGREEMENTS` rows where the two differ most (the request record and both answers).

Sticky routing keys are hashed here too (`key_bucket`): sha256 of the key, a stable bucket
0..9999, so one key always lands on one color while the weights stay the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

SHADOW_HEADER = "x-mlship-shadow"
"""Marks a copy (with x-mlship-synthetic) so the candidate does not count it as real traffic."""
KEY_HASH_HEADER = "x-mlship-key-hash"
"""The sticky key's hash, forwarded to the color so its access log can record it (never the raw key)."""
QUEUE_SIZE = 1024
WORKERS = 4
RESERVOIR = 10_000
TOP_DISAGREEMENTS = 20
COPY_TIMEOUT_S = 10.0
BUCKETS = 10_000


def key_hash(key: str) -> str:
    """A stable, non-reversible id of a routing key (16 hex digits of sha256)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def key_bucket(key: str) -> int:
    """The key's stable bucket in 0..9999 (sha256, so the same on every machine and run)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % BUCKETS


def parse_sticky(spec: str | None) -> tuple[str, str] | None:
    """`header:X-User-Id` → ("header", "x-user-id"); `field:customer_id` → ("field", "customer_id")."""
    if not spec:
        return None
    kind, sep, name = spec.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in ("header", "field") or not name:
        raise ValueError(f"sticky key {spec!r} is not header:NAME or field:NAME")
    return kind, name.lower() if kind == "header" else name


def body_field(body: bytes, name: str) -> str | None:
    """The value of `name` in the first record of a /predict body ({"records": [...]}, or one record)."""
    try:
        raw = orjson.loads(body)
    except ValueError:
        return None
    record = raw
    if isinstance(raw, dict) and isinstance(raw.get("records"), list):
        record = raw["records"][0] if raw["records"] else None
    if not isinstance(record, dict) or record.get(name) is None:
        return None
    return str(record[name])


class Reservoir:
    """A uniform sample of at most `size` values (Vitter's algorithm R) for quantiles."""

    def __init__(self, size: int = RESERVOIR, seed: int | None = None) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        j = self._random.randrange(self.seen)
        if j < self.size:
            self.values[j] = value

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


@dataclass
class ShadowStats:
    """What the shadow has shown so far; `to_dict()` is what the admin API, status and reports carry."""

    target: str = ""
    sample: float = 1.0
    started: float = field(default_factory=time.time)
    offered: int = 0
    dropped: int = 0
    requests: int = 0
    compared_rows: int = 0
    agreed_rows: int = 0
    errors: int = 0
    live_errors: int = 0
    diff_sum: float = 0.0
    diff_max: float = 0.0
    diffs: Reservoir = field(default_factory=Reservoir)
    latency: Reservoir = field(default_factory=Reservoir)
    top: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _seq: int = 0

    def record(
        self,
        request: bytes,
        live_status: int,
        live_body: bytes,
        status: int | None,
        body: bytes,
        seconds: float,
    ) -> None:
        """One copy's outcome: `status` None means the candidate could not be reached."""
        self.requests += 1
        self.latency.add(seconds * 1000.0)
        if not 200 <= live_status < 300:
            self.live_errors += 1  # nothing to compare with; the candidate's own failure still counts
            self.errors += status is None or status >= 500
            return
        if status is None or not 200 <= status < 300:
            self.errors += 1  # unreachable, or refused / failed what live answered
            return
        try:
            live, cand = orjson.loads(live_body), orjson.loads(body)
            records = _records(request)
            self._compare(records, live, cand)
        except (ValueError, TypeError, KeyError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            self.errors += 1  # a candidate answer that does not parse is its error

    def _compare(self, records: list[Any], live: dict[str, Any], cand: dict[str, Any]) -> None:
        live_p, cand_p = live["probabilities"], cand["probabilities"]
        live_y, cand_y = live["predictions"], cand["predictions"]
        if len(cand_p) != len(live_p) or len(cand_y) != len(live_y):
            raise ValueError("the candidate answered a different number of rows")
        for i, (a, b) in enumerate(zip(live_p, cand_p, strict=True)):
            diff = _distance(a, b)
            self.compared_rows += 1
            agreed = live_y[i] == cand_y[i]
            self.agreed_rows += agreed
            self.diff_sum += diff
            self.diff_max = max(self.diff_max, diff)
            self.diffs.add(diff)
            weight = diff + (1.0 if not agreed else 0.0)  # a flipped class ranks above any probability gap
            full = len(self.top) >= TOP_DISAGREEMENTS
            if full and weight <= self.top[0][0]:
                continue  # the common case: not among the most different rows, so no row record is built
            row = {
                "record": records[i] if i < len(records) else None,
                "live": {"prediction": live_y[i], "probability": a},
                "candidate": {"prediction": cand_y[i], "probability": b},
                "abs_diff": round(diff, 6),
                "agree": agreed,
            }
            self._seq += 1
            item = (weight, self._seq, row)
            if full:
                heapq.heapreplace(self.top, item)
            else:
                heapq.heappush(self.top, item)

    def to_dict(self) -> dict[str, Any]:
        p = self.diffs.quantile
        lat = self.latency.quantile
        rows = self.compared_rows
        return {
            "target": self.target,
            "sample": self.sample,
            "started": self.started,
            "offered": self.offered,
            "dropped": self.dropped,
            "requests": self.requests,
            "queued": max(0, self.offered - self.dropped - self.requests),
            "compared_rows": rows,
            "agreement": self.agreed_rows / rows if rows else None,
            "abs_diff": {
                "mean": self.diff_sum / rows if rows else None,
                "p99": p(0.99),
                "max": self.diff_max if rows else None,
            },
            "errors": self.errors,
            "live_errors": self.live_errors,
            "latency_ms": {"p50": lat(0.5), "p99": lat(0.99)},
            "disagreements": [row for _, _, row in sorted(self.top, key=lambda t: (-t[0], t[1]))],
        }


def _records(request: bytes) -> list[Any]:
    raw = orjson.loads(request) if request else {}
    if isinstance(raw, dict) and isinstance(raw.get("records"), list):
        return list(raw["records"])
    return [raw] if isinstance(raw, dict) else list(raw)


def _distance(a: Any, b: Any) -> float:
    """|a - b| for one row's probability, or the largest per-class gap when rows are lists."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise ValueError("class counts differ")
        return max((abs(float(x) - float(y)) for x, y in zip(a, b, strict=True)), default=0.0)
    return abs(float(a) - float(b))


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


def render_markdown(summary: dict[str, Any], *, live: str = "live", candidate: str = "candidate") -> str:
    """shadow.md: the verdict numbers first, then the rows where the two disagree most."""

    def num(value: Any, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    diff, lat = summary["abs_diff"], summary["latency_ms"]
    lines = [
        f"# Shadow: {candidate} vs {live}",
        "",
        f"- copies answered: {summary['requests']} (offered {summary['offered']}, "
        f"waiting {summary.get('queued', 0)}, dropped {summary['dropped']}, sample {summary['sample']:g})",
        f"- rows compared: {summary['compared_rows']}; class agreement: {num(summary['agreement'], '.2%')}",
        f"- |probability difference|: mean {num(diff['mean'])}, p99 {num(diff['p99'])}, max {num(diff['max'])}",
        f"- candidate errors: {summary['errors']}; latency p50 {num(lat['p50'], '.1f')} ms, "
        f"p99 {num(lat['p99'], '.1f')} ms",
        "",
        "## Rows where they disagree most",
        "",
    ]
    rows = summary["disagreements"]
    if not rows:
        lines.append("(none yet)")
    else:
        lines += ["| live | candidate | abs diff | record |", "|---|---|---|---|"]
        for r in rows:
            rec = json.dumps(r["record"], sort_keys=True).replace("|", "\\|")
            lv, cd = r["live"], r["candidate"]
            lines.append(
                f"| {lv['prediction']} ({lv['probability']}) | {cd['prediction']} ({cd['probability']}) "
                f"| {r['abs_diff']} | `{rec}` |"
            )
    return "\n".join(lines) + "\n"
