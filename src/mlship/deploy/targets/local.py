"""The `local` target: colors are server processes on loopback behind the mlship router.

Layout under `.mlship/deploy/<env>/`: `local.json` (router and color handles: pid, port,
process start time), `route.json` (the router's persisted route), `<color>.log` and
`router.log`. Only processes recorded there (pid *and* start time match) are ever stopped.
How a color runs is a small pluggable `ColorRunner`: a process (`ProcessRunner`) or a
container of the release's image (`targets.container.DockerRunner`); `ReleaseRunner` picks
one per release, so a history mixing both still rolls back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from mlship.deploy.lock import pid_alive
from mlship.deploy.release import Release
from mlship.deploy.targets.base import ColorFailed, Signal
from mlship.errors import InfraError
from mlship.fsutil import write_json

Handle = dict[str, Any]


class ColorRunner(Protocol):
    """Starts and stops one color's server; the handle it returns must be JSON-serialisable."""

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle: ...

    def alive(self, handle: Handle) -> bool: ...

    def stop(self, handle: Handle) -> None: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def _ours(handle: Handle) -> bool:
    """The recorded process still runs and is the one we started (pid reuse guard)."""
    pid = int(handle.get("pid", 0))
    return pid_alive(pid) and _start_time(pid) == handle.get("started")


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Handle:
    """Start a detached process (own session, so it outlives the CLI) logging to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ColorFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    return {"pid": proc.pid, "started": _start_time(proc.pid), "argv": argv}


def terminate(handle: Handle, grace_s: float = 10.0) -> None:
    """SIGTERM (the server drains), then SIGKILL after `grace_s`; only if the process is ours."""
    if not _ours(handle):
        return
    pid = int(handle["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def default_serve_command() -> list[str]:
    """`mlship serve` from the same installation as the running mlship."""
    script = Path(sys.executable).parent / "mlship"
    if script.is_file():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from mlship.cli import main; main()", "serve"]


class ProcessRunner:
    """A color is `<serve_command> --model URI --host 127.0.0.1 --port P --color C` as a process."""

    def __init__(
        self, serve_command: list[str] | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.serve_command = serve_command or default_serve_command()
        self.env = env or {}
        self.cwd = cwd

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle:
        argv = [*self.serve_command, "--model", release.uri, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--color", color]
        env = {**self.env, "MLSHIP_COLOR": color, "MLSHIP_GIT_SHA": release.git_sha}
        return {"kind": "process", **spawn(argv, log, env=env, cwd=self.cwd)}

    def alive(self, handle: Handle) -> bool:
        return _ours(handle)

    def stop(self, handle: Handle) -> None:
        terminate(handle)


class ReleaseRunner:
    """A release with an image runs as a container, any other as a process; handles say which."""

    def __init__(self, process: ColorRunner, container: ColorRunner | None = None) -> None:
        self.process = process
        self.container = container

    def _for(self, handle: Handle) -> ColorRunner | None:
        return self.container if handle.get("kind") == "container" else self.process

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle:
        if not release.image:
            return self.process.start(color, release, port, log)
        if self.container is None:
            raise ColorFailed(f"{release.label} is an image, and this target has no container runner")
        return self.container.start(color, release, port, log)

    def alive(self, handle: Handle) -> bool:
        runner = self._for(handle)
        return runner is not None and runner.alive(handle)

    def stop(self, handle: Handle) -> None:
        runner = self._for(handle)
        if runner is not None:
            runner.stop(handle)


def describe(handle: Handle) -> str:
    """How `mlship down` names what it stopped: a pid or a container."""
    if handle.get("kind") == "container":
        return f"container {handle.get('name') or str(handle.get('id', ''))[:12]}"
    return f"pid {handle.get('pid')}"


class LocalTarget:
    """Two colors on loopback, one router owning the live port."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 8000,
        runner: ColorRunner | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.dir = state_dir
        self.port = port
        self.host = host
        self.runner: ColorRunner = runner or ProcessRunner()
        self.dir.mkdir(parents=True, exist_ok=True)

    # Persisted handles ---------------------------------------------------------------------

    @property
    def _file(self) -> Path:
        return self.dir / "local.json"

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {"colors": {}}
        raw.setdefault("colors", {})
        return dict(raw)

    def _save(self, data: dict[str, Any]) -> None:
        write_json(self._file, data)

    # Router --------------------------------------------------------------------------------

    def _admin(self) -> str | None:
        router = self._load().get("router")
        if not router or not _ours(router):
            return None
        return f"http://127.0.0.1:{router['admin_port']}"

    def _router_state(self) -> dict[str, Any] | None:
        admin = self._admin()
        if admin is None:
            return None
        try:
            response = httpx.get(f"{admin}/state", timeout=2.0)
            return dict(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def router_pid(self) -> int | None:
        router = self._load().get("router")
        return int(router["pid"]) if router and _ours(router) else None

    def prepare(self) -> None:
        """Start the router if it is not running (also after it crashed: it restores its route)."""
        if self._router_state() is not None:
            return
        data = self._load()
        old = data.get("router")
        if old:
            terminate(old, grace_s=2.0)
        if not port_free(self.port, self.host):
            raise InfraError(
                f"port {self.port} is busy, so the router cannot own the live port",
                hint="stop whatever listens there or set [tool.mlship.deploy] port",
            )
        admin_port = free_port()
        argv = [sys.executable, "-m", "mlship.deploy.router", "--host", self.host, "--port", str(self.port)]
        argv += ["--admin-port", str(admin_port), "--route-file", str(self.dir / "route.json")]
        try:
            handle = spawn(argv, self.dir / "router.log")
        except ColorFailed as exc:
            raise InfraError(f"cannot start the router: {exc}") from None
        data["router"] = {**handle, "admin_port": admin_port, "port": self.port}
        self._save(data)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._router_state() is not None:
                return
            if not _ours(data["router"]):
                break
            time.sleep(0.05)
        raise InfraError("the router did not come up", hint=f"see {self.dir / 'router.log'}")

    def _post_route(self, route: dict[str, Any]) -> None:
        self.prepare()
        admin = self._admin()
        try:
            response = httpx.post(f"{admin}/route", json=route, timeout=5.0)
        except httpx.HTTPError as exc:
            raise InfraError(f"the router's admin endpoint failed: {exc}") from None
        if response.status_code != 200:
            raise InfraError(f"the router refused the route: HTTP {response.status_code} {response.text}")

    # Colors --------------------------------------------------------------------------------

    def start(self, color: str, release: Release) -> None:
        self.stop(color)
        data = self._load()
        port = free_port()
        handle = self.runner.start(color, release, port, self.dir / f"{color}.log")
        data["colors"][color] = {**handle, "port": port, "uri": release.uri}
        self._save(data)

    def _handle(self, color: str) -> Handle | None:
        handle = self._load()["colors"].get(color)
        return dict(handle) if handle else None

    def running(self, color: str) -> bool:
        handle = self._handle(color)
        return handle is not None and self.runner.alive(handle)

    def wait_ready(self, color: str, timeout_s: float) -> None:
        url = self.preview_url(color)
        deadline = time.monotonic() + timeout_s
        log = self.dir / f"{color}.log"
        while True:
            if not self.running(color):
                raise ColorFailed(f"{color} exited before it was ready (see {log})")
            try:
                if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise ColorFailed(f"{color} was not ready within {timeout_s:g} s (see {log})")
            time.sleep(0.1)

    def preview_url(self, color: str) -> str:
        handle = self._handle(color)
        if handle is None:
            raise ColorFailed(f"{color} is not running")
        return f"http://127.0.0.1:{handle['port']}"

    def live_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def traffic_url(self, color: str) -> str:
        """Through the router, exactly like user traffic (a canary color gets its share)."""
        return self.live_url()

    def set_weights(self, weights: dict[str, int]) -> None:
        colors = self._load()["colors"]
        backends = {c: f"127.0.0.1:{h['port']}" for c, h in colors.items()}
        missing = [c for c, w in weights.items() if w > 0 and c not in backends]
        if missing:
            raise ColorFailed(f"cannot route to {', '.join(missing)}: not running")
        self._post_route({"backends": backends, "weights": weights})

    def weights(self) -> dict[str, int] | None:
        state = self._router_state()
        if state is None:
            return None
        return {c: int(w) for c, w in state["route"]["weights"].items() if int(w) > 0}

    def signal(self, color: str) -> Signal | None:
        state = self._router_state()
        if state is None:
            return None
        counters = state["counters"].get(color, {"requests": 0, "errors": 0, "buckets": []})
        bounds = tuple(float(b) for b in state["buckets_ms"])
        buckets = tuple(int(b) for b in counters["buckets"]) or (0,) * (len(bounds) + 1)
        return Signal(int(counters["requests"]), int(counters["errors"]), buckets, bounds)

    def stop(self, color: str) -> None:
        data = self._load()
        handle = data["colors"].pop(color, None)
        if handle is not None:
            self.runner.stop(handle)
            self._save(data)

    def down(self) -> list[str]:
        data = self._load()
        stopped: list[str] = []
        for color in list(data["colors"]):
            if self.running(color):
                stopped.append(f"{color} ({describe(data['colors'][color])})")
            self.stop(color)
        router = data.get("router")
        if router:
            if _ours(router):
                stopped.append(f"router (pid {router['pid']})")
            terminate(router, grace_s=3.0)
        data = self._load()
        data.pop("router", None)
        self._save(data)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "route.json").unlink()
        return stopped

    def close(self) -> None:
        """Nothing to release: the router and colors are meant to outlive the CLI."""
