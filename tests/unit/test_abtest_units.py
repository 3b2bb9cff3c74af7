"""`mlship abtest --events --unit-column`: one observation per sticky key, not per request."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.router import Route
from mlship.errors import ConfigError
from mlship.monitoring.abtest_analysis import read_events
from mlship.traffic.sticky import key_bucket, key_hash

register_all(app)
runner = CliRunner()


def sticky_events(users: int, requests_per_user: int) -> pd.DataFrame:
    """Access-log-like events of a sticky 50/50 canary: each user's key_hash, color and 0/1 outcome.

    Users on green convert more often (every 4th user vs every 5th); each user makes several
    requests, all on the color its key's bucket picks, and converts on its last one if at all.
    """
    route = Route(backends={"blue": "a:1", "green": "b:2"}, weights={"blue": 50, "green": 50})
    rows = []
    for u in range(users):
        key = f"user-{u}"
        color = route.pick(key_bucket(key))
        converts = u % (4 if color == "green" else 5) == 0
        for r in range(requests_per_user):
            rows.append(
                {"key_hash": key_hash(key), "color": color, "outcome": int(converts and r == requests_per_user - 1)}
            )
    return pd.DataFrame(rows)


def test_per_key_analysis_counts_each_key_once(tmp_path: Path) -> None:
    frame = sticky_events(users=400, requests_per_user=5)
    path = tmp_path / "events.jsonl"
    frame.to_json(path, orient="records", lines=True)
    per_request = read_events(path, "color", "outcome")
    per_key = read_events(path, "color", "outcome", unit_column="key_hash")
    assert len(per_request) == 2000 and len(per_key) == 400
    by_arm = per_key.groupby("arm")["outcome"].agg(["sum", "count"])
    expected = frame.groupby("key_hash").agg(arm=("color", "first"), outcome=("outcome", "max"))
    assert by_arm["count"].to_dict() == expected["arm"].value_counts().to_dict()
    assert by_arm["sum"].to_dict() == expected.groupby("arm")["outcome"].sum().to_dict()


def test_the_cli_decides_per_key_and_notes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sticky_events(users=400, requests_per_user=3).to_csv("events.csv", index=False)
    args = ["abtest", "--events", "events.csv", "--arm-column", "color", "--control-arm", "blue"]
    result = runner.invoke(app, [*args, "--treatment-arm", "green", "--unit-column", "key_hash", "--mde", "0.2"])
    report = json.loads((tmp_path / ".mlship" / "reports" / "abtest.json").read_text())
    assert report["control"]["n"] + report["treatment"]["n"] == 400, result.output
    assert any("one observation per key" in n for n in report["notes"])
    counts = runner.invoke(app, ["abtest", "--control", "1/10", "--treatment", "2/10", "--unit-column", "key_hash"])
    assert counts.exit_code == 2 and "--unit-column" in counts.output


def test_a_key_seen_in_both_arms_or_without_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pd.DataFrame({"key_hash": ["a", "a", "b"], "arm": ["blue", "green", "blue"], "outcome": [0, 1, 0]}).to_csv(
        path, index=False
    )
    with pytest.raises(ConfigError, match="1 of 2 keys in 'key_hash' were served by both arms"):
        read_events(path, unit_column="key_hash")
    pd.DataFrame({"key_hash": ["a", None], "arm": ["blue", "blue"], "outcome": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="1 rows have no 'key_hash'"):
        read_events(path, unit_column="key_hash")
    with pytest.raises(ConfigError, match="no column 'user'"):
        read_events(path, unit_column="user")
