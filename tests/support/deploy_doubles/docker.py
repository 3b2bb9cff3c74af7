"""A stateful docker CLI test double: enough of `docker` for the image release and DockerRunner.

Installed first on PATH as `docker` (a shell wrapper) by `install_docker_double`. State lives
in the JSON file named by DOCKER_DOUBLE_STATE: {"images": {ref: {"id", "labels", "model"}},
"containers": {id: {...}}, "calls": [argv, ...], "daemon": true}. An image's "model" is a host
directory that `docker cp` copies out (absent: the image has no model). Containers never run
anything: `run` records them as running; tests flip "running" to simulate a crash.

Implements: info, image inspect, create, cp, rm [-f], run -d, container inspect --format,
stop --time, logs --follow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mlship.fsutil import write_text

DAEMON_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def _state_file() -> Path:
    return Path(os.environ["DOCKER_DOUBLE_STATE"])


def load() -> dict[str, Any]:
    path = _state_file()
    state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    state.setdefault("images", {})
    state.setdefault("containers", {})
    state.setdefault("calls", [])
    state.setdefault("daemon", True)
    return state


def save(state: dict[str, Any]) -> None:
    """Write whole or not at all: a concurrent reader (the log follower) never sees a torn file."""
    write_text(_state_file(), json.dumps(state, indent=1))


def _image(state: dict[str, Any], ref: str) -> dict[str, Any] | None:
    for name, image in state["images"].items():
        if ref in (name, image["id"]):
            return dict(image)
    return None


def _container(state: dict[str, Any], key: str) -> tuple[str, dict[str, Any]] | None:
    for cid, c in state["containers"].items():
        if key in (cid, c["name"]):
            return cid, c
    return None


def install_docker_double(tmp: Path, monkeypatch: Any, images: dict[str, Any]) -> Path:
    """Put the docker double first on PATH with these images; returns its state file."""
    bin_dir = tmp / "docker-double-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "docker"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    state = tmp / "docker-state.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(state))
    state.write_text(json.dumps({"images": images}))
    return state


def main(argv: list[str]) -> int:
    """One docker call; calls are serialised on a lock file, as the daemon serialises its state."""
    with open(f"{_state_file()}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _call(argv)


def _call(argv: list[str]) -> int:
    state = load()
    state["calls"].append(argv)
    save(state)
    if not state["daemon"] and argv[:1] != ["logs"]:
        print(DAEMON_DOWN, file=sys.stderr)
        return 1
    verb, args = argv[0], argv[1:]
    if verb == "info":
        print("20.10.24")
        return 0
    if verb == "image" and args[0] == "inspect":
        image = _image(state, args[1])
        if image is None:
            print(f"Error: No such image: {args[1]}", file=sys.stderr)
            return 1
        if image.get("garbled"):
            print("not json")
            return 0
        print(json.dumps([{"Id": image["id"], "Config": {"Labels": image.get("labels")}}]))
        return 0
    if verb in ("create", "run"):
        ref = args[-1]
        image = _image(state, ref)
        if image is None:
            print(f"Unable to find image '{ref}' locally", file=sys.stderr)
            return 125
        name = args[args.index("--name") + 1] if "--name" in args else f"c{len(state['containers'])}"
        if _container(state, name) is not None:
            print(f'Conflict. The container name "/{name}" is already in use', file=sys.stderr)
            return 125
        if image.get("fail_run") and verb == "run":
            print("Error response from daemon: driver failed programming external connectivity", file=sys.stderr)
            return 125
        cid = hashlib.sha256(f"{name}{time.time_ns()}".encode()).hexdigest()
        state["containers"][cid] = {"name": name, "image": image["id"], "running": verb == "run", "args": args}
        save(state)
        print(cid)
        return 0
    if verb == "cp":
        source, dest = args
        cid, path = source.split(":", 1)
        found = _container(state, cid)
        image = _image(state, found[1]["image"]) if found else None
        model = image.get("model") if image else None
        if not model or path != "/opt/model":
            print(f"Error: Could not find the file {path} in container {cid}", file=sys.stderr)
            return 1
        shutil.copytree(model, dest)
        return 0
    if verb == "rm":
        found = _container(state, args[-1])
        if found is None:
            print(f"Error: No such container: {args[-1]}", file=sys.stderr)
            return 1
        del state["containers"][found[0]]
        save(state)
        print(args[-1])
        return 0
    if verb == "container" and args[0] == "inspect":
        found = _container(state, args[-1])
        if found is None:
            print(f"Error: No such container: {args[-1]}", file=sys.stderr)
            return 1
        print("true" if found[1]["running"] else "false")
        return 0
    if verb == "stop":
        found = _container(state, args[-1])
        if found is None:
            print(f"Error: No such container: {args[-1]}", file=sys.stderr)
            return 1
        state["containers"][found[0]]["running"] = False
        save(state)
        print(args[-1])
        return 0
    if verb == "logs":
        print(f"logs of {args[-1]}")
        return 0
    print(f"docker double: unsupported {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
