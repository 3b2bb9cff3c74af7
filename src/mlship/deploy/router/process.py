"""The router's process: its command line, serving until a signal, and the supervisor that restarts it.

Run as `python -m mlship.deploy.router --port 8000 --admin-port 8001 --route-file F --token-file T`;
with `--supervise` the process is a supervisor that runs the router as its child and
restarts it whenever it dies, so the live port heals without waiting for an mlship command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlship.deploy.router.admission import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_PER_ADDRESS,
    Limits,
)
from mlship.deploy.router.proxy import Router

MAX_HEAD = 64 * 1024
DESCRIPTION = "The local router: owns the live port and forwards each HTTP/1.1 request to a color."


async def run(
    port: int,
    admin_port: int,
    route_file: Path | None,
    host: str = "127.0.0.1",
    *,
    token: str | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish (≤ 2 s)."""
    router = Router(route_file, token=token, limits=limits)
    proxy = await asyncio.start_server(router.serve_client, host, port, limit=MAX_HEAD, backlog=1024)
    admin = await asyncio.start_server(router.serve_admin, "127.0.0.1", admin_port, limit=MAX_HEAD)
    watcher = asyncio.get_running_loop().create_task(router.watch())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"router listening on {host}:{port}, admin on 127.0.0.1:{admin_port}", file=sys.stderr, flush=True)
    await stop.wait()
    watcher.cancel()
    proxy.close()
    admin.close()
    await router.close_connections(2.0)


RESTART_DELAY_S = 0.2
MAX_RESTARTS = 20
"""Restarts within RESTART_WINDOW_S after which the supervisor gives up (a router that cannot run)."""
RESTART_WINDOW_S = 60.0


def supervise(argv: list[str]) -> int:
    """Run the router as a child and restart it whenever it dies, until SIGTERM/SIGINT.

    A child that exits 3 (it cannot listen: the port was taken) is not restarted in a loop:
    the supervisor gives up after MAX_RESTARTS restarts in RESTART_WINDOW_S.
    """
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts: list[float] = []
    while not stopping:
        child = subprocess.Popen([sys.executable, "-m", "mlship.deploy.router", *argv])
        code = child.wait()
        if stopping:
            break
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
        print(f"router supervisor: the router exited ({code}); restarting it", file=sys.stderr, flush=True)
        if len(restarts) > MAX_RESTARTS:
            print("router supervisor: the router keeps dying; giving up", file=sys.stderr, flush=True)
            return 3
        time.sleep(RESTART_DELAY_S)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlship.deploy.router", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--route-file", type=Path, default=None)
    parser.add_argument("--token-file", type=Path, default=None, help="0600 file holding the admin token")
    parser.add_argument("--max-body", type=int, default=MAX_BODY)
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S)
    parser.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S)
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--max-per-address", type=int, default=MAX_PER_ADDRESS)
    parser.add_argument("--supervise", action="store_true", help="run the router as a child, restart it if it dies")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if args.supervise:
        return supervise([a for a in raw if a != "--supervise"])
    token = args.token_file.read_text().strip() if args.token_file else None
    limits = Limits(
        args.max_body,
        args.header_timeout,
        args.body_timeout,
        args.idle_timeout,
        args.max_connections,
        args.max_per_address,
    )
    try:
        import uvloop  # noqa: PLC0415 - optional dependency (ships with uvicorn[standard]): the router runs without it

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    try:
        asyncio.run(run(args.port, args.admin_port, args.route_file, args.host, token=token, limits=limits))
    except OSError as exc:
        print(f"router: cannot listen: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
