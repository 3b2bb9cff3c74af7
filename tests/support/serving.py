"""One small trained, registered and exported model shared by the serving tests.

Logistic regression on 1,500 synthetic rows (seconds to train), registered as
`card-fraud` version 1 with alias `challenger`, and downloaded to a model directory —
the same directory form a container image bakes in. Built once per test process.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_project

MLSHIP = str(Path(sys.executable).with_name("mlship"))


@dataclass(frozen=True)
class ServingModel:
    root: Path
    model_dir: Path
    run_id: str
    version: str
    example: list[dict[str, Any]]


@functools.cache
def serving_model() -> ServingModel:
    from mlship.model.train import train
    from mlship.registry import Registry, model_input_example
    from mlship.settings import load_settings

    base = Path(tempfile.mkdtemp(prefix="mlship-serving-test-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    root = make_project(base / "proj", rows=1500, estimator="mlship.model.estimators:logistic_regression")
    settings = load_settings(cwd=root)
    result = train(settings)
    registry = Registry.from_settings(settings)
    resolved = registry.register(result.run_id, settings.model_name, alias="challenger")
    model_dir = registry.download(resolved, root / "export")
    example = model_input_example(model_dir)
    assert example is not None
    return ServingModel(
        root=root,
        model_dir=Path(model_dir),
        run_id=result.run_id,
        version=str(resolved.version),
        example=example.to_dict(orient="records"),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`mlship serve ARGS --port P` as a process; returns it with its base URL once /ready is 200."""
    port = free_port()
    proc = subprocess.Popen(
        [MLSHIP, "serve", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # an upper bound: a loaded 2-core runner needs >60 s to import mlflow
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server never became ready")
