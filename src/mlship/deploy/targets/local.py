"""The `local` target: colors are server processes on loopback behind the mlship router.

Layout under `.mlship/deploy/<env>/`: `local.json` (router and color handles: pid, port,
process start time), `route.json` (the router's persisted route), `<color>.log` and
`router.log`. Only processes recorded there (pid *and* start time match) are ever stopped.
How a color runs is a small pluggable `ColorRunner` (`targets.runners`): a process or a
container of the release's image, picked per release.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlship.deploy import synthetic
from mlship.deploy.process import Handle, ours, spawn, terminate
from mlship.deploy.release import COLORS, Release
from mlship.deploy.router import MAX_BODY, MAX_CONNECTIONS
from mlship.deploy.targets.base import ColorFailed, Signal, Target
from mlship.deploy.targets.runners import ColorRunner, ProcessRunner, describe
from mlship.errors import InfraError
from mlship.fsutil import write_json
from mlship.notify import WEBHOOK_ENV

SYNTHETIC = synthetic.headers("ready-probe")
"""For requests straight to a color's own port (not the public one): no proof needed."""


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


SATURATED_FOR_S = 60.0
"""A router that refused a client for want of a free connection this recently is saturated."""


def saturation(state: dict[str, Any], url: str, *, refused_now: bool = False) -> str | None:
    """What `status` says about a router whose connections are all taken; None when it is not.

    From the router's own figures: it refused a client for want of a free connection in the
    last minute, or every connection is open. The busiest client address is named: that is
    where to look, not at the release.
    """
    limits = state.get("limits") or {}
    cap, busy = limits.get("max_connections"), state.get("connections")
    at = state.get("saturated_at")
    recent = refused_now or (isinstance(at, (int, float)) and time.time() - at < SATURATED_FOR_S)
    full = isinstance(cap, int) and isinstance(busy, int) and busy >= cap
    if not recent and not full:
        return None
    busiest = state.get("busiest")
    who = f", the most from one address: {busiest[1]} from {busiest[0]}" if busiest else ""
    return (
        f"the router on {url} is saturated, not the release: {busy} of {cap} connections open, "
        f"{state.get('refused_connections', 0)} clients refused{who}"
    )


class LocalTarget(Target):
    """Two colors on loopback, one supervised router owning the live port."""

    name = "local"
    supports_shadow = True
    supports_sticky = True

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 8000,
        runner: ColorRunner | None = None,
        host: str = "127.0.0.1",
        max_body: int = MAX_BODY,
    ) -> None:
        self.dir = state_dir
        self.port = port
        self.host = host
        self.max_body = max_body
        self.max_connections = MAX_CONNECTIONS
        """The router's connection cap (`--max-connections`); tests lower it to saturate a router cheaply."""
        self.runner: ColorRunner = runner or ProcessRunner()
        self._router_epoch: dict[str, float] = {}
        self.dir.mkdir(parents=True, exist_ok=True)

    # Persisted handles ---------------------------------------------------------------------

    @property
    def _file(self) -> Path:
        return self.dir / "local.json"

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {"colors": {}, "parked": {}}
        if not isinstance(raw, dict):
            return {"colors": {}, "parked": {}}
        raw.setdefault("colors", {})
        raw.setdefault("parked", {})
        return dict(raw)

    def _save(self, data: dict[str, Any]) -> None:
        write_json(self._file, data)

    # Router --------------------------------------------------------------------------------

    @property
    def token_file(self) -> Path:
        return self.dir / "router.token"

    def _token(self) -> str:
        """The admin token: created once, readable by the owner only (0600)."""
        path = self.token_file
        with contextlib.suppress(FileNotFoundError):
            token = path.read_text().strip()
            if token and (path.stat().st_mode & 0o077) == 0:
                return token
            path.unlink()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        return token

    def synthetic_headers(self, purpose: str) -> dict[str, str]:
        """The synthetic marker with the router's proof, for mlship's own requests to the live port."""
        try:
            token: str | None = self.token_file.read_text().strip()
        except OSError:
            token = None  # no router token: the router strips the marker, the request counts as real
        return synthetic.headers(purpose, token)

    def _admin_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response | None:
        router = self._load().get("router")
        if not router or not self.token_file.is_file():
            return None
        try:
            return httpx.request(
                method,
                f"http://127.0.0.1:{router['admin_port']}{path}",
                json=body,
                headers={"authorization": f"Bearer {self.token_file.read_text().strip()}"},
                timeout=5.0,
            )
        except (httpx.HTTPError, OSError):
            return None

    def _router_state(self) -> dict[str, Any] | None:
        response = self._admin_call("GET", "/state")
        if response is None or response.status_code != 200:
            return None
        try:
            return dict(response.json())
        except ValueError:
            return None

    def router_pid(self) -> int | None:
        """The pid of the router process serving the live port (the supervisor's child)."""
        state = self._router_state()
        return int(state["pid"]) if state else None

    def supervisor_alive(self) -> bool:
        router = self._load().get("router")
        return router is not None and ours(router)

    def router_info(self) -> dict[str, Any]:
        """For `status`: is the router up and supervised, what it routes, and any failover it made."""
        state = self._router_state()
        router = self._load().get("router") or {}
        return {
            "url": self.live_url(),
            "up": state is not None,
            "pid": state["pid"] if state else None,
            "supervisor_pid": router.get("pid") if self.supervisor_alive() else None,
            "route": state["route"] if state else None,
            "failover": state.get("failover") if state else None,
            "connections": state.get("connections") if state else None,
            "saturated": saturation(state, self.live_url()) if state else None,
        }

    def live_problem(self) -> str | None:
        """None when the live URL answers /ready through the router, else what is down.

        A router that refuses the probe because every connection is busy is named as saturated,
        not as a failing release: a rollback would not help.
        """
        state = self._router_state()
        if state is None:
            return f"the router on {self.live_url()} is down"
        try:
            probe = self.synthetic_headers("ready-probe")
            response = httpx.get(f"{self.live_url()}/ready", headers=probe, timeout=5.0)
        except httpx.HTTPError as exc:
            after = self._router_state()
            crowded = saturation(after, self.live_url()) if after else None
            return crowded or f"{self.live_url()} does not answer ({exc.__class__.__name__})"
        if response.status_code == 200:
            return None
        if response.status_code == 429 or (response.status_code == 503 and "router is saturated" in response.text):
            return saturation(self._router_state() or state, self.live_url(), refused_now=True)
        return f"{self.live_url()}/ready answers HTTP {response.status_code}"

    def preflight(self) -> None:
        """Fail fast (before any model loads): the live port must be ours or free."""
        if self.supervisor_alive() or self._router_state() is not None:
            return
        if not port_free(self.port, self.host):
            raise InfraError(
                f"port {self.port} is busy, so the router cannot own the live port",
                hint="stop whatever listens there or set [tool.mlship.deploy] port",
            )

    def prepare(self) -> None:
        """Start the supervised router if it is not running (a restarted one restores its route)."""
        data = self._load()
        old = data.get("router")
        if old and ours(old):  # the supervisor runs: its router answers, or is being restarted
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if self._router_state() is not None:
                    return
                time.sleep(0.05)
        elif self._router_state() is not None:
            return
        if old:
            terminate(old, grace_s=2.0)
        self.preflight()
        admin_port = free_port()
        argv = [sys.executable, "-m", "mlship.deploy.router", "--supervise", "--host", self.host]
        argv += ["--port", str(self.port), "--admin-port", str(admin_port)]
        argv += ["--route-file", str(self.dir / "route.json"), "--max-body", str(self.max_body)]
        argv += ["--max-connections", str(self.max_connections)]
        self._token()
        argv += ["--token-file", str(self.token_file)]
        try:
            handle = spawn(argv, self.dir / "router.log", secrets=(WEBHOOK_ENV,))  # it tells of failovers
        except ColorFailed as exc:
            raise InfraError(f"cannot start the router: {exc}") from None
        data["router"] = {**handle, "admin_port": admin_port, "port": self.port}
        self._save(data)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._router_state() is not None:
                return
            if not ours(data["router"]):
                break
            time.sleep(0.05)
        raise InfraError("the router did not come up", hint=f"see {self.dir / 'router.log'}")

    def _post_route(self, route: dict[str, Any]) -> None:
        self.prepare()
        response = self._admin_call("POST", "/route", route)
        if response is None:
            raise InfraError("the router's admin endpoint did not answer", hint=f"see {self.dir / 'router.log'}")
        if response.status_code != 200:
            raise InfraError(f"the router refused the route: HTTP {response.status_code} {response.text}")

    # Colors --------------------------------------------------------------------------------

    def start(self, color: str, release: Release) -> None:
        """Start `release` on `color`; a release already running there is parked, not stopped.

        The parked process keeps the previous release warm until the new one is verified
        (`release_parked`) or refused (`stop` brings it back), so a refused deploy costs no
        cold start of the release a rollback goes to.
        """
        data = self._load()
        current = data["colors"].pop(color, None)
        if current is not None and self.runner.alive(current) and color not in data["parked"]:
            data["parked"][color] = current
        elif current is not None:
            self.runner.stop(current)
        self._save(data)
        port = free_port()
        handle = self.runner.start(color, release, port, self.dir / f"{color}.log")
        data["colors"][color] = {**handle, "port": port, "uri": release.uri}
        self._save(data)

    def release_parked(self, color: str) -> None:
        """The release on `color` is verified: stop the older release parked behind it."""
        data = self._load()
        parked = data["parked"].pop(color, None)
        if parked is not None:
            self.runner.stop(parked)
            self._save(data)

    def _handle(self, color: str) -> Handle | None:
        handle = self._load()["colors"].get(color)
        return dict(handle) if handle else None

    def running(self, color: str) -> bool:
        handle = self._handle(color)
        return handle is not None and self.runner.alive(handle)

    def running_uri(self, color: str) -> str | None:
        """The model URI the process on `color` was started with (None: nothing runs there)."""
        handle = self._handle(color)
        return str(handle.get("uri")) if handle is not None and self.runner.alive(handle) else None

    def wait_ready(self, color: str, timeout_s: float) -> None:
        url = self.preview_url(color)
        deadline = time.monotonic() + timeout_s
        log = self.dir / f"{color}.log"
        while True:
            if not self.running(color):
                raise ColorFailed(f"{color} exited before it was ready (see {log})")
            try:
                if httpx.get(f"{url}/ready", timeout=2.0, headers=SYNTHETIC).status_code == 200:
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
        """Route by weight; with one live color the other one, if it runs, is the standby."""
        data = self._load()
        colors = {c: h for c, h in data["colors"].items() if c not in weights or weights[c] > 0}
        backends = {c: f"127.0.0.1:{h['port']}" for c, h in colors.items()}
        missing = [c for c, w in weights.items() if w > 0 and c not in backends]
        if missing:
            raise ColorFailed(f"cannot route to {', '.join(missing)}: not running")
        standby = None
        live = [c for c, w in weights.items() if w >= 100]
        if len(live) == 1:
            for color in COLORS:
                if color == live[0]:
                    continue
                # the previous release parked behind a candidate, else the color itself (never a shadow:
                # a candidate that has not been verified is no failover target)
                shadowing = (data.get("shadow") or {}).get("color") == color
                handle = data["parked"].get(color) or (None if shadowing else data["colors"].get(color))
                if handle is not None and self.runner.alive(handle):
                    backends[color] = f"127.0.0.1:{handle['port']}"
                    standby = color
                else:
                    backends.pop(color, None)
        route: dict[str, Any] = {"backends": backends, "weights": weights, "standby": standby}
        route["sticky"] = data.get("sticky")
        shadow = data.get("shadow") or {}
        handle = data["colors"].get(shadow.get("color")) if shadow else None
        if handle is not None and weights.get(shadow["color"], 0) <= 0 and self.runner.alive(handle):
            # the shadow color's own process: its name may also be the standby's (the release parked behind it)
            route.update(shadow=shadow["color"], shadow_address=f"127.0.0.1:{handle['port']}", sample=shadow["sample"])
        self._post_route(route)

    def set_sticky(self, spec: str | None) -> None:
        """Route the next split by this request key ("header:NAME" / "field:NAME"), or at random (None)."""
        data = self._load()
        data["sticky"] = spec
        self._save(data)

    def set_shadow(self, color: str | None, sample: float = 1.0) -> None:
        """Copy `sample` of live /predict requests to `color` (None: stop copying); the live split stays."""
        data = self._load()
        if color is not None and not self.running(color):
            raise ColorFailed(f"cannot shadow to {color}: not running")
        data["shadow"] = {"color": color, "sample": sample} if color else None
        self._save(data)
        current = self.weights()
        if current is None:
            if color is None:
                return  # no router: nothing copies
            raise ColorFailed("the router does not answer, so nothing can be copied")
        self.set_weights(current)

    def shadowing(self) -> str | None:
        """The color the router copies live requests to now (None: no shadow, or no router)."""
        state = self._router_state()
        if state is None or state.get("shadow") is None:
            return None
        return str(state["route"].get("shadow"))

    def shadow_stats(self) -> dict[str, Any] | None:
        """The router's comparison figures for the running shadow."""
        state = self._router_state()
        return dict(state["shadow"]) if state and state.get("shadow") else None

    def weights(self) -> dict[str, int] | None:
        state = self._router_state()
        if state is None:
            return None
        return {c: int(w) for c, w in state["route"]["weights"].items() if int(w) > 0}

    def signal(self, color: str) -> Signal | None:
        state = self._router_state()
        if state is None:
            return None
        # a router restarted between two readings has new counters: that is a reset, not a delta
        seen, self._router_epoch[color] = self._router_epoch.get(color), state["started"]
        if seen is not None and seen != state["started"]:
            return None
        counters = state["counters"].get(color, {"requests": 0, "errors": 0, "buckets": []})
        bounds = tuple(float(b) for b in state["buckets_ms"])
        buckets = tuple(int(b) for b in counters["buckets"]) or (0,) * (len(bounds) + 1)
        return Signal(int(counters["requests"]), int(counters["errors"]), buckets, bounds)

    def _drain(self, color: str, port: int, timeout_s: float = 5.0) -> None:
        """Before a color stops: take it out of the route, then wait for its requests in flight."""
        state = self._router_state()
        if state is None:
            return
        route = state["route"]
        address = f"127.0.0.1:{port}"
        if route["backends"].get(color) == address:
            if int(route["weights"].get(color, 0)) > 0:
                return  # still live: the caller switches first; never cut live traffic here
            backends = {c: a for c, a in route["backends"].items() if c != color}
            standby = route.get("standby") if route.get("standby") != color else None
            kept = {k: route.get(k) for k in ("sticky", "shadow", "shadow_address", "sample") if k in route}
            if kept.get("shadow") == color:
                kept = {"sticky": kept.get("sticky")}
            with contextlib.suppress(InfraError):
                self._post_route({"backends": backends, "weights": route["weights"], "standby": standby, **kept})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self._router_state()
            if state is None or int(state["counters"].get(color, {}).get("in_flight", 0)) == 0:
                return
            time.sleep(0.02)

    def stop(self, color: str) -> None:
        """Stop what runs on `color` (drained first); a previous release parked behind it comes back."""
        data = self._load()
        if (data.get("shadow") or {}).get("color") == color:
            with contextlib.suppress(ColorFailed, InfraError):
                self.set_shadow(None)  # no copy goes to a stopping color
            data = self._load()
        handle = data["colors"].pop(color, None)
        parked = data["parked"].pop(color, None)
        if handle is not None:
            self._drain(color, int(handle["port"]))
            self.runner.stop(handle)
        if parked is not None and self.runner.alive(parked):
            data["colors"][color] = parked
        if handle is not None or parked is not None:
            self._save(data)

    def down(self) -> list[str]:
        data = self._load()
        stopped: list[str] = []
        for handle in data["parked"].values():
            if self.runner.alive(handle):
                stopped.append(f"parked ({describe(handle)})")
            self.runner.stop(handle)
        data["parked"] = {}
        self._save(data)
        router = data.get("router")
        if router:
            if ours(router):
                stopped.append(f"router (pid {router['pid']})")
            terminate(router, grace_s=5.0)
        for color in list(data["colors"]):
            handle = data["colors"][color]
            if self.runner.alive(handle):
                stopped.append(f"{color} ({describe(handle)})")
            self.runner.stop(handle)
        data = self._load()
        data["colors"] = {}
        data.pop("router", None)
        self._save(data)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "route.json").unlink()
        return stopped

    def close(self) -> None:
        """Nothing to release: the router and colors are meant to outlive the CLI."""
