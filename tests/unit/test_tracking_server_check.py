"""The fast reachability probe of a remote tracking server sends what MLflow's client sends.

Found by the release replay (ci/tests/test_replay_release.py): behind a proxy that wants
`Authorization: Bearer <token>`, every `mlship` process's first request, GET /health, came
without it: 19 anonymous requests in one release, each a 401 in the server's log.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import InfraError
from mlship.registry.connection import check_server


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str | None]]]:
    """A server on 127.0.0.1 that answers 401 to everything and records each request's Authorization."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.mlflow/credentials
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_the_probe_carries_the_tracking_token(
    server: tuple[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, seen = server
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
    check_server(uri)  # a 401 is an answer: the server is up
    assert seen == ["Bearer tok-123"]


def test_the_probe_carries_basic_credentials(
    server: tuple[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, seen = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    check_server(uri + "/")
    assert seen == ["Basic " + base64.b64encode(b"alice:s3cret").decode()]


def test_without_credentials_the_probe_is_anonymous_and_one_request(server: tuple[str, list[str | None]]) -> None:
    uri, seen = server
    check_server(uri)
    assert seen == [None], "one try, no retries on a 401"


def test_a_server_that_does_not_answer_is_exit_3_at_once() -> None:
    with pytest.raises(InfraError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable: .*refused"):
        check_server("http://127.0.0.1:9")
