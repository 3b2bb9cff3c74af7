"""Shadow copies and sticky routing in the router, in-process with backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from mlship.deploy import synthetic
from mlship.deploy.router import Route, Router
from mlship.deploy.shadow import render_markdown
from mlship.traffic.compare import Reservoir, ShadowStats
from mlship.traffic.copier import copy_head, split_response
from mlship.traffic.sticky import KEY_HASH_HEADER, body_field, key_bucket, key_hash, parse_sticky

TOKEN = "tok"


class Backend:
    """A /predict server: probability = amount/100 + `shift`, class = probability >= 0.5; remembers heads."""

    def __init__(
        self,
        name: str,
        shift: float = 0.0,
        status: int = 200,
        gate: asyncio.Event | None = None,
        framing: str = "length",
    ) -> None:
        self.name, self.shift, self.status, self.gate, self.framing = name, shift, status, gate, framing
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")),
                    0,
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                if self.gate is not None:
                    await self.gate.wait()  # a shadow that does not answer until the test lets it
                records = json.loads(body or b"{}").get("records", [])
                probs = [min(1.0, r.get("amount", 0) / 100 + self.shift) for r in records]
                reply = json.dumps(
                    {"predictions": [int(p >= 0.5) for p in probs], "probabilities": probs, "color": self.name}
                ).encode()
                if self.framing == "chunked":
                    half = len(reply) // 2
                    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                        half,
                        reply[:half],
                        len(reply) - half,
                        reply[half:],
                    )
                    writer.write(b"HTTP/1.1 %d X\r\nTransfer-Encoding:chunked\r\n\r\n%s" % (self.status, chunks))
                elif self.framing == "close":  # no length: the body ends when the connection does
                    writer.write(b"HTTP/1.1 %d X\r\nconnection: close\r\n\r\n%s" % (self.status, reply))
                    await writer.drain()
                    writer.close()
                    return
                else:
                    head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n" % (self.status, len(reply))
                    writer.write(head + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, **backends: Backend) -> AsyncIterator[tuple[Router, int, dict[str, str]]]:
    addresses = {name: await b.start() for name, b in backends.items()}
    router = Router(tmp_path / "route.json", token=TOKEN)
    proxy = await asyncio.start_server(router.serve_client, "127.0.0.1", 0)
    try:
        yield router, proxy.sockets[0].getsockname()[1], addresses
    finally:
        if router.copier is not None:
            router.copier.cancel()
        proxy.close()
        for b in backends.values():
            assert b.server is not None
            b.server.close()


async def post(port: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status, answer = split_response(raw)
    assert status == 200, raw
    return dict(json.loads(answer))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def settle(router: Router, requests: int, timeout_s: float = 5.0) -> dict[str, Any]:
    """The shadow figures once `requests` copies were handled (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        stats = router.state()["shadow"]
        if stats and stats["requests"] + stats["dropped"] >= requests:
            return dict(stats)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the shadow handled only {router.state()['shadow']}")


# Sticky assignment -----------------------------------------------------------------------


def test_key_buckets_are_stable_and_the_split_over_many_keys_matches_the_weight() -> None:
    route = Route(backends={"blue": "a:1", "green": "b:2"}, weights={"blue": 90, "green": 10})
    keys = [f"user-{i}" for i in range(20_000)]
    first = {k: route.pick(key_bucket(k)) for k in keys}
    for _ in range(3):  # the same key → the same color, every time, while the weights stay
        assert all(route.pick(key_bucket(k)) == first[k] for k in keys[:2000])
    green = sum(1 for c in first.values() if c == "green")
    # sha256 buckets are uniform: the green count is Binomial(20000, 0.10); a p-value under
    # 0.001 would mean the bucket layout does not honour the weight
    assert binomtest(green, len(keys), 0.10).pvalue > 0.001, green
    assert key_bucket("user-1") == int(__import__("hashlib").sha256(b"user-1").hexdigest()[:16], 16) % 10_000


def test_without_a_key_a_split_stays_random_and_one_live_color_takes_everything() -> None:
    route = Route(backends={"blue": "a:1", "green": "b:2"}, weights={"blue": 50, "green": 50})
    picks = Counter(route.pick() for _ in range(2000))
    assert 800 < picks["green"] < 1200  # random: both colors get traffic (Binomial(2000, .5) ± 9 sd)
    single = Route(backends={"blue": "a:1"}, weights={"blue": 100})
    assert {single.pick(b) for b in (0, 5000, 9999)} == {"blue"}


def test_parse_sticky_accepts_header_and_field_and_refuses_the_rest() -> None:
    assert parse_sticky("header:X-User-Id") == ("header", "x-user-id")
    assert parse_sticky("field:customer_id") == ("field", "customer_id")
    assert parse_sticky(None) is None
    for bad in ("cookie:x", "header:", "customer_id"):
        with pytest.raises(ValueError):
            parse_sticky(bad)
    with pytest.raises(ValueError):
        Route.from_dict({"backends": {}, "weights": {}, "sticky": "query:x"})
    assert body_field(b'{"records": [{"customer_id": 7}]}', "customer_id") == "7"
    assert body_field(b'{"customer_id": "c"}', "customer_id") == "c"
    assert body_field(b"not json", "customer_id") is None
    assert body_field(b'{"records": []}', "customer_id") is None


@pytest.mark.parametrize("sticky", ["header:X-User-Id", "field:customer_id"])
def test_router_sends_one_key_to_one_color_and_tells_the_color_the_key_hash(tmp_path: Path, sticky: str) -> None:
    async def scenario() -> None:
        blue, green = Backend("blue"), Backend("green")
        async with rig(tmp_path, blue=blue, green=green) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 70, "green": 30}, sticky=sticky))
            seen: dict[str, set[str]] = {}
            for round_ in range(4):
                for i in range(60):
                    key = f"cust-{i}"
                    record = {"amount": round_, "customer_id": key}
                    answer = await post(port, {"records": [record]}, {"X-User-Id": key})
                    seen.setdefault(key, set()).add(answer["color"])
            assert all(len(colors) == 1 for colors in seen.values()), "a key changed color"
            assert {c for colors in seen.values() for c in colors} == {"blue", "green"}
            hashes = {
                ln.split(b": ")[1].decode()
                for h in blue.heads + green.heads
                for ln in h.split(b"\r\n")
                if ln.lower().startswith(KEY_HASH_HEADER.encode())
            }
            assert hashes == {key_hash(f"cust-{i}") for i in range(60)}  # the hash, never the raw key
            expected = {
                f"cust-{i}": Route(backends=addr, weights=router.route.weights).pick(key_bucket(f"cust-{i}"))
                for i in range(60)
            }
            assert {k: next(iter(v)) for k, v in seen.items()} == expected

    run(scenario())


# Shadow copies ----------------------------------------------------------------------------


def test_shadow_copies_predictions_compares_them_and_clients_get_the_live_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        live, cand = Backend("blue"), Backend("green", shift=0.2)
        async with rig(tmp_path, blue=live, green=cand) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 100}, shadow="green"))
            for amount in range(0, 100, 5):  # 20 requests, 2 rows each
                answer = await post(port, {"records": [{"amount": amount}, {"amount": 1}]})
                assert answer["color"] == "blue"
            # the deploy's own request (marked, with the router's proof) is never copied
            await post(port, {"records": [{"amount": 3}]}, synthetic.headers("verify", TOKEN))
            stats = await settle(router, 20)
            assert stats["requests"] == 20 and stats["offered"] == 20 and stats["dropped"] == 0
            assert stats["compared_rows"] == 40 and stats["errors"] == 0
            # amounts 30..45 flip from class 0 to 1 with +0.2: 4 of 40 rows disagree
            assert stats["agreement"] == pytest.approx(36 / 40)
            amounts = [*range(0, 100, 5), *[1] * 20]
            mean = sum(min(1.0, a / 100 + 0.2) - a / 100 for a in amounts) / 40
            assert stats["abs_diff"]["mean"] == pytest.approx(mean)
            assert stats["abs_diff"]["max"] == pytest.approx(0.2)
            assert stats["latency_ms"]["p50"] is not None
            top = stats["disagreements"]
            assert len(top) == 20 and not top[0]["agree"] and top[0]["record"]["amount"] in (30, 35, 40, 45)
            assert all(b"x-mlship-synthetic: shadow" in h for h in cand.heads)
            assert len(cand.heads) == 20 and len(live.heads) == 21
            assert b"x-mlship-synthetic: verify" in live.heads[-1] and b"proof" not in live.heads[-1]
            assert router.state()["route"]["shadow"] == "green"
            md = render_markdown(stats, live="v1", candidate="v2")
            assert "class agreement: 90.00%" in md and "| 0 (0.3" in md

    run(scenario())


def test_clients_cannot_mark_their_requests_synthetic_or_set_a_key_hash(tmp_path: Path) -> None:
    """Only the deploy (holding the router's token) can hide a request from the prediction log and shadow."""

    async def scenario() -> None:
        live, cand = Backend("blue"), Backend("green")
        async with rig(tmp_path, blue=live, green=cand) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 100}, shadow="green"))
            forged = [
                {"x-mlship-synthetic": "smoke"},
                {"X-Mlship-Synthetic": "verify", "x-mlship-key-hash": "0123456789abcdef"},
                {"x-mlship-synthetic": "verify", "x-mlship-synthetic-proof": synthetic.proof("guess", "verify")},
                {"x-mlship-synthetic": "verify", "x-mlship-synthetic-proof": synthetic.proof(TOKEN, "smoke")},
                {"x-mlship-synthetic-proof": synthetic.proof(TOKEN, "verify")},
                {"x-mlship-key-hash": "0123456789abcdef"},
            ]
            for headers in forged:
                await post(port, {"records": [{"amount": 1}]}, headers)
            stats = await settle(router, len(forged))
            assert stats["requests"] == len(forged), "each one is copied like any client request"
            assert len(live.heads) == len(forged)
            assert not any(b"x-mlship-" in h.lower() for h in live.heads), live.heads
            assert all(b"x-mlship-key-hash" not in h.lower() for h in cand.heads)

    run(scenario())


def test_a_sample_copies_a_share_and_a_full_queue_drops_copies_without_slowing_clients(tmp_path: Path) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        live, stuck = Backend("blue"), Backend("green", gate=gate)
        async with rig(tmp_path, blue=live, green=stuck) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 100}, shadow="green", sample=0.5))
            assert router.copier is not None
            router.copier.queue = asyncio.Queue(2)  # a tiny queue: most copies must be dropped

            async def clients() -> None:
                for _ in range(200):
                    await post(port, {"records": [{"amount": 10}]})

            # the shadow answers nothing until the clients are done: had a client waited for a
            # copy, this would time out
            await asyncio.wait_for(clients(), 30)
            stats = router.state()["shadow"]
            assert 60 < stats["offered"] < 140  # Binomial(200, 0.5) within ±5.6 sd
            # accepted = the queue (2) + one copy in hand per worker (4), the rest dropped and counted
            assert stats["dropped"] == stats["offered"] - 2 - 4
            assert stats["requests"] == 0 and stats["queued"] == 6, "accepted copies not answered yet: waiting"
            gate.set()
            stats = await settle(router, stats["offered"])
            assert stats["requests"] == 6 and stats["errors"] == 0 and stats["queued"] == 0

    run(scenario())


def test_a_failing_shadow_counts_errors_and_a_promoted_route_stops_copying(tmp_path: Path) -> None:
    async def scenario() -> None:
        live, broken = Backend("blue"), Backend("green", status=500)
        async with rig(tmp_path, blue=live, green=broken) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 100}, shadow="green"))
            for _ in range(5):
                await post(port, {"records": [{"amount": 1}]})
            stats = await settle(router, 5)
            assert stats["errors"] == 5 and stats["compared_rows"] == 0 and stats["agreement"] is None
            router.set_route(Route(backends=addr, weights={"green": 100}, shadow="green"))  # shadow color now live
            assert router.copier is None and router.state()["shadow"] is None
            reloaded = Router(tmp_path / "route.json")
            assert reloaded.route.shadow == "green" and reloaded.copier is None

    run(scenario())


def test_a_route_file_with_a_shadow_copies_again_after_a_restart(tmp_path: Path) -> None:
    route = Route(backends={"blue": "127.0.0.1:1", "green": "127.0.0.1:2"}, weights={"blue": 100}, shadow="green")
    Router(tmp_path / "route.json").set_route(route)
    restarted = Router(tmp_path / "route.json")
    assert restarted.copier is not None and restarted.copier.backend == "127.0.0.1:2"
    assert Route.from_dict(route.to_dict()) == route
    with pytest.raises(ValueError):
        Route.from_dict({**route.to_dict(), "sample": 0})


def test_stats_rank_flipped_classes_first_and_count_live_and_candidate_failures() -> None:
    stats = ShadowStats()
    request = json.dumps({"records": [{"a": 1}, {"a": 2}]}).encode()
    live = json.dumps({"predictions": [0, 1], "probabilities": [0.49, 0.9]}).encode()
    cand = json.dumps({"predictions": [1, 1], "probabilities": [0.51, 0.5]}).encode()
    stats.record(request, 200, live, 200, cand, 0.01)
    out = stats.to_dict()
    assert out["disagreements"][0]["record"] == {"a": 1}  # flipped class beats the larger gap
    assert out["abs_diff"]["max"] == pytest.approx(0.4) and out["agreement"] == 0.5
    stats.record(request, 503, b"", 200, cand, 0.01)
    stats.record(request, 200, live, None, b"", 0.01)
    stats.record(request, 200, live, 422, b"{}", 0.01)
    stats.record(request, 200, live, 200, b"not json", 0.01)
    stats.record(request, 200, live, 200, json.dumps({"predictions": [1], "probabilities": [0.1]}).encode(), 0.01)
    out = stats.to_dict()
    assert out["live_errors"] == 1 and out["errors"] == 4 and out["requests"] == 6
    lists = ShadowStats()
    two = json.dumps({"predictions": ["x"], "probabilities": [[0.2, 0.8]]}).encode()
    other = json.dumps({"predictions": ["x"], "probabilities": [[0.5, 0.5]]}).encode()
    lists.record(b'{"records": [{}]}', 200, two, 200, other, 0.0)
    assert lists.to_dict()["abs_diff"]["max"] == pytest.approx(0.3)


def test_reservoir_quantiles_and_helpers() -> None:
    r = Reservoir(size=100, seed=1)
    assert r.quantile(0.5) is None
    for v in range(1000):
        r.add(float(v))
    assert len(r.values) == 100 and 800 < (r.quantile(0.99) or 0) <= 999
    assert split_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n") == (
        200,
        b"abcde",
    )
    head = copy_head(b"POST /predict HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n", "127.0.0.1:9")
    assert b"host: 127.0.0.1:9" in head and b"connection" not in head and b"x-mlship-shadow: 1" in head


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_shadow_answers_in_any_http_framing_are_compared(tmp_path: Path, framing: str) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, blue=Backend("blue"), green=Backend("green", framing=framing)) as (router, port, addr):
            router.set_route(Route(backends=addr, weights={"blue": 100}, shadow="green"))
            for amount in (10, 60, 90):
                await post(port, {"records": [{"amount": amount}]})
            stats = await settle(router, 3)
            assert stats["compared_rows"] == 3 and stats["agreement"] == 1.0 and stats["errors"] == 0

    run(scenario())


def test_an_unreachable_shadow_counts_errors_and_never_fails_a_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, blue=Backend("blue")) as (router, port, addr):
            closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            gone = f"127.0.0.1:{closed.sockets[0].getsockname()[1]}"
            closed.close()
            await closed.wait_closed()
            router.set_route(Route(backends={**addr, "green": gone}, weights={"blue": 100}, shadow="green"))
            for _ in range(4):
                assert (await post(port, {"records": [{"amount": 1}]}))["color"] == "blue"
            stats = await settle(router, 4)
            assert stats["errors"] == 4 and stats["requests"] == 4 and stats["compared_rows"] == 0

    run(scenario())


def test_the_status_line_counts_rows_and_shows_the_candidates_p99_its_queue_and_a_refusal() -> None:
    """Issue 26: it said "1070 compared" for 327 rows and "0 errors, 0 dropped" for a 4 s p99 with 362 waiting."""
    from mlship.commands._deploy_status import _shadow_line

    stats = ShadowStats(sample=1.0)
    request = json.dumps({"records": [{"a": 1}, {"a": 2}, {"a": 3}]}).encode()
    answer = json.dumps({"predictions": [0, 1, 1], "probabilities": [0.1, 0.9, 0.8]}).encode()
    for _ in range(5):
        stats.offered += 1
        stats.record(request, 200, answer, 200, answer, 4.0)
    stats.offered += 362
    figures = stats.to_dict()
    assert figures["requests"] == 5 and figures["compared_rows"] == 15 and figures["queued"] == 362
    shadow = {
        "release": {"name": "card-fraud", "version": "3"},
        "color": "green",
        "sample": 1.0,
        "figures": figures,
        "promotion_refused": "the shadow's p99 latency (4000 ms, 5 copies) exceeds 250 ms",
    }
    line = _shadow_line(shadow)
    assert "15 rows compared (5 copies answered)" in line and "class agreement 100.00%" in line
    assert "candidate p99 4000 ms, 0 errors, 362 copies waiting, 0 dropped" in line
    assert line.endswith(
        "--promote-shadow would be refused: the shadow's p99 latency (4000 ms, 5 copies) exceeds 250 ms"
    )
