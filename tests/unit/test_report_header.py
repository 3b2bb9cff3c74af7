"""gate.md's header names the candidate once, with its provenance, and never a credential."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mlship.model.gates.report import _model_line, _provenance_lines


@pytest.mark.parametrize(
    ("label", "uri", "ref", "line"),
    [
        ("runs:/abc/model", "runs:/abc/model", "runs:/abc/model", "`runs:/abc/model`"),
        (
            "card-fraud v3",
            "models:/card-fraud/3",
            "models:/card-fraud@challenger",
            "card-fraud v3: `models:/card-fraud/3` (from `models:/card-fraud@challenger`)",
        ),
        ("card-fraud v3", "models:/card-fraud/3", "models:/card-fraud/3", "card-fraud v3: `models:/card-fraud/3`"),
        ("http://u:p@h/m", "http://u:p@h/m", "http://u:p@h/m", "`http://***@h/m`"),
    ],
)
def test_the_candidate_is_named_once(label: str, uri: str, ref: str, line: str) -> None:
    assert _model_line(SimpleNamespace(label=label, uri=uri, ref=ref)) == line


def test_provenance_lines_give_the_data_sha256_and_the_git_sha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from mlship import provenance

    monkeypatch.setattr(provenance, "git_sha", lambda root=None: "0123abc")
    data = tmp_path / "d.parquet"
    data.write_bytes(b"rows")
    digest = hashlib.sha256(b"rows").hexdigest()
    split = {"source": f"test split of {data} (test_size 0.2, seed 42)", "rows": 10, "positives": 2}
    assert _provenance_lines(split) == [
        f"- **Data:** {split['source']}: 10 rows, 2 positives; sha256 `{digest}`",
        "- **Code:** git `0123abc`",
    ]
    whole = {"source": f"{data} (whole file)", "rows": 10, "positives": 2}
    assert f"sha256 `{digest}`" in _provenance_lines(whole)[0]
    gone = {"source": "test split of /no/such.parquet (test_size 0.2, seed 42)", "rows": 1, "positives": 0}
    assert "sha256" not in _provenance_lines(gone)[0]
