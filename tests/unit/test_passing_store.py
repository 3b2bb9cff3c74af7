"""PassingStore: every release that goes live in an environment is recorded on its model version."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.deploy.factory import PassingStore
from mlship.deploy.release import DeployState, Release
from mlship.errors import InfraError
from mlship.registry import PassedRecord, Registry
from mlship.settings import settings_from_mapping


class Inner:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.recorded: list[Release] = []

    def load(self) -> DeployState:
        return DeployState(env="staging")

    def save(self, state: DeployState) -> None:
        return None

    def record(self, release: Release) -> None:
        self.recorded.append(release)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield


def release(outcome: str, image: str | None = "r/m@sha256:" + "a" * 64) -> Release:
    return Release(ref="models:/m/3", uri="models:/m/3", name="m", version="3", image=image, outcome=outcome)


def test_live_releases_are_recorded_and_others_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[PassedRecord] = []

    class Recording:
        def record_passed(self, record: PassedRecord) -> None:
            written.append(record)

    monkeypatch.setattr(Registry, "from_settings", classmethod(lambda cls, s: Recording()))
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.delenv("GITHUB_SERVER_URL", raising=False)
    inner = Inner(tmp_path)
    store = PassingStore(inner, settings_from_mapping({}, root=tmp_path), "staging", "mlship-staging")
    for r in (release("rejected"), release("rolled back"), release("live", image=None), release("live")):
        store.record(r)
    assert len(inner.recorded) == 4, "the history gets every release"
    (record,) = written
    assert (record.name, record.version, record.environment, record.namespace) == (
        "m",
        "3",
        "staging",
        "mlship-staging",
    )
    assert record.image == "r/m@sha256:" + "a" * 64 and record.ci_job == "github run 42" and record.at.endswith("Z")


def test_an_unwritable_registry_says_the_release_is_live_but_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def record_passed(self, record: Any) -> None:
            raise InfraError("could not tag the version: connection refused", hint="check MLFLOW_TRACKING_URI")

    monkeypatch.setattr(Registry, "from_settings", classmethod(lambda cls, s: Down()))
    store = PassingStore(Inner(tmp_path), settings_from_mapping({}, root=tmp_path), "staging", "ns")
    with pytest.raises(InfraError) as failed:
        store.record(release("live"))
    assert str(failed.value.message).startswith("m v3 is live and verified in staging, but the registry did not")
    assert "rerun the same deploy" in str(failed.value.hint) and "MLFLOW_TRACKING_URI" in str(failed.value.hint)
