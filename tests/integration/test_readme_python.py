"""The README's "From Python" block runs as shown, in a fresh project directory."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "data" / "expectations" / "transactions.json"


def readme_example() -> str:
    """The python block between the README's python-example markers (exactly one)."""
    text = (REPO / "README.md").read_text()
    found = re.findall(r"<!-- python-example[^>]*-->\n```python\n(.*?)```\n<!-- /python-example -->", text, re.S)
    assert len(found) == 1, "README.md must hold exactly one marked python example"
    return str(found[0])


@pytest.mark.slow  # trains, gates and scores: ~50 s on the shared 2-core machine
def test_the_readme_python_example_ships_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "expectations").mkdir(parents=True)
    (tmp_path / "data" / "expectations" / "transactions.json").write_text(SUITE.read_text())
    (tmp_path / "pyproject.toml").write_text('[tool.mlship]\nmodel_name = "card-fraud"\n')
    monkeypatch.chdir(tmp_path)

    namespace: dict[str, object] = {}
    exec(compile(readme_example(), "README.md:python-example", "exec"), namespace)

    import mlship

    assert isinstance(namespace["checked"], mlship.ValidationReport)
    gate = namespace["gate"]
    assert isinstance(gate, mlship.GateReport)
    assert gate.passed, gate.summary
    assert (tmp_path / ".mlship" / "reports" / "gate" / "gate.md").is_file()
    assert capsys.readouterr().out.strip() == "card-fraud v1 is @challenger"
    versions = mlship.Registry.from_settings(mlship.load_settings()).versions("card-fraud")
    assert [(v.version, v.aliases) for v in versions] == [("1", ("challenger",))]
    assert versions[0].gate.startswith("pass")  # "pass ⚠" when 3,000 rows are too few to show fairness
    scored = namespace["scored"]
    assert isinstance(scored, mlship.BatchResult)
    assert scored.rows == 3_000
    assert len(pd.read_parquet(tmp_path / "scored.parquet")) == 3_000
