"""Run the model server under uvicorn: pin the model, take the port, serve until SIGTERM.

The port is bound here, before uvicorn starts, so "port already in use" is one line and
exit 3 instead of a log message from inside the server; the model reference is resolved
before that, so an unknown model is exit 2 and takes no port at all.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError, InfraError, MlshipError
from mlship.serving.app import create_app
from mlship.serving.model import resolve_source

if TYPE_CHECKING:
    from mlship.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; a busy or unusable address raises InfraError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InfraError(
                f"port {port} on {host} is already in use", hint="stop what listens there or pass another --port"
            ) from None
        raise InfraError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def check_log_path(path: Path) -> None:
    """An explicitly requested prediction log must be writable: refuse at start (exit 2), not later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the prediction log {path}: {exc.strerror}", hint="pass a writable --prediction-log"
        ) from None


def serve(
    settings: Settings,
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    color: str | None = None,
    prediction_log: Path | None = None,
) -> int:
    """Serve `model` on host:port until SIGTERM/SIGINT; in-flight requests are drained first."""
    import uvicorn  # noqa: PLC0415 - uvicorn: heavy, imported where it is used (off `--help` and the light paths)

    source = resolve_source(model, settings)
    if prediction_log is not None:
        check_log_path(prediction_log)
    sock = bind(host, port)
    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(source, settings=settings, color=color, prediction_log=prediction_log, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        backlog=2048,
        timeout_graceful_shutdown=int(settings.serve.graceful_timeout_s),
    )
    server = _server_class()(config)
    bound_host, bound_port = sock.getsockname()[:2]
    state = app.state.mlship
    state.access.write(
        {"event": "listening", "url": f"http://{_url_host(bound_host)}:{bound_port}", "model": source.uri}
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if fatal:
        exc = fatal[0]
        if isinstance(exc, MlshipError):
            raise exc
        raise InfraError(state.failure or f"cannot load the model: {exc}", hint="check the model directory or URI")
    return 0


def _server_class() -> Any:
    """uvicorn's Server, except that a drained shutdown on SIGTERM/SIGINT exits 0.

    uvicorn re-raises the signal after its graceful shutdown, so the process would die by
    it (or print "interrupted"); for mlship a drained stop is a clean stop.
    """
    import uvicorn  # noqa: PLC0415 - uvicorn: heavy, imported where it is used (off `--help` and the light paths)

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return DrainingServer


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
