"""The model digest is deterministic and path-aware; a mismatch with either record is refused (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlship.integrity import REQUIRE_ENV, SIDECAR, IntegrityError, model_digest, recorded_in, verify, write_sidecar


def model_dir(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "model.pkl").write_bytes(b"\x80\x04pickle")
    (root / "sub" / "requirements.txt").write_text("scikit-learn==1.5\n")
    return root


def test_the_digest_depends_on_content_and_names_only(tmp_path: Path) -> None:
    a = model_dir(tmp_path / "a")
    first = model_digest(a)
    os.utime(a / "model.pkl", (0, 0))
    (a / "MLmodel").chmod(0o600)
    (a / "registered_model_meta").write_text("model_name: x\n")  # what a download of a version adds
    write_sidecar(a)
    assert model_digest(a) == first == model_digest(model_dir(tmp_path / "b"))
    # moving bytes between files changes it, though the concatenation is the same
    (a / "MLmodel").write_text("flavors: {}\n\x80")
    (a / "model.pkl").write_bytes(b"\x04pickle")
    assert model_digest(a) != first


def test_verify_against_the_store_and_the_directory(tmp_path: Path) -> None:
    d = model_dir(tmp_path / "m")
    assert verify(d) is None and recorded_in(d) is None  # nothing recorded: nothing to compare
    digest = write_sidecar(d)
    assert recorded_in(d) == digest and verify(d, digest) == digest
    with pytest.raises(IntegrityError, match=r"tracking store: 000000000000…") as info:
        verify(d, "0" * 64, what="card-fraud v3")
    assert info.value.exit_code == 2 and str(info.value).startswith("model card-fraud v3 does not match the sha256")
    (d / "model.pkl").write_bytes(b"swapped")
    with pytest.raises(IntegrityError, match=SIDECAR):
        verify(d)
    (d / SIDECAR).write_text("\n")
    assert recorded_in(d) is None


def test_a_model_with_no_record_warns_once_and_is_refused_when_integrity_is_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = model_dir(tmp_path / "bare")
    assert verify(d, what="bare") is None and verify(d, what="bare") is None  # loaded, unchecked
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"mlship: warning: model bare has no recorded sha256 (no {SIDECAR}): it is loaded without an integrity "
        "check (pass --require-integrity to refuse such models)"
    ]  # once per model, though a load verifies twice (download, then load)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(IntegrityError, match=r"model bare has no recorded sha256 .*--require-integrity refuses") as e:
        verify(d, what="bare")
    assert e.value.exit_code == 2
    write_sidecar(d)
    assert verify(d) == model_digest(d)  # a recorded model loads as before
