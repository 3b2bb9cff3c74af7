"""The one model reference: its label rule, and the records built on it keep their shapes."""

from __future__ import annotations

from mlship.deploy.release import Release
from mlship.model_ref import ModelRef, model_label
from mlship.registry import ResolvedModel
from mlship.serving.model import ModelSource


def test_the_label_names_a_registered_version_and_falls_back_to_the_uri() -> None:
    assert model_label("card-fraud", "3", "models:/card-fraud/3") == "card-fraud v3"
    assert model_label(None, "3", "runs:/abc/model") == "runs:/abc/model"
    assert model_label("card-fraud", None, "/tmp/model") == "/tmp/model"
    assert ModelRef(ref="x", uri="runs:/r/model").label == "runs:/r/model"


def test_every_record_of_a_pinned_model_labels_it_the_same_way() -> None:
    resolved = ResolvedModel(
        ref="models:/card-fraud@champion", uri="models:/card-fraud/3", name="card-fraud", version="3"
    )
    release = Release.of(resolved, image="sha256:" + "1" * 64, env="production")
    source = ModelSource(**resolved.identity())
    assert {resolved.label, release.label, source.label} == {"card-fraud v3"}
    assert release.ref == "models:/card-fraud@champion" and release.env == "production"
    assert Release.of(resolved, ref=resolved.uri).ref == "models:/card-fraud/3"


def test_a_release_is_still_written_flat_and_an_old_state_record_still_loads() -> None:
    old = {
        "ref": "models:/m@champion",
        "uri": "models:/m/2",
        "name": "m",
        "version": "2",
        "run_id": "r1",
        "image": "img",
        "git_sha": "abc",
        "color": "blue",
        "env": "staging",
        "target": "local",
        "deployed_at": 1.5,
        "outcome": "live",
        "detail": "",
        "unknown_later_field": 1,
    }
    release = Release.from_dict(old)
    assert release.to_dict() == {k: v for k, v in old.items() if k != "unknown_later_field"}
    assert list(release.to_dict()) == list(old)[:-1]
