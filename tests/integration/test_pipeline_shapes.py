"""Every pipeline shape a user may configure is trained, gated, registered, served and answers
exactly as the model itself: the compiled fast path is used where it is verified equal, and
anything else falls back to the plain pipeline, saying why in the server's `ready` line.

Regression: a model with no categorical features used to roll back every deploy with
`cannot load or warm the model: 'OneHotEncoder' object has no attribute 'categories_'`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.support.pipeline_shapes import DERIVED_CATEGORICAL, DIABETES_NUMERIC, diabetes_frame
from tests.support.serving import MLSHIP, free_port

pytestmark = pytest.mark.slow

GB, LR = "mlship.model.estimators:gradient_boosting", "mlship.model.estimators:logistic_regression"


@dataclass(frozen=True)
class Shape:
    categorical: list[str]
    numeric: list[str]
    estimator: str
    compiled: bool
    """Whether the server must take the compiled path (else the plain pipeline, with a reason)."""
    nan_share: float = 0.0


SHAPES = {
    "no-categorical": Shape([], DIABETES_NUMERIC, GB, compiled=True),
    "no-numeric": Shape(DERIVED_CATEGORICAL, [], GB, compiled=True),
    "one-feature": Shape([], ["bmi"], LR, compiled=True),
    "logistic-regression": Shape(DERIVED_CATEGORICAL, DIABETES_NUMERIC, LR, compiled=True),
    "random-forest": Shape(DERIVED_CATEGORICAL, DIABETES_NUMERIC, "tests.support.pipeline_shapes:random_forest", True),
    "hist-gradient-boosting": Shape(DERIVED_CATEGORICAL, DIABETES_NUMERIC, GB, compiled=True),
    "custom-transformer": Shape(
        DERIVED_CATEGORICAL, DIABETES_NUMERIC, "tests.support.pipeline_shapes:custom_transformer", compiled=False
    ),
    "accepts-nan": Shape([], DIABETES_NUMERIC, GB, compiled=True, nan_share=0.1),
}


def _config(root: Path, name: str, shape: Shape) -> Path:
    data = root / "data.parquet"
    diabetes_frame(shape.nan_share).to_parquet(data)
    config = root / "mlship.toml"
    config.write_text(
        f'model_name = "shape-{name}"\n'
        'target = "progressed"\n'
        'id_column = ""\n'
        'sensitive_feature = ""\n'
        f"categorical_features = {json.dumps(shape.categorical)}\n"
        f"numeric_features = {json.dumps(shape.numeric)}\n"
        'data = "data.parquet"\n'
        f'estimator = "{shape.estimator}"\n'
        "[gates]\n"
        "metric_floors = {roc_auc = 0.6}\n"
        "bootstrap_samples = 200\n"
        "latency_rows = 50\n"
    )
    return config


def _held_out_rows(settings: Any) -> list[dict[str, Any]]:
    """The test split's rows a client can send (/predict takes no missing numbers), at most 60."""
    from mlship.data.io import read_table
    from mlship.model.train import split

    _, test = split(settings, read_table(settings.data_path))
    test = test[settings.features].dropna().head(60)
    return [
        {c: (float(v) if c in settings.numeric_features else str(v)) for c, v in row.items()}
        for row in test.to_dict(orient="records")
    ]


def _own_probabilities(model: Any, settings: Any, rows: list[dict[str, Any]]) -> list[float]:
    """What the model itself says for these rows (numbers as float64 columns, as a client's frame)."""
    frame = pd.DataFrame(
        {
            c: np.asarray([r[c] for r in rows], dtype=np.float64 if c in settings.numeric_features else object)
            for c in settings.features
        }
    )
    return [float(p) for p in model.predict_proba(frame)[:, 1]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Any, ...]]]:
    """Train → gate → register @challenger for every shape, then one `mlship serve` per shape at once."""
    from mlship.model.gates.run import register_challenger, run_gate
    from mlship.model.train import train
    from mlship.settings import load_settings

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLSHIP_COLOR")}
    env["PYTHONPATH"] = str(REPO)  # the serve process imports the user's factories, as a team's would
    out: dict[str, tuple[Any, ...]] = {}
    try:
        for name, shape in SHAPES.items():
            root = tmp_path_factory.mktemp(name)
            config = _config(root, name, shape)
            settings = load_settings(config)
            result = train(settings)
            report = run_gate(settings, f"runs:/{result.run_id}/model", no_champion=True, report_dir=root / "gate")
            assert report.passed, f"{name}: {report.summary}"
            registered = register_challenger(settings, report)
            assert registered.endswith("is @challenger")
            port = free_port()
            proc = subprocess.Popen(
                [
                    MLSHIP,
                    "--config",
                    str(config),
                    "serve",
                    "--model",
                    f"models:/shape-{name}@challenger",
                    "--port",
                    str(port),
                ],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            out[name] = (settings, proc, f"http://127.0.0.1:{port}")
        for name, (_, proc, url) in out.items():
            _wait_ready(name, proc, url)
        yield out
    finally:
        for _, proc, _ in out.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _wait_ready(name: str, proc: subprocess.Popen[bytes], url: str) -> None:
    import time

    deadline = time.monotonic() + 240  # eight servers starting at once on a shared 2-core machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name}: server exited {proc.returncode}: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{name}: server never became ready")


@pytest.mark.parametrize("name", list(SHAPES))
def test_served_probabilities_equal_the_models_own(name: str, served: dict[str, tuple[Any, ...]]) -> None:
    from mlship.registry import Registry

    settings, proc, url = served[name]
    rows = _held_out_rows(settings)
    assert len(rows) >= 40
    response = httpx.post(url + "/predict", json={"records": rows}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(f"models:/shape-{name}@challenger")
    model = _load(registry, resolved)
    assert body["probabilities"] == _own_probabilities(model, settings, rows)
    assert body["model"]["version"] == str(resolved.version)

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    ready = [e for e in events if e.get("event") == "ready"]
    assert len(ready) == 1, err.decode()[-2000:]
    note = ready[0]["pipeline"]
    if SHAPES[name].compiled:
        assert note == "compiled: verified equal to the pipeline on probe rows"
    else:
        assert note == "not compiled: transformer 'numeric' is a SignedLog"


def _load(registry: Any, resolved: Any) -> Any:
    import tempfile

    from mlship.registry import load_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        return load_model_dir(registry.download(resolved, Path(tmp)))
