"""Golden predictions of an image release come from the model inside the image (docker double)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlship.deploy.image import golden_from_image
from mlship.deploy.release import Release
from mlship.model.train import TrainResult
from mlship.registry import Registry, load_model_dir, model_input_example
from mlship.settings import load_settings
from tests.support.deploy_doubles.docker import install_docker_double


def test_golden_rows_are_the_image_models_example_and_its_own_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_project: tuple[Path, TrainResult]
) -> None:
    root, result = trained_project
    registry = Registry.from_settings(load_settings(cwd=root))
    model_dir = registry.download(result.model_uri, tmp_path / "baked")
    image = {"id": "sha256:" + "1" * 64, "labels": {}, "model": str(model_dir)}
    install_docker_double(tmp_path, monkeypatch, {"serving:v1": image})
    release = Release(ref="serving:v1", uri="sha256:" + "1" * 64, image="sha256:" + "1" * 64)

    golden = golden_from_image()(release)

    example = model_input_example(model_dir)
    assert example is not None and len(golden.records) == len(example) > 0
    expected = load_model_dir(model_dir).predict_proba(example)[:, 1].tolist()
    assert golden.probabilities == expected
    assert set(golden.records[0]) == set(example.columns)
