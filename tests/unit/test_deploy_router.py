"""The router's HTTP handling in-process: framing, routing, counters, admin API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from mlship.deploy.router import BUCKETS_MS, Counters, Limits, Route, Router

TOKEN = "s3cret-token"
AUTH = f"authorization: Bearer {TOKEN}\r\n"


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers by path: /chunked (chunked body), /close (no length, closes), /empty (204), else echo."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            path = head.split(b" ")[1]
            if path == b"/chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                )
            elif path == b"/close":
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbye")
                await writer.drain()
                writer.close()
                return
            elif path == b"/empty":
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif path == b"/boom":
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            elif path == b"/garbage":
                writer.write(b"NOT HTTP\r\n\r\n")
            else:
                reply = b"echo:" + body
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(reply), reply))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


class Rig:
    def __init__(self, router: Router, port: int, admin: int, backend_port: int) -> None:
        self.router, self.port, self.admin, self.backend_port = router, port, admin, backend_port

    async def raw(self, data: bytes, port: int | None = None) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port or self.port)
        writer.write(data)
        if not data:
            writer.write_eof()
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return out


@contextlib.asynccontextmanager
async def make_rig(tmp_path: Path, limits: Limits | None = None) -> AsyncIterator[Rig]:
    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    router = Router(tmp_path / "route.json", token=TOKEN, limits=limits)
    proxy = await asyncio.start_server(router.serve_client, "127.0.0.1", 0)
    admin = await asyncio.start_server(router.serve_admin, "127.0.0.1", 0)
    bport = back.sockets[0].getsockname()[1]
    router.set_route(Route(backends={"blue": f"127.0.0.1:{bport}"}, weights={"blue": 100}))
    try:
        yield Rig(router, proxy.sockets[0].getsockname()[1], admin.sockets[0].getsockname()[1], bport)
    finally:
        for server in (back, proxy, admin):
            server.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n".encode()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_router_relays_every_framing_and_counts_per_color(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            assert (await r.raw(get("/chunked"))).endswith(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            assert (await r.raw(get("/close"))).endswith(b"bye")
            assert (await r.raw(get("/empty"))).startswith(b"HTTP/1.1 204")
            assert b"200 OK" in await r.raw(
                b"HEAD /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            )
            chunked = (
                b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
            )
            assert (await r.raw(chunked)).endswith(b"echo:abc")
            # keep-alive: two requests on one connection, HTTP/1.0 without keep-alive closes
            two = (
                b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nA"
                b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\nB"
            )
            both = await r.raw(two)
            assert b"echo:A" in both and both.endswith(b"echo:B")
            assert (await r.raw(b"GET /x HTTP/1.0\r\n\r\n")).endswith(b"echo:")
            assert b"500" in await r.raw(get("/boom"))
            assert b"502" in await r.raw(get("/garbage"))
            counters = r.router.counters["blue"]
            assert counters.requests == 10 and counters.errors == 2
            assert sum(counters.buckets) == 10

    run(scenario())


def test_no_live_color_is_503_and_an_unreachable_color_is_a_counted_502(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            r.router.set_route(Route())
            assert b"503" in await r.raw(get("/x"))
            r.router.set_route(Route(backends={"green": "127.0.0.1:1"}, weights={"green": 100}))
            assert b"502" in await r.raw(get("/x"))
            assert r.router.counters["green"].errors == 1

    run(scenario())


def test_admin_switches_atomically_persists_and_rejects_nonsense(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            body = json.dumps({"backends": {"green": f"127.0.0.1:{r.backend_port}"}, "weights": {"green": 100}})
            post = f"POST /route HTTP/1.1\r\nhost: x\r\n{AUTH}content-length: {len(body)}\r\n\r\n{body}".encode()
            unauthorized = f"POST /route HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n{body}".encode()
            assert b"401" in await r.raw(unauthorized, r.admin), "no token, no route change"
            wrong = unauthorized.replace(b"\r\n", b"\r\nauthorization: Bearer nope\r\n", 1)
            assert b"401" in await r.raw(wrong, r.admin)
            assert r.router.route.weights == {"blue": 100}
            assert b"200 OK" in await r.raw(post, r.admin)
            assert r.router.route.weights == {"green": 100}
            assert json.loads((tmp_path / "route.json").read_text())["weights"] == {"green": 100}
            assert Router(tmp_path / "route.json").route.weights == {"green": 100}, "a restart restores the route"
            got = await r.raw(f"GET /state HTTP/1.1\r\nhost: x\r\n{AUTH}\r\n".encode(), r.admin)
            state = json.loads(got.split(b"\r\n\r\n", 1)[1])
            assert state["route"]["weights"] == {"green": 100} and state["buckets_ms"] == list(BUCKETS_MS)
            bad = f"POST /route HTTP/1.1\r\nhost: x\r\n{AUTH}content-length: 5\r\n\r\n{{nope".encode()
            assert b"400" in await r.raw(bad, r.admin)
            assert b"404" in await r.raw(f"GET /other HTTP/1.1\r\nhost: x\r\n{AUTH}\r\n".encode(), r.admin)
            assert await r.raw(b"", r.admin) == b""

    run(scenario())


def test_weights_split_traffic_in_proportion() -> None:
    route = Route(backends={"blue": "a:1", "green": "b:2"}, weights={"blue": 90, "green": 10})
    picks = [route.pick() for _ in range(5000)]
    share = picks.count("green") / len(picks)
    assert 0.07 < share < 0.13
    assert Route(backends={"blue": "a:1"}, weights={"blue": 0}).pick() is None
    assert Route(backends={}, weights={"blue": 100}).pick() is None


def test_counters_put_slow_requests_in_the_overflow_bucket() -> None:
    c = Counters()
    c.observe(200, 0.0005)
    c.observe(503, 60.0)
    assert c.buckets[0] == 1 and c.buckets[-1] == 1 and c.errors == 1
    assert c.to_dict()["requests"] == 2


def test_router_main_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from mlship.deploy.router import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["--port", str(s.getsockname()[1]), "--admin-port", "0"]) == 3
    assert "cannot listen" in capsys.readouterr().err


def test_a_router_without_a_token_refuses_every_admin_call(tmp_path: Path) -> None:
    router = Router(tmp_path / "route.json")
    assert not router.authorized(b"GET /state HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \r\n\r\n")


def test_an_oversized_body_is_413_before_it_is_read(tmp_path: Path) -> None:
    """A declared 300 MB body is refused at the head: the router never buffers it."""

    async def scenario() -> None:
        async with make_rig(tmp_path, Limits(max_body=1000)) as r:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 300000000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # answered and closed without the body
            writer.close()
            assert answer.startswith(b"HTTP/1.1 413") and b"larger than 1000 bytes" in answer
            chunked = (
                b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"3e8\r\n"
                + b"a" * 1000
                + b"\r\n"
                + b"3e8\r\n"
            )
            assert (await r.raw(chunked)).startswith(b"HTTP/1.1 413")
            assert b"echo:" + b"a" * 1000 in await r.raw(
                b"POST /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1000\r\n\r\n" + b"a" * 1000
            )
            assert b"400" in await r.raw(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: lots\r\n\r\n")
            assert "blue" not in r.router.counters or r.router.counters["blue"].errors == 0

    run(scenario())


def test_slow_heads_slow_bodies_and_idle_connections_are_cut(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = Limits(header_timeout_s=0.3, body_timeout_s=0.3, idle_timeout_s=0.3)
        async with make_rig(tmp_path, limits) as r:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n")  # the head never ends
            await writer.drain()
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")  # the body never ends
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408") and b"body" in answer
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")  # one request, then silence
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # closed after the idle timeout
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"echo:")
            writer.close()

    run(scenario())


def test_connections_are_bounded_and_errors_say_what_without_internals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_rig(tmp_path, Limits(max_connections=1)) as r:
            _, held = await asyncio.open_connection("127.0.0.1", r.port)
            held.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")  # busy: mid-body
            await held.drain()
            for _ in range(3000):  # until the router holds it as busy (the event, not a guess at its timing)
                if r.router.connections == 1 and not r.router.idle:
                    break
                await asyncio.sleep(0.01)
            assert r.router.connections == 1 and not r.router.idle
            refused = await r.raw(get("/x"))
            assert refused.startswith(b"HTTP/1.1 503") and b"saturated" in refused and b"retry-after: 1" in refused
            assert r.router.state()["saturated_at"] is not None
            held.close()
            for _ in range(3000):  # until the router has seen it close and freed the slot
                if r.router.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert r.router.connections == 0
            r.router.set_route(Route(backends={"green": "127.0.0.1:1"}, weights={"green": 100}))
            failed = await r.raw(get("/x"))
            assert failed.startswith(b"HTTP/1.1 502")
            body = failed.split(b"\r\n\r\n", 1)[1]
            assert b"green did not answer" in body
            assert b"127.0.0.1" not in body and b"Error" not in body, "no addresses or exception names"

    run(scenario())


def test_a_request_the_live_color_cannot_answer_goes_to_the_standby(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            backends = {"green": "127.0.0.1:1", "blue": f"127.0.0.1:{r.backend_port}"}
            r.router.set_route(Route(backends=backends, weights={"green": 100}, standby="blue"))
            assert (await r.raw(get("/x"))).endswith(b"echo:")
            assert r.router.counters["blue"].requests == 1 and r.router.counters["blue"].errors == 0
            assert r.router.counters["green"].errors == 1, "the live color's failure still counts against it"

    run(scenario())


async def ready_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


def test_the_router_fails_over_to_a_ready_standby_and_records_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        standby = await asyncio.start_server(ready_backend, "127.0.0.1", 0)
        port = standby.sockets[0].getsockname()[1]
        router = Router(tmp_path / "route.json")
        router.set_route(
            Route(
                backends={"green": "127.0.0.1:1", "blue": f"127.0.0.1:{port}"}, weights={"green": 100}, standby="blue"
            )
        )
        watcher = asyncio.get_running_loop().create_task(router.watch(interval_s=0.02))
        for _ in range(200):
            if router.route.weights == {"blue": 100}:
                break
            await asyncio.sleep(0.02)
        watcher.cancel()
        standby.close()
        assert router.route.weights == {"blue": 100} and router.route.standby is None
        assert router.failover is not None and router.failover["reason"] == "green is unreachable"
        persisted = json.loads((tmp_path / "route.json").read_text())
        assert persisted["failover"]["to"] == "blue", "a restarted router remembers the failover"
        assert Router(tmp_path / "route.json").failover == persisted["failover"]

    run(scenario())


def test_no_failover_without_a_ready_standby(tmp_path: Path) -> None:
    from mlship.deploy.router import FAILOVER_AFTER

    async def scenario() -> None:
        router = Router(None)
        router.set_route(
            Route(backends={"green": "127.0.0.1:1", "blue": "127.0.0.1:2"}, weights={"green": 100}, standby="blue")
        )
        watcher = asyncio.get_running_loop().create_task(router.watch(interval_s=0.02))
        # "Nothing happened" counts only once the watcher has looked: wait for its probes, not for time.
        for _ in range(1500):
            if router.probes >= 4 * FAILOVER_AFTER:
                break
            await asyncio.sleep(0.02)
        watcher.cancel()
        assert router.probes >= 4 * FAILOVER_AFTER, f"the watcher probed only {router.probes} times"
        assert router.route.weights == {"green": 100} and router.failover is None

    run(scenario())


async def unready_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


def test_a_live_color_that_says_not_ready_is_given_more_patience_before_failover(tmp_path: Path) -> None:
    from mlship.deploy.router import FAILOVER_AFTER_SLOW

    async def scenario() -> None:
        live = await asyncio.start_server(unready_backend, "127.0.0.1", 0)
        standby = await asyncio.start_server(ready_backend, "127.0.0.1", 0)
        ports = [s.sockets[0].getsockname()[1] for s in (live, standby)]
        router = Router(None)
        backends = {"green": f"127.0.0.1:{ports[0]}", "blue": f"127.0.0.1:{ports[1]}"}
        router.set_route(Route(backends=backends, weights={"green": 100}, standby="blue"))
        watcher = asyncio.get_running_loop().create_task(router.watch(interval_s=0.02))
        for _ in range(1500):  # a few probes, counted (the watcher may be slow on a loaded machine)
            if router.probes >= FAILOVER_AFTER_SLOW - 3:
                break
            await asyncio.sleep(0.01)
        assert router.probes >= FAILOVER_AFTER_SLOW - 3, f"the watcher probed only {router.probes} times"
        assert router.route.weights == {"green": 100}, "not after a few probes"
        for _ in range(200):
            if router.failover is not None:
                break
            await asyncio.sleep(0.02)
        watcher.cancel()
        live.close()
        standby.close()
        assert router.route.weights == {"blue": 100}
        assert router.failover is not None and router.failover["reason"] == "green answers /ready with 503"

    run(scenario())


def post(fields: str, body: bytes = b"") -> bytes:
    return f"POST /x HTTP/1.1\r\nhost: x\r\n{fields}\r\n".encode() + body


# (case, request, expected status, what the answer says) — each one was accepted (or dropped
# with a traceback) by the old hand parser; RFC 9112 section in the case name
MALFORMED = [
    ("6.3-differing-content-lengths", post("content-length: 1\r\ncontent-length: 2\r\n", b"ab"), 400, b"valid HTTP"),
    ("6.3-content-length-list", post("content-length: 2, 2\r\n", b"ab"), 400, b"valid HTTP"),
    ("8.6-content-length-underscore", post("content-length: 1_0\r\n", b"a" * 10), 400, b"valid HTTP"),
    ("8.6-content-length-plus", post("content-length: +2\r\n", b"ab"), 400, b"valid HTTP"),
    (
        "8.6-content-length-arabic-digit",
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: \xd9\xa2\r\n\r\n",
        400,
        b"HTTP",
    ),
    ("6.3-xchunked", post("transfer-encoding: xchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400, b"HTTP"),
    ("6.3-chunked-not-last", post("transfer-encoding: chunked, gzip\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400, b"HTTP"),
    ("6.1-unknown-coding", post("transfer-encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 501, b"chunked"),
    ("6.1-identity", post("transfer-encoding: identity\r\n", b"abc"), 400, b"HTTP"),
    (
        "6.3-te-and-cl",
        post("transfer-encoding: chunked\r\ncontent-length: 3\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        400,
        b"content-length",
    ),
    ("5.1-space-before-colon", post("transfer-encoding : chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400, b"HTTP"),
    ("5.1-space-before-colon-cl", post("content-length : 3\r\n", b"abc"), 400, b"HTTP"),
    ("5.2-obs-fold", post("content-length: 3\r\nx-a: b\r\n c\r\n", b"abc"), 400, b"HTTP"),
    ("3.2-two-hosts", post("host: y\r\ncontent-length: 0\r\n"), 400, b"host"),
    ("3.2-no-host", b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n", 400, b"host"),
    ("6.1-http10-chunked", b"POST /x HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, b"1.0"),
    ("2.3-http2-line", b"GET /x HTTP/2.0\r\nhost: x\r\n\r\n", 505, b"HTTP/1.1"),
    ("7.1-chunk-size-over-64k", post("transfer-encoding: chunked\r\n", b"1" + b";a" * 40000 + b"\r\n"), 400, b"chunk"),
    ("7.1-chunk-size-over-4k", post("transfer-encoding: chunked\r\n", b"1;x=" + b"a" * 5000 + b"\r\n"), 400, b"chunk"),
    ("7.1-chunk-size-not-hex", post("transfer-encoding: chunked\r\n", b"0x3\r\nabc\r\n0\r\n\r\n"), 400, b"chunk"),
    ("7.1-chunk-size-underscore", post("transfer-encoding: chunked\r\n", b"1_0\r\n" + b"a" * 16), 400, b"chunk"),
    ("7.1-chunk-size-space", post("transfer-encoding: chunked\r\n", b" 3\r\nabc\r\n0\r\n\r\n"), 400, b"chunk"),
    ("7.1-chunk-longer-than-size", post("transfer-encoding: chunked\r\n", b"2\r\nabc\r\n0\r\n\r\n"), 400, b"chunk"),
    (
        "7.1.2-trailer-space-before-colon",
        post("transfer-encoding: chunked\r\n", b"1\r\na\r\n0\r\nx : y\r\n\r\n"),
        400,
        b"trailer",
    ),
    ("9.6-connect", b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", 501, b"tunnel"),
]


@pytest.mark.parametrize(("request_bytes", "status", "says"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_the_router_refuses_what_rfc_9112_says_to_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request_bytes: bytes, status: int, says: bytes
) -> None:
    """Answered with the status and closed, nothing reaches the color, no traceback in the log."""

    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            answer = await r.raw(request_bytes)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
            assert b"connection: close" in answer.split(b"\r\n\r\n", 1)[0]
            assert says.lower() in answer.split(b"\r\n\r\n", 1)[1].lower()
            assert "blue" not in r.router.counters, "a refused request never reaches the color"

    run(scenario())
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_what_rfc_9112_allows_still_passes(tmp_path: Path) -> None:
    """Chunk extensions, trailers, identical duplicate lengths are refused only where the RFC says so."""

    async def scenario() -> None:
        async with make_rig(tmp_path) as r:
            extensions = post(
                "transfer-encoding: chunked\r\nconnection: close\r\n",
                b'3;name="va\\"lue" ; flag\r\nabc\r\n0\r\ntrailer-a: 1\r\n\r\n',
            )
            assert (await r.raw(extensions)).endswith(b"echo:abc")
            upper = post("Transfer-Encoding: Chunked\r\nconnection: close\r\n", b"A\r\n0123456789\r\n0\r\n\r\n")
            assert (await r.raw(upper)).endswith(b"echo:0123456789")
            ten = b"GET /x HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n"
            assert (await r.raw(ten)).count(b"echo:") == 2
            assert r.router.counters["blue"].requests == 4

    run(scenario())


def test_the_idle_timeout_tightens_with_the_load() -> None:
    limits = Limits(idle_timeout_s=60.0, max_connections=100)
    assert limits.idle_timeout(0) == limits.idle_timeout(50) == 60.0
    assert limits.idle_timeout(75) == pytest.approx(30.0)
    assert limits.idle_timeout(90) == pytest.approx(12.0)
    assert limits.idle_timeout(100) == limits.idle_timeout(500) == 1.0


async def wait_for(check: Any, what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def flood(port: int, source: str, count: int, *, one_request: bool) -> list[asyncio.StreamWriter]:
    """`count` connections from `source` that go idle: silent from the start, or after one request."""
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        if one_request:
            writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            with contextlib.suppress(ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.wait_for(reader.readuntil(b"echo:"), 5)
        held.append(writer)
    return held


async def served(r: Rig, n: int) -> list[bytes]:
    """`n` requests from 127.0.0.1 (a new connection each): the answers' status lines."""
    out = []
    for i in range(n):
        answer = await r.raw(get(f"/ok{i}"))
        out.append(answer.split(b"\r\n", 1)[0])
    return out


def test_one_address_flooding_idle_connections_cannot_starve_another(tmp_path: Path) -> None:
    """Per-address share: 300 idle sockets from 127.0.0.2 hold at most 16; 127.0.0.1 keeps 0 failures."""

    async def scenario() -> None:
        async with make_rig(tmp_path, Limits(max_connections=64, max_per_address=16)) as r:
            held = await flood(r.port, "127.0.0.2", 150, one_request=False)
            held += await flood(r.port, "127.0.0.2", 150, one_request=True)
            await wait_for(lambda: r.router.per_address.get("127.0.0.2", 0) <= 16, "the flood holds its share")
            statuses = await served(r, 50)
            assert statuses == [b"HTTP/1.1 200 OK"] * 50, statuses
            state = r.router.state()
            assert state["refused_address"] + state["evicted_idle"] >= 300 - 16
            assert state["refused_connections"] == 0 and state["saturated_at"] is None
            for w in held:
                w.close()

    run(scenario())


def test_idle_connections_filling_the_router_make_room_for_a_new_client(tmp_path: Path) -> None:
    """Eight addresses fill all 64 connections with idle keep-alive sockets: a newcomer still gets in."""

    async def scenario() -> None:
        async with make_rig(tmp_path, Limits(max_connections=64, max_per_address=16)) as r:
            held = []
            for n in range(2, 10):
                held += await flood(r.port, f"127.0.0.{n}", 16, one_request=n % 2 == 0)
            await wait_for(lambda: r.router.connections == 64 and len(r.router.idle) == 64, "the router is full")
            assert r.router.state()["idle_timeout_s"] == 1.0, "at the cap the idle timeout is the shortest"
            statuses = await served(r, 30)
            assert statuses == [b"HTTP/1.1 200 OK"] * 30, statuses
            state = r.router.state()
            assert state["evicted_idle"] >= 30 and state["refused_connections"] == 0
            assert r.router.connections <= 64
            for w in held:
                w.close()

    run(scenario())
