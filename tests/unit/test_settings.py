from __future__ import annotations

from pathlib import Path

import pytest

from mlship.errors import ConfigError
from mlship.settings import Settings, load_settings, settings_from_mapping


def test_defaults_describe_the_synthetic_dataset(tmp_path: Path) -> None:
    s = load_settings(cwd=tmp_path)
    assert s.target == "is_fraud"
    assert s.sensitive_feature == "customer_segment"
    assert s.sensitive_feature not in s.features
    assert s.features == [
        "merchant_category",
        "country",
        "device_type",
        "amount",
        "hour",
        "account_age_days",
        "num_tx_24h",
    ]
    assert s.data_path == tmp_path.resolve() / "data/transactions.parquet"
    assert s.reports_path == tmp_path.resolve() / ".mlship/reports"


def test_reads_tool_mlship_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mlship]\nmodel_name = "churn"\nseed = 7\n[tool.mlship.gates]\nmax_regression = 0.02\n'
    )
    s = load_settings(cwd=tmp_path)
    assert (s.model_name, s.seed, s.gates.max_regression) == ("churn", 7, 0.02)


def test_config_file_keys_are_top_level_and_paths_relative_to_it(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "conf"
    cfg_dir.mkdir()
    (cfg_dir / "mlship.toml").write_text('model_name = "x"\ndata = "d.csv"\n')
    s = load_settings(Path("conf/mlship.toml"), cwd=tmp_path)
    assert s.model_name == "x"
    assert s.data_path == cfg_dir.resolve() / "d.csv"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modle_name": "x"}, "unknown key 'modle_name'; allowed: model_name"),
        ({"gates": {"max_regresion": 0.1}}, "unknown key 'gates.max_regresion'; allowed: metric_floors"),
        ({"test_size": 1.5}, "invalid value for 'test_size'"),
        ({"estimator": "nocolon"}, "not of the form 'package.module:function'"),
        ({"gates": {"metric_floors": {"auc": 0.5}}}, "unknown metric 'auc'"),
        ({"numeric_features": ["amount", "amount"]}, "features listed twice: amount"),
        ({"numeric_features": ["is_fraud"]}, "also listed as a feature"),
        ({"root": "/"}, "unknown key 'root'"),
    ],
)
def test_bad_settings_name_the_key(raw: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        settings_from_mapping(raw, root=tmp_path, source="pyproject.toml")
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_missing_config_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Path("nope.toml"), cwd=tmp_path)
    (tmp_path / "bad.toml").write_text("model_name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(Path("bad.toml"), cwd=tmp_path)


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from_mapping({}, root=tmp_path)
    assert s.resolved_tracking_uri == f"sqlite:///{tmp_path.resolve()}/.mlship/mlflow.db"
    s2 = settings_from_mapping({"tracking_uri": "http://127.0.0.1:1"}, root=tmp_path)
    assert s2.resolved_tracking_uri == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    assert s2.resolved_tracking_uri == "sqlite:////tmp/other.db"


def test_a_note_says_when_the_builtin_defaults_apply(tmp_path: Path) -> None:
    from mlship.settings import defaults_note

    note = defaults_note(None, cwd=tmp_path)
    assert note is not None and "built-in card-fraud example settings" in note and "'is_fraud'" in note
    assert len(note.splitlines()) == 1
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # a pyproject without [tool.mlship]
    assert defaults_note(None, cwd=tmp_path) is not None
    (tmp_path / "pyproject.toml").write_text("[tool.mlship]\ntarget = 'y'\n")
    assert defaults_note(None, cwd=tmp_path) is None
    assert defaults_note(tmp_path / "any.toml", cwd=tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("[tool.mlship\n")  # broken: load_settings says so, not the note
    assert defaults_note(None, cwd=tmp_path) is None
