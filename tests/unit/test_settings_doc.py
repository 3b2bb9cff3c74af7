"""docs/configuration.md is generated from the settings models: it must match them, and say every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlship.settings import GateSettings
from mlship.settings_doc import COMMAND, main, render, section_table, sections, toml_value

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"


def test_the_committed_reference_matches_the_settings_models() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), f"docs/configuration.md is out of date: run `{COMMAND}`"


def test_every_setting_has_a_row_with_its_default() -> None:
    page = render()
    for table, model in sections():
        assert f"## `[{table}]`" in page
        for name, info in model.model_fields.items():
            if not info.exclude:
                assert f"| `{name}` |" in page, f"{table}.{name} is not documented"
    assert "| `root` |" not in page  # where the file was read from, not a setting
    assert '| `fairness_inconclusive` | `"warn" \\| "fail"` | `"warn"` |' in page
    assert "| `test_size` | `float`, > 0, < 1 | `0.2` |" in page
    assert "| `tracking_uri` | `str \\| None` | unset |" in page
    assert "| `metric_floors` | `dict[str, float]` | `{roc_auc = 0.8, pr_auc = 0.4}` |" in page
    assert "| `gates` | table, see [`[tool.mlship.gates]`](#toolmlshipgates) | — |" in page


def test_a_setting_without_a_description_cannot_be_generated() -> None:
    class Undocumented(GateSettings):
        """`[tool.mlship.gates]` with one more key."""

        silent_key: int = 3

    with pytest.raises(ValueError, match=r"tool\.mlship\.gates\.silent_key has no description"):
        section_table("tool.mlship.gates", Undocumented)


def test_a_field_description_wins_over_the_docstring() -> None:
    from pydantic import Field

    class Described(GateSettings):
        """A section whose key is described by Field(description=...)."""

        described_key: int = Field(default=3, ge=1, description="from Field")
        """from the docstring"""

    table = section_table("x", Described)
    assert "| `described_key` | `int`, ≥ 1 | `3` | from Field |" in table


def test_defaults_are_written_as_toml() -> None:
    assert toml_value(Path("data/x.parquet")) == '"data/x.parquet"'
    assert toml_value(True) == "true"
    assert toml_value(20_000) == "20_000"
    assert toml_value({"staging": "s"}) == '{staging = "s"}'
    assert toml_value(["a", "b"]) == '["a", "b"]'


def test_check_fails_on_a_stale_page_and_passes_once_regenerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "docs" / "configuration.md"
    assert main(["--check", str(page)]) == 1
    assert capsys.readouterr().err.strip() == (f"mlship: error: {page} is missing (run `{COMMAND}` and commit it)")
    assert main([str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render()
    assert main(["--check", str(page)]) == 0
    page.write_text(render().replace("`0.2`", "`0.3`"), encoding="utf-8")
    assert main(["--check", str(page)]) == 1
    assert "is out of date" in capsys.readouterr().err
